"""Who may reach which route: the route table's declared roles, enforced by one middleware, plus CSRF."""
from __future__ import annotations

import hmac
import json
import logging
import secrets
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from typing import Any, Final
from urllib.parse import quote

from aiohttp import web
from aiohttp.web_urldispatcher import AbstractRoute
from aiohttp_session import get_session

from identity import Account, AccountStore, Role

from .sessions import SESSION_CSRF, SESSION_STAMP, SESSION_USER

log = logging.getLogger(__name__)

Handler = Callable[[web.Request], Awaitable[web.StreamResponse]]


class _Public:
    """Marker for routes anyone may reach (healthz, login, static)."""

    def __repr__(self) -> str:
        return "PUBLIC"


PUBLIC: Final = _Public()
ALL_ROLES: Final = frozenset(Role)
CONSOLE_ROLES: Final = frozenset({Role.AGENT, Role.SUPERVISOR, Role.ADMIN})
SUPERVISOR_ROLES: Final = frozenset({Role.SUPERVISOR, Role.ADMIN})
ADMIN_ROLES: Final = frozenset({Role.ADMIN})
CASE_READER_ROLES: Final = ALL_ROLES

Policy = frozenset[Role] | _Public

SAFE_METHODS: Final = frozenset({"GET", "HEAD", "OPTIONS"})
CSRF_HEADER: Final = "X-CSRF-Token"
CSRF_FIELD: Final = "csrf_token"

POLICIES: Final = web.AppKey("console_route_policies", dict)
ACCOUNTS: Final = web.AppKey("console_accounts", AccountStore)
BAD_INPUT_ERRORS: Final = web.AppKey("console_bad_input_errors", tuple)
# The logged-in Account of this request (None on public routes).
ACCOUNT_KEY: Final[web.RequestKey[Account | None]] = web.RequestKey("console_account")


@dataclass(frozen=True, slots=True)
class Route:
    """One row of the route table: method, path, handler and the roles allowed (or PUBLIC)."""

    method: str
    path: str
    handler: Handler
    allow: Policy


def add_routes(app: web.Application, table: tuple[Route, ...]) -> None:
    """Register every route with its policy; a route missing from the table is refused by the middleware."""
    policies: dict[AbstractRoute, Policy] = app[POLICIES]
    for spec in table:
        if not isinstance(spec.allow, _Public) and not spec.allow:
            raise ValueError(f"route {spec.method} {spec.path}: empty role set")
        route = app.router.add_route(spec.method, spec.path, spec.handler)
        policies[route] = spec.allow


def add_public_static(app: web.Application, prefix: str, path: Any) -> None:
    """Serve a static folder to everyone (the login page needs the CSS)."""
    resource = app.router.add_static(prefix, path, name="static", append_version=True)
    for route in resource:
        app[POLICIES][route] = PUBLIC


def route_policy(app: web.Application, route: AbstractRoute) -> Policy | None:
    """The declared roles of a registered route (PUBLIC for anonymous ones), None if undeclared."""
    return app[POLICIES].get(route)


def current_account(request: web.Request) -> Account:
    """The logged-in account of a non-public route."""
    account = request.get(ACCOUNT_KEY)
    if account is None:
        raise web.HTTPUnauthorized(reason="login required")
    return account


def new_csrf_token() -> str:
    """A fresh unguessable per-session token."""
    return secrets.token_urlsafe(32)


async def csrf_token(request: web.Request) -> str:
    """This session's CSRF token, made on first use."""
    session = await get_session(request)
    token = session.get(SESSION_CSRF)
    if not isinstance(token, str) or not token:
        token = new_csrf_token()
        session[SESSION_CSRF] = token
    return token


def wants_json(request: web.Request) -> bool:
    """API paths, JSON bodies and JSON-accepting clients get JSON errors instead of pages/redirects."""
    if request.path.startswith("/api/"):
        return True
    if request.content_type == "application/json":
        return True
    accept = request.headers.get("Accept", "")
    return "application/json" in accept and "text/html" not in accept


MAX_ERROR_LENGTH: Final = 300  # characters: a sentence naming the problem, never the caller's input in full


def one_line(message: str, limit: int = MAX_ERROR_LENGTH) -> str:
    """The first line of message, control characters (and lone surrogates) escaped, cut to limit characters."""
    first = (message.splitlines() or [""])[0].strip() or "error"
    flat = "".join(ch if ch.isprintable() else repr(ch)[1:-1] for ch in first)
    return flat if len(flat) <= limit else flat[:limit - 1] + "…"


def json_error(status: int, message: str) -> web.Response:
    """The one error shape of the API: {"error": "one line"} (however long or odd the input it quotes)."""
    return web.json_response({"error": one_line(message)}, status=status)


class BadRequestBody(ValueError):
    """The request body cannot be read as what the route takes; the message is one line."""


def _check_text(value: Any) -> None:
    """Refuse strings that cannot be stored or sent back as UTF-8 (lone surrogates from "\\udXXX" escapes)."""
    stack = [value]
    while stack:
        item = stack.pop()
        if isinstance(item, str):
            try:
                item.encode("utf-8")
            except UnicodeEncodeError:
                raise BadRequestBody("text must be valid Unicode (no lone surrogate escapes)") from None
        elif isinstance(item, dict):
            stack.extend(item.keys())
            stack.extend(item.values())
        elif isinstance(item, list):
            stack.extend(item)


