"""Agent console: accounts, login/logout, per-route roles, CSRF, notes, /healthz (in-memory fakes, real SQLite)."""
from __future__ import annotations

import asyncio
import os
import re
from collections.abc import AsyncIterator
from dataclasses import dataclass, replace
from datetime import timedelta
from typing import Any

import pytest
from aiohttp import web
from aiohttp.test_utils import TestClient, TestServer
from argon2 import PasswordHasher
from sqlalchemy.ext.asyncio import create_async_engine

from agent_console import PUBLIC, create_console_app, route_policy
from cases import CaseStoreError
from identity import AccountExists, AccountStore, Role
from tests.support.cases import NOW, FakeCases, sample_case
from tests.support.console import CHEAP_HASHER, PASSWORD, FakeHealth, login, login_csrf
from tests.support.live import FakeLive, live_call
from tests.support.records import FakeRecords, call_record

# --- fixtures (the fakes of the other domains are in tests/support/) --------------------------------


@dataclass
class Console:
    app: web.Application
    client: TestClient
    accounts: AccountStore
    cases: FakeCases
    live: FakeLive
    health: FakeHealth


USERS = {
    Role.AGENT: ("agent1", "agent1"),
    Role.SUPERVISOR: ("super1", None),
    Role.DEPARTMENT: ("roads", None),
    Role.ADMIN: ("admin1", None),
}


@pytest.fixture
async def store(tmp_path: Any) -> AsyncIterator[AccountStore]:
    engine = create_async_engine(f"sqlite+aiosqlite:///{tmp_path / 'console.db'}")
    accounts = AccountStore(engine, hasher=CHEAP_HASHER)
    await accounts.create_schema()
    try:
        yield accounts
    finally:
        await engine.dispose()


@pytest.fixture
async def console(store: AccountStore) -> AsyncIterator[Console]:
    for role, (username, endpoint) in USERS.items():
        await store.create(username, PASSWORD, role, display_name=f"{role.value.title()} One", sip_endpoint=endpoint)
    cases = FakeCases(
        sample_case("2611290001", agent="agent1"),
        sample_case("2611290002", category="inquiry", status="open", created_at=NOW - timedelta(hours=1)),
    )
    live = FakeLive(live_call(), live_call(linkedid="1700000000.9", state="ivr", agent=None, case_number=None))
    health = FakeHealth()
    app = create_console_app(
        cases=cases,
        live_calls=live,
        call_records=FakeRecords(call_record("1699999999.1", case_number="2611290002")),
        accounts=store,
        health=health,
        session_key=os.urandom(32),
        health_timeout=0.5,
        bad_input_errors=(CaseStoreError,),
    )
    client = TestClient(TestServer(app))
    await client.start_server()
    try:
        yield Console(app, client, store, cases, live, health)
    finally:
        await client.close()


async def new_client(console: Console) -> TestClient:
    client = TestClient(TestServer(console.app))
    await client.start_server()
    return client


def concrete_path(route: Any) -> str:
    info = route.resource.get_info()
    if "prefix" in info:  # static
        return info["prefix"] + "/console.css"
    return info.get("path") or info["formatter"].format(case_number="2611290001", name="agent1", action="login")


# --- accounts -----------------------------------------------------------------------------------


