"""Build the console's aiohttp application from the domain services it is given."""
from __future__ import annotations

from typing import Any, Literal

from aiohttp import web
from aiohttp_session import session_middleware

from identity import AccountStore

from . import flow_views, pages, queue_views, transcript_views, views
from .ports import CallRecordsService, CasesService, HealthCheck, LiveCallsService
from .security import (
    ACCOUNTS,
    ADMIN_ROLES,
    ALL_ROLES,
    BAD_INPUT_ERRORS,
    CASE_READER_ROLES,
    CONSOLE_ROLES,
    POLICIES,
    PUBLIC,
    SUPERVISOR_ROLES,
    Route,
    access_middleware,
    add_public_static,
    add_routes,
    api_error_middleware,
    security_headers_middleware,
)
from .sessions import SESSION_STORAGE, MemorySessionBackend, ServerSideStorage, SessionBackend
from .throttle import FailureCounters, LoginThrottle, MemoryFailureCounters, ThrottleLimits

# The one place that says who may call what. A route registered any other way is refused.
ROUTES: tuple[Route, ...] = (
    Route("GET", "/healthz", views.healthz, PUBLIC),  # ok / not ok only
    Route("GET", "/admin/health", views.health_detail, SUPERVISOR_ROLES),  # every component's report
    Route("GET", "/login", views.login_page, PUBLIC),
    Route("POST", "/login", views.login, PUBLIC),
    Route("POST", "/logout", views.logout, ALL_ROLES),
    Route("GET", "/", views.console_page, ALL_ROLES),  # department gets the read-only cases view
    Route("GET", "/api/me", views.api_me, ALL_ROLES),
    Route("POST", "/api/me/password", views.api_change_password, ALL_ROLES),  # ends the account's sessions
    Route("GET", "/api/calls/live", views.api_live_calls, CONSOLE_ROLES),
    Route("GET", "/api/cases", views.api_cases, CASE_READER_ROLES),
    Route("GET", "/api/cases/{case_number}", views.api_case, CASE_READER_ROLES),
    Route("POST", "/api/cases/{case_number}/notes", views.api_add_note, CONSOLE_ROLES),
    Route("GET", "/api/cases/{case_number}/transcripts", transcript_views.api_case_transcripts,
          CASE_READER_ROLES),  # description and whole-call transcripts with word timings
    Route("GET", "/api/call-records", views.api_call_records, CONSOLE_ROLES),
    Route("GET", "/api/accounts", views.api_accounts, ADMIN_ROLES),
    Route("POST", "/api/accounts", views.api_create_account, ADMIN_ROLES),
    Route("POST", "/api/accounts/{name}/password", views.api_reset_password, ADMIN_ROLES),  # ends its sessions
    # IVR flows: admins edit, validate, publish and roll back the call flow
    Route("GET", "/flows", flow_views.flows_page, ADMIN_ROLES),
    Route("GET", "/api/flows", flow_views.api_flows, ADMIN_ROLES),
    Route("GET", "/api/flows/audit", flow_views.api_flow_audit, ADMIN_ROLES),
    Route("GET", "/api/flows/routes", flow_views.api_flow_routes, ADMIN_ROLES),  # which flow each number runs
    Route("POST", "/api/flows/routes", flow_views.api_flow_route, ADMIN_ROLES),
    Route("POST", "/api/flows/validate", flow_views.api_flow_validate, ADMIN_ROLES),
    Route("POST", "/api/flows/publish", flow_views.api_flow_publish, ADMIN_ROLES),
    Route("GET", "/api/flows/{name}", flow_views.api_flow, ADMIN_ROLES),
    Route("GET", "/api/flows/{name}/versions", flow_views.api_flow_versions, ADMIN_ROLES),
    Route("POST", "/api/flows/{name}/rollback", flow_views.api_flow_rollback, ADMIN_ROLES),
    # queueing: agents act on themselves, supervisors on anyone (checked in the view)
    Route("GET", "/agents", queue_views.agents_page, CONSOLE_ROLES),  # own state; supervisors/admins: everyone
    Route("GET", "/api/agents", queue_views.api_agents, CONSOLE_ROLES),
    Route("POST", "/api/agents/{name}/{action}", queue_views.api_agent_action, CONSOLE_ROLES),
    Route("GET", "/api/queues", queue_views.api_queues, CONSOLE_ROLES),
    Route("GET", "/api/queues/metrics", queue_views.api_queue_metrics, SUPERVISOR_ROLES),
    Route("GET", "/metrics", queue_views.metrics, PUBLIC),  # bearer token or loopback, checked in the view
)

