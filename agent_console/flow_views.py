"""Admin routes for IVR flows: list, get, validate, publish, roll back, audit, and the flow editor page.

Roles are declared in app.ROUTES (admin only). The views go through the flow admin service (ivr.FlowAdmin)
set on the app under FLOW_ADMIN by the composition root.
"""
from __future__ import annotations

import json
import logging
from typing import TYPE_CHECKING, Any, Final

from aiohttp import web

from .flow_diagram import render_flow_svg
from .pages import render_page
from .security import BadRequestBody, current_account, json_error, read_json

if TYPE_CHECKING:
    from ivr.flow_admin import FlowAdmin
    from ivr.flow_validator import FlowReport

log = logging.getLogger(__name__)

FLOW_ADMIN: Final[web.AppKey[FlowAdmin]] = web.AppKey("console_flow_admin")
MAX_FLOW_BYTES = 60_000
MAX_VERSION = 2**31 - 1  # versions count publishes; a bigger number is no version (and overflows the column)


def _admin(request: web.Request) -> FlowAdmin:
    admin = request.app.get(FLOW_ADMIN)
    if admin is None:
        raise web.HTTPServiceUnavailable(reason="flows are not available in this console")
    return admin


def _json(payload: Any, status: int = 200) -> web.Response:
    return web.json_response(payload, status=status, dumps=lambda v: json.dumps(v, default=str, ensure_ascii=False))


async def _body(request: web.Request) -> dict[str, Any]:
    try:
        data = await read_json(request)
    except BadRequestBody as exc:
        raise web.HTTPBadRequest(reason=f"the body must be JSON: {exc}") from None
    if not isinstance(data, dict):
        raise web.HTTPBadRequest(reason="the body must be a JSON object")
    return data


def _flow_name(request: web.Request) -> str:
    from ivr.flow_routes import FLOW_NAME

    name = request.match_info["name"]
    if not FLOW_NAME.match(name):
        raise web.HTTPBadRequest(reason="flow name: lower-case letters, digits, - and _ (at most 64)")
    return name


def _yaml_of(data: dict[str, Any]) -> str:
    text = data.get("yaml")
    if not isinstance(text, str) or not text.strip():
        raise web.HTTPBadRequest(reason="'yaml' (the flow document text) is required")
    if len(text.encode()) > MAX_FLOW_BYTES:
        raise web.HTTPBadRequest(reason=f"the flow is larger than {MAX_FLOW_BYTES} bytes")
    return text


def _report_payload(report: FlowReport) -> dict[str, Any]:
    payload = report.to_dict()
    if report.document is not None:
        payload["diagram_svg"] = render_flow_svg(report.document, {e.node for e in report.errors if e.node})
        payload["name"] = report.document.name
    else:
        payload["diagram_svg"] = ""
    return payload


async def flows_page(request: web.Request) -> web.Response:
    """The flow editor: YAML on the left, validation and the diagram on the right, publish and history."""
    admin = _admin(request)
    live = await admin.get(admin.live_name)
    return await render_page(request, "flows.html", {
        "flow_name": live["flow_name"], "live_version": live["version"], "yaml_text": live["text"],
    })


async def api_flows(request: web.Request) -> web.Response:
    """GET /api/flows: every flow with its live version."""
    admin = _admin(request)
    return _json({"live_flow": admin.live_name, "flows": await admin.list_flows()})


async def api_flow(request: web.Request) -> web.Response:
    """GET /api/flows/{name}[?version=N]: a version's YAML (the live one by default)."""
    admin = _admin(request)
    name = _flow_name(request)
    raw = request.query.get("version")
    try:
        version = int(raw) if raw is not None else None
    except ValueError:
        return json_error(400, f"version {raw!r} is not a number")
    if version is not None and not 0 <= version <= MAX_VERSION:
        return json_error(400, "version: 0 (the shipped file) or a published version number")
    try:
        return _json(await admin.get(name, version))
    except LookupError as exc:
        return json_error(404, str(exc))


async def api_flow_versions(request: web.Request) -> web.Response:
    """GET /api/flows/{name}/versions: newest first, without texts."""
    admin = _admin(request)
    name = _flow_name(request)
    versions = await admin.versions(name)
    if not versions and name != admin.live_name:
        return json_error(404, f"no flow named {name!r}")
    return _json({"versions": [v.to_dict(with_text=False) for v in versions]})


async def api_flow_audit(request: web.Request) -> web.Response:
    """GET /api/flows/audit: who published what, when, from which version."""
    entries = await _admin(request).audit(limit=200)
    return _json({"audit": [e.to_dict() for e in entries]})


async def api_flow_validate(request: web.Request) -> web.Response:
    """POST /api/flows/validate {"yaml": …}: errors and warnings (each naming its node) and the diagram."""
    text = _yaml_of(await _body(request))
    report = await _admin(request).validate(text)
    return _json(_report_payload(report))


async def api_flow_publish(request: web.Request) -> web.Response:
    """POST /api/flows/publish {"yaml": …, "comment": …}: a new immutable version, live from the next call."""
    from ivr import FlowRejected, PromptError

    data = await _body(request)
    text = _yaml_of(data)
    comment = str(data.get("comment") or "")[:500]
    actor = current_account(request).username
    try:
        version = await _admin(request).publish(text, actor, comment)
    except FlowRejected as exc:
        payload = _report_payload(exc.report)
        payload["error"] = str(exc)
        return _json(payload, status=422)
    except PromptError as exc:
        return json_error(422, str(exc))
    log.info("flow %s version %d published by %s", version.flow_name, version.version, actor)
    return _json({"ok": True, **version.to_dict(with_text=False)}, status=201)


async def api_flow_rollback(request: web.Request) -> web.Response:
    """POST /api/flows/{name}/rollback {"version": N}: re-publish version N as a new version."""
    from ivr import FlowRejected, PromptError

    admin = _admin(request)
    name = _flow_name(request)
    data = await _body(request)
    version = data.get("version")
    if isinstance(version, bool) or not isinstance(version, int) or not 1 <= version <= MAX_VERSION:
        return json_error(400, "'version' must be a published version number (1 or more)")
    actor = current_account(request).username
    try:
        new = await admin.rollback(name, version, actor)
    except LookupError as exc:
        return json_error(404, str(exc))
    except FlowRejected as exc:
        payload = _report_payload(exc.report)
        payload["error"] = f"version {version} no longer validates: {exc}"
        return _json(payload, status=422)
    except PromptError as exc:
        return json_error(422, str(exc))
    log.info("flow %s rolled back to version %d (now version %d) by %s", new.flow_name, version, new.version, actor)
    return _json({"ok": True, **new.to_dict(with_text=False)}, status=201)


async def api_flow_routes(request: web.Request) -> web.Response:
    """GET /api/flows/routes: each number the IVR answers with the flow it runs (routed by an admin or configured)."""
    return _json({"routes": await _admin(request).routes()})


async def api_flow_route(request: web.Request) -> web.Response:
    """POST /api/flows/routes {"number": …, "flow": …}: the number runs that flow from its next call on (audited)."""
    data = await _body(request)
    number, flow = data.get("number"), data.get("flow")
    if not isinstance(number, str) or not isinstance(flow, str) or not number or not flow:
        return json_error(400, "'number' and 'flow' are required")
    actor = current_account(request).username
    try:
        routed = await _admin(request).route(number, flow, actor)
    except LookupError as exc:
        return json_error(404, str(exc))
    except ValueError as exc:
        return json_error(400, str(exc))
    log.info("number %s now runs flow %s (routed by %s)", number, flow, actor)
    return _json({"ok": True, **routed})