async def test_password_policy_and_account_store(store: AccountStore) -> None:
    with pytest.raises(ValueError, match="at least 8 characters") as short:
        await store.create("agent7", "short", Role.AGENT)
    assert "\n" not in str(short.value)
    with pytest.raises(ValueError, match="^role:"):
        await store.create("agent7", PASSWORD, "boss")
    with pytest.raises(ValueError, match="^username:"):
        await store.create("Bad Name!", PASSWORD, Role.AGENT)

    created = await store.create("Agent7", PASSWORD, "agent", sip_endpoint="agent7")
    assert created.username == "agent7" and created.role is Role.AGENT and created.display_name == "agent7"
    assert created.created_at.tzinfo is not None
    assert "password_hash" not in created.to_dict()
    with pytest.raises(AccountExists):
        await store.create("agent7", PASSWORD, Role.AGENT)

    assert await store.verify("agent7", PASSWORD) == created
    assert await store.verify("AGENT7", PASSWORD) == created
    assert await store.verify("agent7", "wrong password") is None
    assert await store.verify("nobody", PASSWORD) is None
    assert (await store.get("agent7")) == created
    assert await store.get("nobody") is None

    await store.set_password("agent7", "another password")
    assert await store.verify("agent7", PASSWORD) is None
    assert await store.verify("agent7", "another password") is not None
    with pytest.raises(ValueError, match="at least 8"):
        await store.set_password("agent7", "1234567")

    await store.set_active("agent7", False)
    assert await store.verify("agent7", "another password") is None

    admin = await store.ensure_admin("root", "bootstrap-secret")
    again = await store.ensure_admin("root", "a different one")
    assert admin == again and admin.role is Role.ADMIN
    assert await store.verify("root", "bootstrap-secret") is not None
    assert [a.username for a in await store.list()] == ["agent7", "root"]


async def test_verify_upgrades_an_outdated_hash(store: AccountStore) -> None:
    await store.create("agent8", PASSWORD, Role.AGENT)
    stronger = AccountStore(store._engine, hasher=PasswordHasher(time_cost=2, memory_cost=2048, parallelism=1))
    assert await stronger.verify("agent8", PASSWORD) is not None
    # Now stored with the new parameters: the strong store sees no need to rehash, the cheap one does.
    async with store._sessions() as session:
        row = await store._row(session, "agent8")
        assert not stronger._hasher.check_needs_rehash(row.password_hash)
        assert CHEAP_HASHER.check_needs_rehash(row.password_hash)


# --- login / logout -----------------------------------------------------------------------------


async def test_login_logout(console: Console) -> None:
    client = console.client
    resp = await client.get("/", allow_redirects=False)
    assert resp.status == 302 and resp.headers["Location"] == "/login"

    token = await login_csrf(client)
    resp = await client.post(
        "/login", data={"username": "agent1", "password": "wrong password", "csrf_token": token}, allow_redirects=False
    )
    assert resp.status == 401
    assert "Wrong username or password" in await resp.text()
    assert (await client.get("/api/me")).status == 401

    csrf = await login(client, "agent1")
    page = await client.get("/")
    assert page.status == 200
    html = await page.text()
    assert "Agent One" in html and 'name="csrf-token"' in html and csrf in html

    resp = await client.post("/logout", allow_redirects=False)
    assert resp.status == 403, "logout without the CSRF token must be refused"
    resp = await client.post("/logout", data={"csrf_token": csrf}, allow_redirects=False)
    assert resp.status == 303 and resp.headers["Location"] == "/login"
    assert (await client.get("/api/me")).status == 401
    resp = await client.get("/", allow_redirects=False)
    assert resp.status == 302


async def test_login_rejects_post_without_csrf_and_keeps_next(console: Console) -> None:
    client = console.client
    resp = await client.post("/login", data={"username": "agent1", "password": PASSWORD}, allow_redirects=False)
    assert resp.status == 403
    resp = await client.get("/api/cases", allow_redirects=False)
    assert resp.status == 401 and (await resp.json()) == {"error": "login required"}

    resp = await client.get("/login?next=/%23cases")
    assert 'name="next" value="/#cases"' in await resp.text()
    for target, expected in (("/#cases", "/#cases"), ("//evil.example/", "/"), ("https://evil.example/", "/")):
        token = await login_csrf(client)
        resp = await client.post(
            "/login",
            data={"username": "agent1", "password": PASSWORD, "csrf_token": token, "next": target},
            allow_redirects=False,
        )
        assert resp.status == 303 and resp.headers["Location"] == expected
        # Logging in starts a new session with a new token: the anonymous one must not work any more.
        resp = await client.post("/logout", data={"csrf_token": token}, allow_redirects=False)
        assert resp.status == 403
        me = await (await client.get("/api/me")).json()
        assert me["csrf_token"] != token
        resp = await client.post("/logout", headers={"X-CSRF-Token": me["csrf_token"]}, allow_redirects=False)
        assert resp.status == 303