async def read_json(request: web.Request) -> Any:
    """The request's JSON value; BadRequestBody for anything else: not JSON, an unknown charset, nesting too deep
    for the parser, an integer beyond Python's digit limit, lone surrogates. (NaN and 1e999 parse: the route's
    own checks refuse them where a number is expected.)"""
    try:
        data = await request.json(loads=json.loads)
    except RecursionError:
        raise BadRequestBody("nested too deeply") from None
    except LookupError:
        raise BadRequestBody(f"unknown charset {one_line(repr(request.charset), 40)}") from None
    except UnicodeDecodeError:
        raise BadRequestBody(f"not valid {request.charset or 'utf-8'} text") from None
    except json.JSONDecodeError:
        raise BadRequestBody("not valid JSON") from None
    except ValueError:  # the only other one json.loads raises: an integer beyond the interpreter's digit limit
        raise BadRequestBody("a number has too many digits") from None
    _check_text(data)
    return data


async def read_form(request: web.Request) -> dict[str, str]:
    """The text fields of a form post; BadRequestBody when the form cannot be decoded."""
    try:
        form = await request.post()
    except LookupError:
        raise BadRequestBody(f"unknown charset {one_line(repr(request.charset), 40)}") from None
    except ValueError:  # malformed multipart, undecodable text
        raise BadRequestBody("not a readable form") from None
    return {k: v for k, v in form.items() if isinstance(v, str)}


def _deny(request: web.Request, status: int, message: str) -> web.StreamResponse:
    if wants_json(request):
        return json_error(status, message)
    if status == 401 and request.method in SAFE_METHODS:
        target = request.path_qs
        location = f"/login?next={quote(target, safe='')}" if target != "/" else "/login"
        return web.Response(status=302, headers={"Location": location})
    return web.Response(status=status, text=f"{status}: {message}\n", content_type="text/plain")


async def _submitted_csrf(request: web.Request) -> str | None:
    token = request.headers.get(CSRF_HEADER)
    if token:
        return token
    if request.content_type in ("application/x-www-form-urlencoded", "multipart/form-data"):
        try:
            form = await read_form(request)  # cached by aiohttp, so the handler can read it again
        except BadRequestBody:
            return None  # refused as a missing token; the handler is never reached
        return form.get(CSRF_FIELD)
    return None


@web.middleware
async def access_middleware(request: web.Request, handler: Handler) -> web.StreamResponse:
    """Deny by default: look up the matched route's declared roles, check login, role and CSRF."""
    match_info = request.match_info
    if match_info.http_exception is not None:
        # No route matched (404/405): nothing to protect, let aiohttp answer.
        return await handler(request)
    policy = request.app[POLICIES].get(match_info.route)
    if policy is None:
        log.error("route %s %s has no declared roles; refusing", request.method, match_info.route.resource)
        return _deny(request, 403, "route has no declared roles")

    if isinstance(policy, _Public) and request.method in SAFE_METHODS:
        # /healthz, /metrics, the login form's GET and static files need no session: do not touch the store.
        request[ACCOUNT_KEY] = None
        return await handler(request)

    session = await get_session(request)
    account: Account | None = None
    if not isinstance(policy, _Public):
        username = session.get(SESSION_USER)
        if isinstance(username, str):
            account = await request.app[ACCOUNTS].get(username)
        if account is None or not account.active or session.get(SESSION_STAMP) != account.credential_stamp:
            if username is not None:
                # Account gone or disabled, or its password changed since this login: the session is void.
                session.invalidate()
            return _deny(request, 401, "login required")
        if account.role not in policy:
            return _deny(request, 403, f"role {account.role} may not use this")
    request[ACCOUNT_KEY] = account

    if request.method not in SAFE_METHODS:
        expected = session.get(SESSION_CSRF)
        submitted = await _submitted_csrf(request)
        if not (
            isinstance(expected, str)
            and expected
            and submitted
            and submitted.isascii()  # tokens are ASCII; a header of undecodable bytes is simply wrong
            and hmac.compare_digest(expected.encode(), submitted.encode())
        ):
            return _deny(request, 403, "missing or wrong CSRF token")
    return await handler(request)


@web.middleware
async def api_error_middleware(request: web.Request, handler: Handler) -> web.StreamResponse:
    """Keep API errors in the {"error": ...} shape, including aiohttp's own 404/405/413."""
    if not wants_json(request):
        return await handler(request)
    try:
        return await handler(request)
    except web.HTTPException as exc:
        if exc.status < 400:
            raise
        return json_error(exc.status, exc.reason or "error")
    except request.app[BAD_INPUT_ERRORS] as exc:
        # A domain service refused the input (e.g. cases.CaseStoreError): the caller's fault, say why.
        return json_error(400, (str(exc).splitlines() or ["bad input"])[0])
    except Exception:
        log.exception("console API %s %s failed", request.method, request.path)
        return json_error(500, "internal error")


@web.middleware
async def security_headers_middleware(request: web.Request, handler: Handler) -> web.StreamResponse:
    """Strict browser policy: own scripts/styles only, no framing, no caching of private pages."""
    try:
        response = await handler(request)
    except web.HTTPException as exc:
        response = exc
    headers = response.headers
    headers.setdefault(
        "Content-Security-Policy",
        "default-src 'self'; script-src 'self'; style-src 'self'; img-src 'self' data:; "
        "connect-src 'self'; form-action 'self'; frame-ancestors 'none'; base-uri 'none'",
    )
    headers.setdefault("X-Content-Type-Options", "nosniff")
    headers.setdefault("X-Frame-Options", "DENY")
    headers.setdefault("Referrer-Policy", "same-origin")
    if not request.path.startswith("/static/"):
        headers.setdefault("Cache-Control", "no-store")
    if isinstance(response, web.HTTPException):
        raise response
    return response
