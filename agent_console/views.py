"""Route handlers of the console: pages, JSON API and /healthz. Roles are declared in app.ROUTES."""
from __future__ import annotations

import asyncio
import inspect
import json
import logging
import re
from collections.abc import Awaitable
from datetime import UTC, date, datetime
from enum import Enum
from pathlib import PurePath
from typing import Any, Final, TypeVar
from urllib.parse import urlsplit, urlunsplit

from aiohttp import web
from aiohttp_session import get_session

from identity import Account, AccountExists, AccountNotFound, AccountStore, Role, check_password_policy

from . import pages
from .ports import CallRecordsService, CasesService, HealthCheck, LiveCallsService
from .security import (
    ACCOUNTS,
    BadRequestBody,
    csrf_token,
    current_account,
    json_error,
    new_csrf_token,
    read_form,
    read_json,
)
from .sessions import (
    SESSION_CSRF,
    SESSION_STAMP,
    SESSION_USER,
    ConsoleStoreUnavailable,
    revoke_account_sessions,
    start_fresh_session,
)
from .throttle import LoginThrottle

log = logging.getLogger(__name__)
T = TypeVar("T")

CASES: Final[web.AppKey[CasesService]] = web.AppKey("console_cases")
LIVE_CALLS: Final[web.AppKey[LiveCallsService]] = web.AppKey("console_live_calls")
CALL_RECORDS: Final[web.AppKey[CallRecordsService]] = web.AppKey("console_call_records")
HEALTH: Final[web.AppKey[HealthCheck]] = web.AppKey("console_health")
HEALTH_TIMEOUT: Final = web.AppKey("console_health_timeout", float)
LOGIN_THROTTLE: Final = web.AppKey("console_login_throttle", LoginThrottle)

MAX_LIMIT = 500
_CASE_NUMBER_RE = re.compile(r"^[A-Za-z0-9][A-Za-z0-9_.-]{0,63}$")
_FORM_TYPES = ("application/x-www-form-urlencoded", "multipart/form-data")


def _json_default(value: Any) -> Any:
    if isinstance(value, (datetime, date)):
        return value.isoformat()
    if isinstance(value, Enum):
        return value.value
    if isinstance(value, PurePath):
        return str(value)
    if isinstance(value, (set, frozenset, tuple)):
        return list(value)
    if hasattr(value, "to_dict"):
        return value.to_dict()
    raise TypeError(f"{type(value).__name__} is not JSON serializable")


def dumps(value: Any) -> str:
    """JSON text of API payloads (datetimes as ISO strings)."""
    return json.dumps(value, default=_json_default, ensure_ascii=False)


def ok(payload: Any, status: int = 200) -> web.Response:
    """A JSON response."""
    return web.json_response(payload, status=status, dumps=dumps)


def _plain(value: Any) -> Any:
    """Round-trip through JSON so pages render the same values the API returns."""
    return json.loads(dumps(value))


def _cases(request: web.Request) -> CasesService:
    return request.app[CASES]


def _live(request: web.Request) -> LiveCallsService:
    return request.app[LIVE_CALLS]


def _records(request: web.Request) -> CallRecordsService:
    return request.app[CALL_RECORDS]


def _accounts(request: web.Request) -> AccountStore:
    return request.app[ACCOUNTS]


def _is_browser_form(request: web.Request) -> bool:
    return request.content_type in _FORM_TYPES and "text/html" in request.headers.get("Accept", "")


def _limit(request: web.Request, default: int = 50) -> int:
    raw = request.query.get("limit")
    if raw is None or raw == "":
        return default
    try:
        value = int(raw)
    except ValueError:
        value = 0
    if not 1 <= value <= MAX_LIMIT:
        raise web.HTTPBadRequest(reason=f"limit: must be an integer from 1 to {MAX_LIMIT}")
    return value


def _case_number(request: web.Request) -> str:
    number = request.match_info["case_number"]
    if not _CASE_NUMBER_RE.match(number):
        raise web.HTTPBadRequest(reason="case_number: not a valid case number")
    return number