async def test_json_login(console: Console) -> None:
    client = console.client
    token = await login_csrf(client)
    resp = await client.post(
        "/login", json={"username": "admin1", "password": "nope nope"}, headers={"X-CSRF-Token": token}
    )
    assert resp.status == 401 and (await resp.json())["error"] == "wrong username or password"
    resp = await client.post("/login", json={"username": "admin1", "password": PASSWORD},
                             headers={"X-CSRF-Token": token})
    assert resp.status == 200
    body = await resp.json()
    assert body["account"]["role"] == "admin" and body["csrf_token"] != token


# --- roles on every route -----------------------------------------------------------------------


async def test_every_route_declares_its_roles(console: Console) -> None:
    routes = list(console.app.router.routes())
    assert len(routes) >= 14
    public = set()
    for route in routes:
        policy = route_policy(console.app, route)
        assert policy is not None, f"{route.method} {route.resource} has no declared roles"
        if policy is PUBLIC:
            public.add((route.method, concrete_path(route).split("/console.css")[0]))
    # /metrics is public to the session layer only: its view demands a bearer token or a loopback client.
    assert public == {("GET", "/healthz"), ("GET", "/login"), ("POST", "/login"), ("GET", "/static"),
                      ("HEAD", "/static"), ("GET", "/metrics")}


async def test_route_added_outside_the_table_is_refused(store: AccountStore) -> None:
    await store.create("admin9", PASSWORD, Role.ADMIN)
    app = create_console_app(
        cases=FakeCases(), live_calls=FakeLive(), call_records=FakeRecords(), accounts=store,
        health=FakeHealth(), session_key=os.urandom(32),
    )

    async def sneaky(request: web.Request) -> web.Response:
        return web.json_response({"secret": 42})

    route = app.router.add_get("/api/sneaky", sneaky)
    assert route_policy(app, route) is None
    async with TestClient(TestServer(app)) as client:
        assert (await client.get("/api/sneaky")).status == 403
        await login(client, "admin9")
        resp = await client.get("/api/sneaky")
        assert resp.status == 403 and (await resp.json()) == {"error": "route has no declared roles"}


async def test_anonymous_requests_to_non_public_routes_are_refused(console: Console) -> None:
    client = console.client
    token = await login_csrf(client)  # a valid anonymous token: the refusal must come from the role check
    for route in console.app.router.routes():
        if route_policy(console.app, route) is PUBLIC:
            continue
        path = concrete_path(route)
        resp = await client.request(route.method, path, headers={"X-CSRF-Token": token}, allow_redirects=False)
        if route.method == "GET" and not path.startswith("/api/"):
            assert resp.status == 302 and resp.headers["Location"].startswith("/login"), path
        else:
            assert resp.status == 401, f"{route.method} {path}: {resp.status}"
            if path.startswith("/api/"):
                assert (await resp.json()) == {"error": "login required"}


async def test_each_role_gets_exactly_its_routes(console: Console) -> None:
    routes = [r for r in console.app.router.routes() if route_policy(console.app, r) is not PUBLIC]
    routes.sort(key=lambda r: concrete_path(r) == "/logout")  # logging out last keeps the session for the rest
    for role, (username, _) in USERS.items():
        client = await new_client(console)
        try:
            csrf = await login(client, username)
            for route in routes:
                path = concrete_path(route)
                resp = await client.request(
                    route.method, path, headers={"X-CSRF-Token": csrf, "Accept": "application/json"},
                    allow_redirects=False,
                )
                allowed = role in route_policy(console.app, route)
                if allowed:
                    assert resp.status not in (401, 403), f"{role} {route.method} {path}: {resp.status}"
                else:
                    assert resp.status == 403, f"{role} {route.method} {path}: {resp.status}"
        finally:
            await client.close()


