"""Console/API routes of queueing: agents and their states, queues, metrics, and Prometheus' /metrics.

/metrics is a public route (Prometheus cannot log in to the console) guarded here instead: with a
configured bearer token it must be presented; without one only loopback clients are answered, so a
default install never shows queue figures to the network.
"""
from __future__ import annotations

import hmac
import ipaddress
import json
import logging
from datetime import UTC, datetime
from typing import Any, Final, cast

from aiohttp import web

from identity import Account, Role
from queueing import PAUSE_REASONS, AgentError, AgentNotApplied, AgentNotFound, QueueConsole

from .pages import render_page
from .security import BadRequestBody, current_account, json_error, read_form, read_json
from .views import dumps, ok

log = logging.getLogger(__name__)

QUEUE_CONSOLE: Final = web.AppKey("queue_console", QueueConsole)
METRICS_TOKEN: Final[web.AppKey[str | None]] = web.AppKey("metrics_token")

_ACTIONS = ("login", "pause", "resume", "logout")


def _console(request: web.Request) -> QueueConsole:
    return request.app[QUEUE_CONSOLE]


async def api_agents(request: web.Request) -> web.Response:
    """Every agent with its record and live state."""
    return ok({"agents": await _console(request).list_agents()})


async def api_agent_action(request: web.Request) -> web.Response:
    """POST /api/agents/{name}/{action}: login, pause ({"reason"}), resume, logout. Agents act on themselves only."""
    name = request.match_info["name"]
    action = request.match_info["action"]
    if action not in _ACTIONS:
        return json_error(404, f"unknown agent action {action!r}; use one of {', '.join(_ACTIONS)}")
    account = current_account(request)
    if account.role == Role.AGENT and name not in (account.username, account.sip_endpoint):
        return json_error(403, "agents may change only their own state")
    reason = None
    if action == "pause":
        body: Any = {}
        try:
            if request.content_type == "application/json":
                body = await read_json(request)
            else:
                body = await read_form(request)
        except BadRequestBody as exc:
            return json_error(400, f"body: {exc}")
        reason = body.get("reason") if isinstance(body, dict) else None
    agents = _console(request).agents
    try:
        if action == "pause":
            # Unchecked here on purpose: pause() refuses anything not in PAUSE_REASONS (None too) with an
            # AgentError, answered 400 below with the service's own message.
            agent = await agents.pause(name, cast(str, reason))
        else:
            agent = await getattr(agents, action)(name)
    except AgentNotFound as exc:
        return json_error(404, str(exc))
    except AgentNotApplied as exc:  # saved, but Asterisk is away or refused: the caller must know
        return json_error(503, str(exc))
    except AgentError as exc:
        return json_error(400, str(exc))
    if _is_browser_form(request):  # the page's forms work without JS too
        raise web.HTTPSeeOther("/agents")
    return ok({"agent": agent.to_dict()})


def _is_browser_form(request: web.Request) -> bool:
    return (request.content_type in ("application/x-www-form-urlencoded", "multipart/form-data")
            and "text/html" in request.headers.get("Accept", ""))


def own_agent(account: Account, agents: list[dict[str, Any]]) -> dict[str, Any] | None:
    """The queue agent this console account acts as (the same names the API lets an agent act on), or None."""
    names = [n for n in (account.sip_endpoint, account.username) if n]
    by_name = {a.get("name"): a for a in agents}
    return next((by_name[n] for n in names if n in by_name), None)


async def agents_page(request: web.Request) -> web.Response:
    """/agents: the signed-in agent's queue state and controls; supervisors and admins also get every agent."""
    account = current_account(request)
    console = request.app.get(QUEUE_CONSOLE)
    agents: list[dict[str, Any]] | None = None
    error = ""
    if console is None:
        error = "Queue agents are not available in this console."
    else:
        try:
            agents = json.loads(dumps(await console.list_agents()))
        except Exception as exc:  # the page still loads; the JS keeps retrying and says why it cannot
            log.exception("agents page: could not load the agents")
            error = f"Could not load the agents: {(str(exc).splitlines() or [type(exc).__name__])[0]}"
    return await render_page(request, "agents.html", {
        "agents": agents,
        "mine": own_agent(account, agents or []),
        "supervisor": account.role in (Role.SUPERVISOR, Role.ADMIN),
        "pause_reasons": PAUSE_REASONS,
        "error": error,
    })


async def api_queues(request: web.Request) -> web.Response:
    """Each queue's waiting calls (positions, IVR context) and counters."""
    return ok({"queues": await _console(request).queues()})


async def api_queue_metrics(request: web.Request) -> web.Response:
    """Metrics per queue since ?since=ISO-8601 (default today, UTC)."""
    since = None
    raw = request.query.get("since")
    if raw:
        try:
            if not raw.isprintable():  # fromisoformat stops at a NUL and takes "…+00:00\x00"
                raise ValueError(raw)
            since = datetime.fromisoformat(raw)
        except ValueError:
            return json_error(400, "since: not an ISO 8601 time")
        if since.tzinfo is None:
            return json_error(400, "since: must include a time zone (e.g. +00:00)")
        try:
            since = since.astimezone(UTC)
        except OverflowError:  # 0001-01-01T00:00+14:00 is before the first representable UTC instant
            return json_error(400, "since: out of range")
    return ok({"queues": await _console(request).figures(since)})


async def metrics(request: web.Request) -> web.Response:
    """Prometheus text format; bearer token if configured, else loopback clients only."""
    token = request.app[METRICS_TOKEN]
    if token:
        given = request.headers.get("Authorization", "")
        if not hmac.compare_digest(given.encode(), f"Bearer {token}".encode()):
            return web.Response(status=401, text="401: bearer token required\n", content_type="text/plain")
    else:
        try:
            loopback = ipaddress.ip_address(request.remote or "").is_loopback
        except ValueError:
            loopback = False
        if not loopback:
            return web.Response(status=403, text="403: /metrics answers loopback only (set metrics_token)\n",
                                content_type="text/plain")
    body = await _console(request).prometheus()
    return web.Response(body=body, headers={"Content-Type": "text/plain; version=0.0.4; charset=utf-8"})