async def _body(request: web.Request) -> dict[str, Any]:
    """The request's fields from a JSON object or a form."""
    try:
        if request.content_type in _FORM_TYPES:
            return await read_form(request)
        data = await read_json(request)
    except BadRequestBody as exc:
        raise web.HTTPBadRequest(reason=f"body: {exc}") from None
    if not isinstance(data, dict):
        raise web.HTTPBadRequest(reason="body: expected a JSON object")
    return data


async def _quietly(what: str, awaitable: Awaitable[T]) -> T | None:
    """A page section's data, or None (the section says "not available") if that service fails."""
    try:
        return await awaitable
    except Exception:
        log.exception("console page: could not load %s", what)
        return None


def _endpoint_name(agent: Any) -> str | None:
    """'PJSIP/agent1-0000002a' or 'PJSIP/agent1' or 'agent1' -> 'agent1'."""
    if not isinstance(agent, str) or not agent:
        return None
    name = agent.split("/", 1)[1] if "/" in agent else agent
    return re.sub(r"-[0-9a-fA-F]{6,}$", "", name)


def pick_screen_pop(calls: list[dict[str, Any]], sip_endpoint: str | None) -> dict[str, Any] | None:
    """The most recent call connected to this endpoint, or None."""
    if not sip_endpoint:
        return None
    mine = [
        c for c in calls
        if c.get("state") == "connected" and _endpoint_name(c.get("agent")) == sip_endpoint
    ]
    return max(mine, key=lambda c: str(c.get("started_at") or ""), default=None)


async def _screen_pop(request: web.Request, calls: list[dict[str, Any]], account: Account) -> dict[str, Any] | None:
    if account.role == Role.DEPARTMENT:
        return None
    call = pick_screen_pop(calls, account.sip_endpoint)
    if call is None:
        return None
    case: dict[str, Any] | None = None
    if call.get("case_number"):
        try:
            case = (await _cases(request).get(str(call["case_number"]))).to_dict()
        except LookupError:
            case = None  # the case is written a moment after the call is queued
    return _plain({"call": call, "case": case})


# --- health -----------------------------------------------------------------------------------


async def _health_report(request: web.Request) -> dict[str, Any]:
    """The full health report ({"ok": bool, "components": {...}}), never raising."""
    check = request.app[HEALTH]
    try:
        async with asyncio.timeout(request.app[HEALTH_TIMEOUT]):
            report = check()
            if inspect.isawaitable(report):
                report = await report
    except TimeoutError:
        return {"ok": False, "error": "health check timed out", "components": {}}
    except Exception as exc:
        log.exception("health check failed")
        return {"ok": False, "error": f"health check failed: {type(exc).__name__}", "components": {}}
    if not isinstance(report, dict):
        return {"ok": False, "error": "health check returned no report", "components": {}}
    return report


async def healthz(request: web.Request) -> web.Response:
    """Public: 200 {"status": "ok"} or 503 {"status": "unavailable"}, nothing more (details: /admin/health)."""
    healthy = (await _health_report(request)).get("ok") is True
    return ok({"status": "ok" if healthy else "unavailable"}, status=200 if healthy else 503)


async def health_detail(request: web.Request) -> web.Response:
    """Staff only: every component's report (addresses, PIDs, errors); 200 when all are ok, else 503."""
    report = await _health_report(request)
    return ok(report, status=200 if report.get("ok") is True else 503)


# --- login / logout ---------------------------------------------------------------------------


def _safe_next(value: Any) -> str:
    """Where to go after login: a same-site path (and query/fragment) of what was asked, else "/".

    Browsers drop tabs and newlines and read a backslash as a slash, so "/<TAB>/evil" or "/<BACKSLASH>evil" become
    "//evil", another site: anything with whitespace, control characters or backslashes is refused outright."""
    if not isinstance(value, str) or not value.startswith("/") or value.startswith("//") or len(value) > 2048:
        return "/"
    if "\\" in value or any(ch.isspace() or ord(ch) < 0x20 or ord(ch) == 0x7F for ch in value):
        return "/"
    try:
        parts = urlsplit(value)
    except ValueError:
        return "/"
    if parts.scheme or parts.netloc or not parts.path.startswith("/") or parts.path.startswith("//"):
        return "/"
    return urlunsplit(("", "", parts.path, parts.query, parts.fragment))