async def test_agent_gets_403_on_admin_routes(console: Console) -> None:
    csrf = await login(console.client, "agent1")
    resp = await console.client.get("/api/accounts")
    assert resp.status == 403 and (await resp.json()) == {"error": "role agent may not use this"}
    resp = await console.client.post(
        "/api/accounts", json={"username": "mallory", "password": PASSWORD, "role": "admin"},
        headers={"X-CSRF-Token": csrf},
    )
    assert resp.status == 403
    assert await console.accounts.get("mallory") is None


async def test_department_reads_cases_only(console: Console) -> None:
    csrf = await login(console.client, "roads")
    assert (await console.client.get("/api/cases")).status == 200
    assert (await console.client.get("/api/cases/2611290001")).status == 200
    assert (await console.client.get("/api/calls/live")).status == 403
    resp = await console.client.post("/api/cases/2611290001/notes", json={"note": "x"}, headers={"X-CSRF-Token": csrf})
    assert resp.status == 403
    html = await (await console.client.get("/")).text()
    assert "Recent cases" in html and "Live calls" not in html and "note-form" not in html


async def test_disabled_account_loses_its_session(console: Console) -> None:
    await login(console.client, "agent1")
    await console.accounts.set_active("agent1", False)
    assert (await console.client.get("/api/cases")).status == 401


# --- CSRF ---------------------------------------------------------------------------------------


async def test_csrf_token_required_on_post(console: Console) -> None:
    csrf = await login(console.client, "agent1")
    url = "/api/cases/2611290001/notes"
    resp = await console.client.post(url, json={"note": "no token"})
    assert resp.status == 403 and (await resp.json()) == {"error": "missing or wrong CSRF token"}
    resp = await console.client.post(url, json={"note": "bad token"}, headers={"X-CSRF-Token": "x" + csrf})
    assert resp.status == 403
    resp = await console.client.post(url, data={"note": "form, no token"})
    assert resp.status == 403
    assert console.cases.cases["2611290001"].notes is None
    resp = await console.client.post(url, json={"note": "with token"}, headers={"X-CSRF-Token": csrf})
    assert resp.status == 200


# --- cases and notes ----------------------------------------------------------------------------


async def test_add_notes_to_a_case(console: Console) -> None:
    csrf = await login(console.client, "agent1")
    headers = {"X-CSRF-Token": csrf}
    resp = await console.client.post("/api/cases/2611290001/notes", json={"note": "Called back,  sent crew"},
                                     headers=headers)
    assert resp.status == 200
    notes = (await resp.json())["case"]["notes"]
    assert re.fullmatch(r"\[\d{4}-\d\d-\d\d \d\d:\d\d agent1\] Called back, sent crew", notes)

    resp = await console.client.post("/api/cases/2611290001/notes", json={"note": "Crew on site"}, headers=headers)
    lines = (await resp.json())["case"]["notes"].splitlines()
    assert len(lines) == 2 and lines[1].endswith("agent1] Crew on site")
    detail = await (await console.client.get("/api/cases/2611290001")).json()
    assert detail["case"]["notes"].count("\n") == 1
    # Each note is an event of the case, by the agent who wrote it.
    assert [(e["kind"], e["actor"]) for e in detail["events"]] == [("note", "agent1"), ("note", "agent1")]
    assert [e["data"]["text"] for e in detail["events"]] == lines

    resp = await console.client.post("/api/cases/2611290001/notes", json={"note": "  "}, headers=headers)
    assert resp.status == 400 and (await resp.json())["error"].startswith("note:")
    resp = await console.client.post("/api/cases/2611290001/notes", data="not json", headers=headers)
    assert resp.status == 400 and (await resp.json())["error"].startswith("body:")
    resp = await console.client.post("/api/cases/2699999999/notes", json={"note": "x"}, headers=headers)
    assert resp.status == 404 and (await resp.json()) == {"error": "case 2699999999 not found"}

    # Plain HTML form post (no JS): back to the console.
    resp = await console.client.post(
        "/api/cases/2611290002/notes",
        data={"note": "Form note", "csrf_token": csrf},
        headers={"Accept": "text/html"},
        allow_redirects=False,
    )
    assert resp.status == 303 and resp.headers["Location"] == "/#case-2611290002"
    assert console.cases.cases["2611290002"].notes.endswith("agent1] Form note")

    # The domain refusing the note is the caller's fault: 400, not 500.
    console.cases.note_limit = 20
    resp = await console.client.post("/api/cases/2611290002/notes", json={"note": "one more"}, headers=headers)
    assert resp.status == 400 and (await resp.json()) == {"error": "note is longer than 20 characters"}