SESSION_COOKIE = "HOTLINE_CONSOLE"


def create_console_app(
    *,
    cases: CasesService,
    live_calls: LiveCallsService,
    call_records: CallRecordsService,
    accounts: AccountStore,
    health: HealthCheck,
    session_key: bytes,
    sessions: SessionBackend | None = None,
    login_failures: FailureCounters | None = None,
    login_limits: ThrottleLimits | None = None,
    secure_cookies: bool = False,
    cookie_samesite: Literal["Strict", "Lax"] = "Lax",
    session_max_age: int = 12 * 3600,
    health_timeout: float = 5.0,
    bad_input_errors: tuple[type[Exception], ...] = (),
) -> web.Application:
    """The console web app: pages, JSON API and /healthz; session_key is 32 random bytes (keep it secret).

    sessions / login_failures: where sessions and failed-login counts live, shared by every process (Redis:
    sessions.RedisSessionBackend, throttle.RedisFailureCounters); None keeps them in this process's memory.
    secure_cookies=True when served over HTTPS (behind a TLS proxy); sessions expire after session_max_age s.
    bad_input_errors: domain exceptions meaning "the caller's input was refused" (e.g. cases.CaseStoreError),
    answered as 400 with their first line instead of 500.
    """
    if not isinstance(session_key, (bytes, bytearray)) or len(session_key) != 32:
        raise ValueError("session_key: must be exactly 32 bytes (e.g. os.urandom(32))")
    if cookie_samesite not in ("Strict", "Lax"):
        raise ValueError("cookie_samesite: must be Strict or Lax")
    storage = ServerSideStorage(
        sessions if sessions is not None else MemorySessionBackend(),
        bytes(session_key),
        cookie_name=SESSION_COOKIE,
        max_age=session_max_age,
        secure=secure_cookies,
        samesite=cookie_samesite,
    )
    app = web.Application(
        middlewares=[
            security_headers_middleware,
            session_middleware(storage),
            api_error_middleware,
            access_middleware,
        ],
        client_max_size=64 * 1024,  # notes and account forms are small; refuse big bodies early
    )
    app[POLICIES] = {}
    app[SESSION_STORAGE] = storage
    app[views.LOGIN_THROTTLE] = LoginThrottle(login_failures if login_failures is not None else MemoryFailureCounters(),
                                              login_limits)
    app[ACCOUNTS] = accounts
    app[BAD_INPUT_ERRORS] = tuple(bad_input_errors)
    app[views.CASES] = cases
    app[views.LIVE_CALLS] = live_calls
    app[views.CALL_RECORDS] = call_records
    app[views.HEALTH] = health
    app[views.HEALTH_TIMEOUT] = float(health_timeout)
    pages.setup_templates(app)
    add_routes(app, ROUTES)
    add_public_static(app, "/static", pages.STATIC_DIR)
    return app


def describe_routes(app: web.Application) -> list[dict[str, Any]]:
    """(method, path, roles) of every registered route, for docs and tests."""
    rows = []
    for route in app.router.routes():
        policy = app[POLICIES].get(route)
        info = route.resource.get_info() if route.resource is not None else {}
        path = info.get("path") or info.get("formatter") or info.get("prefix") or ""
        roles = "public" if policy is PUBLIC else sorted(str(r) for r in policy) if policy else None
        rows.append({"method": route.method, "path": path, "roles": roles})
    return rows