def _throttle(request: web.Request) -> LoginThrottle:
    return request.app[LOGIN_THROTTLE]


def _client_address(request: web.Request) -> str:
    return request.remote or "unknown"


async def _store_call(awaitable: Awaitable[T]) -> T:
    try:
        return await awaitable
    except ConsoleStoreUnavailable as exc:
        raise web.HTTPServiceUnavailable(reason=str(exc)) from None


async def _checked_password(request: web.Request, username: str, password: str) -> tuple[Account | None, int]:
    """(account, 0) for the right password; (None, 0) for a wrong one (counted); (None, seconds) while locked."""
    throttle = _throttle(request)
    address = _client_address(request)
    wait = await _store_call(throttle.retry_after(username, address))
    if wait:
        return None, wait
    account = await _accounts(request).verify(username, password)
    if account is None:
        await _store_call(throttle.failed(username, address))
    else:
        await _store_call(throttle.succeeded(account.username))
    return account, 0


async def _describe_login_name(request: web.Request, username: object) -> str:
    # Only an existing account's name goes to the log: a password typed into the username field must not.
    if isinstance(username, str) and username and await _accounts(request).get(username) is not None:
        return repr(username.strip().lower())
    return "an unknown account"


async def login_page(request: web.Request) -> web.StreamResponse:
    """The sign-in form (already signed in: straight to the console)."""
    session = await get_session(request)
    if isinstance(session.get(SESSION_USER), str):
        account = await _accounts(request).get(session[SESSION_USER])
        if account is not None and account.active and session.get(SESSION_STAMP) == account.credential_stamp:
            raise web.HTTPFound(_safe_next(request.query.get("next")))
    return await pages.render_page(request, "login.html", {
        "error": "", "username": "", "next_url": _safe_next(request.query.get("next")),
    })


async def login(request: web.Request) -> web.StreamResponse:
    """Check username/password; on success start a fresh session (new CSRF token) and go to the console.

    Too many failures for the account or from the address: 429 with Retry-After, the password not even checked."""
    json_client = request.content_type == "application/json"
    body = await _body(request)
    username = body.get("username")
    password = body.get("password")
    next_url = _safe_next(body.get("next"))
    account = None
    wait = 0
    if isinstance(username, str) and isinstance(password, str) and username and password:
        account, wait = await _checked_password(request, username, password)
    shown_name = username if isinstance(username, str) else ""
    if wait:
        log.warning("console login for %s from %s refused: too many failed attempts (retry in %d s)",
                    await _describe_login_name(request, username), _client_address(request), wait)
        message = f"too many failed logins; try again in {wait} s"
        headers = {"Retry-After": str(wait)}
        if json_client:
            response = json_error(429, message)
            response.headers.update(headers)
            return response
        page = await pages.render_page(request, "login.html", {
            "error": f"Too many failed logins. Try again in {wait} seconds.", "username": shown_name,
            "next_url": next_url,
        }, status=429)
        page.headers.update(headers)
        return page
    if account is None:
        log.info("console login failed for %s from %s", await _describe_login_name(request, username),
                 _client_address(request))
        if json_client:
            return json_error(401, "wrong username or password")
        return await pages.render_page(request, "login.html", {
            "error": "Wrong username or password.",
            "username": shown_name,
            "next_url": next_url,
        }, status=401)
    session = await _sign_in(request, account)
    log.info("console login: %s (%s) from %s", account.username, account.role, _client_address(request))
    if json_client:
        return ok({"account": account.to_dict(), "csrf_token": session[SESSION_CSRF]})
    raise web.HTTPSeeOther(next_url)