async def test_case_api(console: Console) -> None:
    await login(console.client, "super1")
    body = await (await console.client.get("/api/cases?limit=1")).json()
    assert [c["case_number"] for c in body["cases"]] == ["2611290001"]
    body = await (await console.client.get("/api/cases?status=open")).json()
    assert [c["case_number"] for c in body["cases"]] == ["2611290002"]
    for bad in ("abc", "0", "501"):
        resp = await console.client.get(f"/api/cases?limit={bad}")
        assert resp.status == 400 and (await resp.json())["error"].startswith("limit:")
    resp = await console.client.get("/api/cases?status=bogus")
    assert resp.status == 400 and "status" in (await resp.json())["error"]
    resp = await console.client.get("/api/cases/nope$")
    assert resp.status == 400 and (await resp.json())["error"].startswith("case_number:")
    resp = await console.client.get("/api/cases/2600000000")
    assert resp.status == 404 and (await resp.json()) == {"error": "case 2600000000 not found"}
    resp = await console.client.get("/api/no-such-thing")
    assert resp.status == 404 and "error" in await resp.json()
    body = await (await console.client.get("/api/call-records?limit=5")).json()
    assert body["call_records"][0]["linkedid"] == "1699999999.1"


async def test_live_calls_and_screen_pop(console: Console) -> None:
    await login(console.client, "agent1")
    body = await (await console.client.get("/api/calls/live")).json()
    assert {c["linkedid"] for c in body["calls"]} == {"1700000000.1", "1700000000.9"}
    pop = body["screen_pop"]
    assert pop["call"]["linkedid"] == "1700000000.1"
    assert pop["case"]["case_number"] == "2611290001"

    # A newer call connected to the same agent wins; calls of other agents or not connected never pop.
    console.live.add(live_call(linkedid="1700000100.5", started_at="2026-11-29T09:40:00+00:00", agent="agent1"))
    console.live.add(live_call(linkedid="1700000200.5", started_at="2026-11-29T09:50:00+00:00", agent="PJSIP/agent2"))
    console.live.add(live_call(linkedid="1700000300.5", started_at="2026-11-29T09:55:00+00:00", state="ringing"))
    body = await (await console.client.get("/api/calls/live")).json()
    assert body["screen_pop"]["call"]["linkedid"] == "1700000100.5"

    html = await (await console.client.get("/")).text()
    assert "The street light on Main Road is broken." in html and 'id="screen-pop"' in html

    other = await new_client(console)
    try:
        await login(other, "super1")  # no SIP endpoint: no screen pop
        assert (await (await other.get("/api/calls/live")).json())["screen_pop"] is None
    finally:
        await other.close()


async def test_page_escapes_caller_supplied_text(console: Console) -> None:
    console.live.calls["1700000000.1"]["transcript"] = "<script>alert(1)</script>"
    await login(console.client, "agent1")
    html = await (await console.client.get("/")).text()
    assert "<script>alert(1)</script>" not in html and "&lt;script&gt;alert(1)&lt;/script&gt;" in html
    resp = await console.client.get("/")
    assert "script-src 'self'" in resp.headers["Content-Security-Policy"]
    assert resp.headers["X-Frame-Options"] == "DENY"


async def test_console_page_survives_a_failing_service(console: Console) -> None:
    async def broken() -> list[dict[str, Any]]:
        raise ConnectionError("redis away")

    console.live.list_calls = broken  # type: ignore[method-assign]
    await login(console.client, "agent1")
    resp = await console.client.get("/")
    assert resp.status == 200 and "Not available right now." in await resp.text()
    resp = await console.client.get("/api/calls/live")
    assert resp.status == 500 and (await resp.json()) == {"error": "internal error"}


# --- accounts API -------------------------------------------------------------------------------


async def test_accounts_api(console: Console) -> None:
    csrf = await login(console.client, "admin1")
    headers = {"X-CSRF-Token": csrf}
    body = await (await console.client.get("/api/accounts")).json()
    assert {a["username"] for a in body["accounts"]} == {"agent1", "super1", "roads", "admin1"}
    assert all("password_hash" not in a for a in body["accounts"])

    new = {"username": "agent3", "password": PASSWORD, "role": "agent", "sip_endpoint": "agent3"}
    resp = await console.client.post("/api/accounts", json=new, headers=headers)
    assert resp.status == 201 and (await resp.json())["account"]["sip_endpoint"] == "agent3"
    resp = await console.client.post("/api/accounts", json=new, headers=headers)
    assert resp.status == 409
    resp = await console.client.post("/api/accounts", json={**new, "username": "agent4", "password": "short"},
                                     headers=headers)
    assert resp.status == 400 and (await resp.json()) == {"error": "password: must be at least 8 characters"}
    resp = await console.client.post("/api/accounts", json={**new, "username": "agent4", "role": "boss"},
                                     headers=headers)
    assert resp.status == 400 and (await resp.json())["error"].startswith("role:")
    resp = await console.client.post("/api/accounts", json={"password": PASSWORD, "role": "agent"}, headers=headers)
    assert resp.status == 400 and (await resp.json()) == {"error": "username: required"}
    resp = await console.client.post("/api/accounts", json=["not", "an", "object"], headers=headers)
    assert resp.status == 400 and (await resp.json())["error"].startswith("body:")

    other = await new_client(console)
    try:
        await login(other, "agent3")
    finally:
        await other.close()


# --- /healthz -----------------------------------------------------------------------------------


async def test_healthz(console: Console) -> None:
    client = console.client
    resp = await client.get("/healthz")
    assert resp.status == 200 and (await resp.json()) == {"status": "ok"}

    console.health.report = {"ok": False, "components": {"ami": {"ok": False, "reconnects": 3,
                                                                 "last_error": "10.1.2.3:5038 refused"}}}
    resp = await client.get("/healthz")
    assert resp.status == 503 and (await resp.json()) == {"status": "unavailable"}
    assert "10.1.2.3" not in await resp.text()

    # The details are for staff: anonymous and agents are refused, supervisors see every component.
    resp = await client.get("/admin/health", headers={"Accept": "application/json"})
    assert resp.status == 401
    await login(client, "agent1")
    assert (await client.get("/admin/health", headers={"Accept": "application/json"})).status == 403
    other = await new_client(console)
    try:
        await login(other, "super1")
        resp = await other.get("/admin/health")
        assert resp.status == 503 and (await resp.json())["components"]["ami"]["reconnects"] == 3
        console.health.report = {"ok": True, "components": {"ami": {"ok": True, "reconnects": 3}}}
        resp = await other.get("/admin/health")
        assert resp.status == 200 and (await resp.json())["components"]["ami"]["ok"] is True
    finally:
        await other.close()


async def test_healthz_sync_failing_and_hanging_checks(store: AccountStore) -> None:
    async def hang() -> dict[str, Any]:
        await asyncio.sleep(30)
        return {"ok": True}

    def boom() -> dict[str, Any]:
        raise RuntimeError("secret detail of the failure")

    for check, status in ((lambda: {"ok": True, "components": {}}, 200), (boom, 503), (hang, 503), (lambda: None, 503)):
        app = create_console_app(
            cases=FakeCases(), live_calls=FakeLive(), call_records=FakeRecords(), accounts=store,
            health=check, session_key=os.urandom(32), health_timeout=0.2,
        )
        async with TestClient(TestServer(app)) as client:
            resp = await client.get("/healthz")
            assert resp.status == status
            assert (await resp.json()) == {"status": "ok" if status == 200 else "unavailable"}