async def _sign_in(request: web.Request, account: Account) -> Any:
    # A new session on login: nothing set before authentication (fixation) survives, the old one is deleted.
    session = await start_fresh_session(request)
    session[SESSION_USER] = account.username
    session[SESSION_STAMP] = account.credential_stamp
    session[SESSION_CSRF] = new_csrf_token()
    return session


async def logout(request: web.Request) -> web.StreamResponse:
    """End the session: it is deleted from the store, so a copy of the cookie is worthless too."""
    session = await get_session(request)
    session.invalidate()
    log.info("console logout: %s", current_account(request).username)
    if request.content_type == "application/json":
        return ok({"ok": True})
    raise web.HTTPSeeOther("/login")


async def api_change_password(request: web.Request) -> web.Response:
    """Change one's own password: {"current_password", "new_password"}; every session of the account ends, this
    client gets a fresh one (new CSRF token in the answer)."""
    account = current_account(request)
    body = await _body(request)
    current, new = body.get("current_password"), body.get("new_password")
    if not isinstance(current, str) or not current:
        raise web.HTTPBadRequest(reason="current_password: required")
    try:
        check_password_policy(new)
    except ValueError as exc:
        raise web.HTTPBadRequest(reason=f"new_{exc}") from None
    checked, wait = await _checked_password(request, account.username, current)
    if wait:
        response = json_error(429, f"too many failed attempts; try again in {wait} s")
        response.headers["Retry-After"] = str(wait)
        return response
    if checked is None:
        return json_error(403, "current_password: wrong password")
    await _accounts(request).set_password(account.username, str(new))
    ended = await _store_call(revoke_account_sessions(request.app, account.username))
    refreshed = await _accounts(request).get(account.username)
    assert refreshed is not None
    session = await _sign_in(request, refreshed)
    log.info("console password changed by %s; %d session(s) ended", account.username, ended)
    return ok({"account": refreshed.to_dict(), "csrf_token": session[SESSION_CSRF]})


async def api_reset_password(request: web.Request) -> web.Response:
    """Admin: set another account's password, {"password"}; every session of that account ends."""
    name = request.match_info["name"]
    body = await _body(request)
    try:
        await _accounts(request).set_password(name, body.get("password"))  # type: ignore[arg-type]
    except AccountNotFound as exc:
        return json_error(404, str(exc))
    except ValueError as exc:
        return json_error(400, str(exc))
    target = await _accounts(request).get(name)
    assert target is not None
    ended = await _store_call(revoke_account_sessions(request.app, target.username))
    log.info("console password of %s reset by %s; %d session(s) ended", target.username,
             current_account(request).username, ended)
    return ok({"account": target.to_dict(), "sessions_ended": ended})


# --- pages ------------------------------------------------------------------------------------


async def console_page(request: web.Request) -> web.Response:
    """The console: screen pop, live calls, recent cases (+notes), recent calls, accounts (admin)."""
    account = current_account(request)
    console_role = account.role != Role.DEPARTMENT
    live: list[dict[str, Any]] | None = None
    pop = None
    records = None
    accounts = None
    if console_role:
        found_live = await _quietly("live calls", _live(request).list_calls())
        if found_live is not None:
            live = _plain(found_live)
            pop = await _quietly("screen pop", _screen_pop(request, live, account))
        found = await _quietly("call records", _records(request).list_recent(limit=20))
        records = _plain(found) if found is not None else None
    found_cases = await _quietly("cases", _cases(request).list_recent(limit=50))
    cases = _plain(found_cases) if found_cases is not None else None
    if account.role == Role.ADMIN:
        accounts = [a.to_dict() for a in await _accounts(request).list()]
    return await pages.render_page(request, "console.html", {
        "console_role": console_role,
        "live_calls": live,
        "pop": pop,
        "cases": cases,
        "records": records,
        "accounts": accounts,
    })


# --- JSON API ---------------------------------------------------------------------------------


async def api_me(request: web.Request) -> web.Response:
    """Who is logged in, and the CSRF token to send as X-CSRF-Token."""
    account = current_account(request)
    return ok({"account": account.to_dict(), "csrf_token": await csrf_token(request)})


async def api_live_calls(request: web.Request) -> web.Response:
    """Calls in progress plus this agent's screen pop ({"call", "case"} or null)."""
    account = current_account(request)
    calls = _plain(await _live(request).list_calls())
    calls.sort(key=lambda c: str(c.get("started_at") or ""), reverse=True)
    pop = await _screen_pop(request, calls, account)
    return ok({"calls": calls, "screen_pop": pop, "server_time": datetime.now(UTC)})


async def api_cases(request: web.Request) -> web.Response:
    """Recent cases, newest first (?limit=1..500, ?status=)."""
    limit = _limit(request)
    status = request.query.get("status") or None
    if status is not None and (len(status) > 32 or not status.replace("_", "").isalnum()):
        raise web.HTTPBadRequest(reason="status: not a valid status")
    cases = await _cases(request).list_recent(limit=limit, status=status)
    return ok({"cases": [c.to_dict() for c in cases]})


async def api_case(request: web.Request) -> web.Response:
    """One case by number, with its history of events (oldest first)."""
    number = _case_number(request)
    cases = _cases(request)
    try:
        case = await cases.get(number)
        events = await cases.events(number)
    except LookupError:
        return json_error(404, f"case {number} not found")
    return ok({"case": case.to_dict(), "events": [e.to_dict() for e in events]})


async def api_add_note(request: web.Request) -> web.StreamResponse:
    """Add a note ('[time user] text') to a case; body {"note": "..."} (JSON or form)."""
    account = current_account(request)
    number = _case_number(request)
    body = await _body(request)
    note = body.get("note", body.get("notes"))
    if not isinstance(note, str) or not note.strip():
        raise web.HTTPBadRequest(reason="note: required, a non-empty string")
    note = " ".join(note.split())  # one line per note keeps the notes log readable
    if len(note) > pages.NOTE_MAX_LENGTH:
        raise web.HTTPBadRequest(reason=f"note: at most {pages.NOTE_MAX_LENGTH} characters")
    stamp = datetime.now(UTC).astimezone().strftime("%Y-%m-%d %H:%M")
    try:
        updated = await _cases(request).add_note(number, f"[{stamp} {account.username}] {note}",
                                                 actor=account.username)
    except LookupError:
        return json_error(404, f"case {number} not found")
    log.info("note added to case %s by %s", number, account.username)
    if _is_browser_form(request):
        raise web.HTTPSeeOther(f"/#case-{number}")
    return ok({"case": updated.to_dict()})


async def api_call_records(request: web.Request) -> web.Response:
    """Finished calls, newest first (?limit=1..500)."""
    limit = _limit(request)
    records = await _records(request).list_recent(limit=limit)
    return ok({"call_records": [r.to_dict() for r in records]})


async def api_accounts(request: web.Request) -> web.Response:
    """All console accounts (never with password hashes)."""
    return ok({"accounts": [a.to_dict() for a in await _accounts(request).list()]})


async def api_create_account(request: web.Request) -> web.StreamResponse:
    """Create an account: {"username", "password", "role", "display_name"?, "sip_endpoint"?}."""
    body = await _body(request)
    for name in ("username", "password", "role"):
        if not isinstance(body.get(name), str) or not body[name]:
            raise web.HTTPBadRequest(reason=f"{name}: required")
    try:
        account = await _accounts(request).create(
            body["username"],
            body["password"],
            body["role"],
            display_name=body.get("display_name") or None,
            sip_endpoint=body.get("sip_endpoint") or None,
        )
    except AccountExists as exc:
        return json_error(409, str(exc))
    except ValueError as exc:
        return json_error(400, str(exc))
    log.info("account %s (%s) created by %s", account.username, account.role, current_account(request).username)
    if _is_browser_form(request):
        raise web.HTTPSeeOther("/#accounts")
    return ok({"account": account.to_dict()}, status=201)