async def test_session_key_must_be_32_bytes(store: AccountStore) -> None:
    with pytest.raises(ValueError, match="session_key"):
        create_console_app(
            cases=FakeCases(), live_calls=FakeLive(), call_records=FakeRecords(), accounts=store,
            health=lambda: {"ok": True}, session_key=b"short",
        )


# --- templates and display rules -------------------------------------------------------------------

SCRIPT = "<script>alert('x')</script>"
ESCAPED_SCRIPT = "&lt;script&gt;alert(&#39;x&#39;)&lt;/script&gt;"


def _display_rules_of(html: str) -> Any:
    import json

    match = re.search(r'<script type="application/json" id="display-rules">(.*?)</script>', html, re.DOTALL)
    assert match, "page has no display-rules block"
    return json.loads(match.group(1))


async def test_caller_supplied_text_is_escaped_on_every_console_page(console: Console) -> None:
    console.cases.cases["2611290001"] = replace(console.cases.cases["2611290001"], caller_number=SCRIPT,
                                                transcript=SCRIPT, notes=SCRIPT, menu_path=[SCRIPT])
    console.live.calls["1700000000.1"].update(caller_number=SCRIPT, transcript=SCRIPT, ivr_path=[SCRIPT],
                                              category=SCRIPT)
    await console.accounts.create("mallory", PASSWORD, Role.ADMIN, display_name=SCRIPT, sip_endpoint="agent1")
    for username in ("mallory", "agent1", "roads"):  # admin (all sections, accounts), agent (screen pop), department
        client = await new_client(console)
        try:
            await login(client, username)
            html = await (await client.get("/")).text()
            assert "<script>alert" not in html, username
            assert ESCAPED_SCRIPT in html, username
            assert "&lt;script&gt;" in html.split('id="case-rows"')[1].split("</tbody>")[0]  # the case row itself
        finally:
            await client.close()
    # The login form echoes what was typed, and the next URL it was sent to.
    token = await login_csrf(console.client)
    resp = await console.client.post("/login", data={"username": SCRIPT, "password": "wrong password",
                                                     "csrf_token": token, "next": "/" + SCRIPT})
    html = await resp.text()
    assert resp.status == 401 and "<script>alert" not in html and ESCAPED_SCRIPT in html
    html = await (await console.client.get("/login?next=/%3Cscript%3E")).text()
    assert "<script>" not in html and 'name="next" value="/&lt;script&gt;"' in html


def test_every_template_renders_with_autoescape(tmp_path: Any) -> None:
    from types import SimpleNamespace

    from agent_console.pages import TEMPLATES

    app = create_console_app(cases=FakeCases(), live_calls=FakeLive(), call_records=FakeRecords(),
                             accounts=None, health=FakeHealth(), session_key=os.urandom(32))  # type: ignore[arg-type]
    env = app[TEMPLATES]
    bold = "<b>x</b>"
    row = {key: bold for key in ("case_number", "caller_number", "transcript", "notes", "category", "status",
                                 "linkedid", "state", "queue", "agent", "outcome", "username", "display_name",
                                 "role", "sip_endpoint", "name", "pause_reason", "live_pause_reason")}
    row.update(menu_path=[bold], ivr_path=[bold], skills={bold: 0}, paused=True, logged_in=True)
    account = SimpleNamespace(username=bold, display_name=bold, role="admin", sip_endpoint=bold)
    common = {"account": account, "csrf": bold}
    contexts = {
        "base.html": {**common, "page": bold},
        "login.html": {**common, "error": bold, "username": bold, "next_url": bold},
        "console.html": {**common, "console_role": True, "live_calls": [row], "pop": {"call": row, "case": row},
                         "cases": [row], "records": [row], "accounts": [row]},
        "no_call.html": common,
        "agents.html": {**common, "agents": [row], "mine": row, "supervisor": True, "pause_reasons": [bold],
                        "error": bold},
        "flows.html": {**common, "flow_name": bold, "live_version": bold, "yaml_text": bold},
        "macros.html": {},
    }
    assert set(env.list_templates()) == set(contexts), "every template needs a context here"
    for name, context in contexts.items():
        assert env.autoescape(name) if callable(env.autoescape) else env.autoescape, name
        html = env.get_template(name).render(context)
        if name != "macros.html":
            assert bold not in html and "&lt;b&gt;x&lt;/b&gt;" in html, name
    macros = env.get_template("macros.html").module
    for macro, args in (("field", ("span", {"v": bold}, "v")), ("case_row", (row, bold, True)),
                        ("live_row", (row,)), ("screen_pop", ({"call": row, "case": row}, bold)),
                        ("record_row", (row,)), ("account_row", (row,)), ("agent_panel", (row, bold, [bold])),
                        ("agent_row", (row, bold, [bold])), ("empty_row", ([], 3, bold))):
        html = str(getattr(macros, macro)(*args))
        assert bold not in html and "&lt;b&gt;x&lt;/b&gt;" in html, macro


async def test_pages_hand_javascript_the_display_rules_python_uses(console: Console) -> None:
    from pathlib import Path

    from agent_console import display

    await login(console.client, "admin1")
    for path in ("/", "/agents"):
        html = await (await console.client.get(path)).text()
        assert _display_rules_of(html) == display.rules(), path
        assert 'src="/static/display.js' in html
    # The scripts keep no copies of their own: no label or format of the rules is written in them.
    static = Path(display.__file__).parent / "static"
    rules = display.rules()
    texts = [rules["empty"], rules["list_separator"], rules["datetime_format"], rules["time_format"],
             rules["paused_state_label"], *(rule["text"] for rule in rules["pending_rules"])]
    for labels in ("live_state_labels", "agent_state_labels", "agent_action_labels"):
        texts += [label for key, label in rules[labels].items() if label != key]
    for script in static.glob("*.js"):
        source = script.read_text(encoding="utf-8")
        for text in texts:
            assert f'"{text}"' not in source and f"'{text}'" not in source, f"{script.name} has its own {text!r}"


NODE = "/usr/bin/node"


@pytest.mark.skipif(not os.path.exists(NODE), reason="needs node to run static/display.js")
def test_display_js_shows_what_python_shows() -> None:
    import json
    import subprocess
    from pathlib import Path

    from agent_console import display

    values = [None, "", [], ["1", "complaint"], "2026-11-29T09:30:05+00:00", "2026-11-29T23:59:59",
              "not a time", "connected", "ivr", "hold", 95, 95.7, "12", "abc", "text"]
    kinds = ["text", "notes", "list", "datetime", "time", "state", "seconds"]
    agents = [
        {"name": "agent1", "logged_in": logged_in, "paused": paused, "state": state, "pause_reason": reason,
         "live_pause_reason": live_reason, "skills": {"inquiries": 0, "complaints": 1} if logged_in else {},
         "display_name": "Kim", "state_since": since}
        for logged_in in (False, True) for paused in (False, True)
        for state in (None, "logged_out", "available", "paused", "on_call", "wrap_up", "some_new_state")
        for reason, live_reason, since in ((None, None, None), ("case_work", None, 1764400000.5),
                                           ("break", "meeting", "junk"))
    ]
    agents.append({"state": "available"})  # the row template's agent: no name, no controls
    script = f"""
        require({json.dumps(str(Path(display.__file__).parent / "static" / "display.js"))});
        const d = HotlineDisplay.create({json.dumps(display.rules())});
        const values = {json.dumps(values)}, kinds = {json.dumps(kinds)}, agents = {json.dumps(agents)};
        console.log(JSON.stringify({{
          fmt: values.map((v) => kinds.map((k) => d.fmt(v, k))),
          fields: agents.map((a) => d.agentFields(a)),
          actions: agents.map((a) => [...d.allowedActions(a)].sort()),
        }}));
    """
    done = subprocess.run([NODE, "-e", script], capture_output=True, text=True, timeout=30, check=True)
    shown = json.loads(done.stdout)
    assert shown["fmt"] == [[display.fmt(v, k) for k in kinds] for v in values]
    assert shown["fields"] == [display.agent_fields(a) for a in agents]
    assert shown["actions"] == [sorted(display.agent_actions(a)) for a in agents]
