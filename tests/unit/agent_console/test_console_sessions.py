"""Console sessions and logins under attack: replayed cookies, password guessing, open redirects, cookie flags.

The real console app with its in-memory session and counter stores (the Redis ones: tests/e2e/console)."""
from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from typing import Any

import pytest
from aiohttp import DummyCookieJar, web
from aiohttp.test_utils import TestClient, TestServer
from sqlalchemy.ext.asyncio import create_async_engine

from agent_console.sessions import ConsoleStoreUnavailable, MemorySessionBackend
from agent_console.throttle import ThrottleLimits
from identity import AccountStore, Role
from tests.support.console import CHEAP_HASHER, PASSWORD, console_app, form_csrf, json_login

COOKIE = "HOTLINE_CONSOLE"


@pytest.fixture
async def store(tmp_path: Any) -> AsyncIterator[AccountStore]:
    engine = create_async_engine(f"sqlite+aiosqlite:///{tmp_path / 'console.db'}")
    accounts = AccountStore(engine, hasher=CHEAP_HASHER)
    await accounts.create_schema()
    await accounts.create("agent1", PASSWORD, Role.AGENT, sip_endpoint="agent1")
    await accounts.create("agent2", PASSWORD, Role.AGENT, sip_endpoint="agent2")
    await accounts.create("admin1", PASSWORD, Role.ADMIN)
    await accounts.create("super1", PASSWORD, Role.SUPERVISOR)
    try:
        yield accounts
    finally:
        await engine.dispose()


async def client_of(app: web.Application, **kwargs: Any) -> TestClient:
    client = TestClient(TestServer(app), **kwargs)
    await client.start_server()
    return client


@pytest.fixture
async def app(store: AccountStore) -> web.Application:
    return console_app(store)


@pytest.fixture
async def clients(app: web.Application) -> AsyncIterator[list[TestClient]]:
    made: list[TestClient] = []
    yield made
    for client in made:
        await client.close()


async def new_client(app: web.Application, clients: list[TestClient], **kwargs: Any) -> TestClient:
    client = await client_of(app, **kwargs)
    clients.append(client)
    return client


def session_cookie(client: TestClient) -> str:
    values = [c.value for c in client.session.cookie_jar if c.key == COOKIE]
    assert len(values) == 1, values
    return values[0]


async def replay(attacker: TestClient, cookie: str, csrf: str) -> tuple[int, int]:
    """(GET /api/me, POST a note) statuses with a copied cookie and CSRF token."""
    headers = {"Cookie": f"{COOKIE}={cookie}", "X-CSRF-Token": csrf}
    me = await attacker.get("/api/me", headers=headers)
    note = await attacker.post("/api/cases/2611290001/notes", json={"note": "forged"}, headers=headers)
    return me.status, note.status


# --- sessions end for real ------------------------------------------------------------------------


async def test_copied_cookie_is_refused_after_logout(app: web.Application, clients: list[TestClient]) -> None:
    victim = await new_client(app, clients)
    status, body, _ = await json_login(victim, "agent1")
    assert status == 200
    cookie, csrf = session_cookie(victim), body["csrf_token"]
    attacker = await new_client(app, clients, cookie_jar=DummyCookieJar())
    assert await replay(attacker, cookie, csrf) == (200, 404)  # the copy works while the session lives (no case)

    resp = await victim.post("/logout", json={}, headers={"X-CSRF-Token": csrf})
    assert resp.status == 200
    assert await replay(attacker, cookie, csrf) == (401, 401)
    assert (await victim.get("/api/me")).status == 401


async def test_the_cookie_holds_no_session_data(app: web.Application, clients: list[TestClient]) -> None:
    client = await new_client(app, clients)
    status, body, _ = await json_login(client, "admin1")
    assert status == 200
    cookie = session_cookie(client)
    assert "admin1" not in cookie and body["csrf_token"] not in cookie and len(cookie) < 64
    # A made-up or tampered cookie is just no session.
    attacker = await new_client(app, clients, cookie_jar=DummyCookieJar())
    for forged in (cookie[:-1] + ("A" if cookie[-1] != "A" else "B"), "x" * 500, ""):
        resp = await attacker.get("/api/me", headers={"Cookie": f"{COOKIE}={forged}"})
        assert resp.status == 401


async def test_password_change_ends_every_session_of_the_account(app: web.Application, store: AccountStore,
                                                                clients: list[TestClient]) -> None:
    laptop, phone, other = [await new_client(app, clients) for _ in range(3)]
    _, body, _ = await json_login(laptop, "agent1")
    _, phone_body, _ = await json_login(phone, "agent1")
    _, other_body, _ = await json_login(other, "agent2")
    phone_cookie = session_cookie(phone)

    resp = await laptop.post("/api/me/password", json={"current_password": "wrong password",
                                                       "new_password": "a new long password"},
                             headers={"X-CSRF-Token": body["csrf_token"]})
    assert resp.status == 403 and (await resp.json()) == {"error": "current_password: wrong password"}
    resp = await laptop.post("/api/me/password", json={"current_password": PASSWORD, "new_password": "short"},
                             headers={"X-CSRF-Token": body["csrf_token"]})
    assert resp.status == 400 and "at least 8" in (await resp.json())["error"]

    resp = await laptop.post("/api/me/password", json={"current_password": PASSWORD,
                                                       "new_password": "a new long password"},
                             headers={"X-CSRF-Token": body["csrf_token"]})
    assert resp.status == 200, await resp.text()
    fresh_csrf = (await resp.json())["csrf_token"]
    assert fresh_csrf != body["csrf_token"]
    # The phone's session (and any copy of it) is gone; the laptop goes on with a new session and token.
    assert (await phone.get("/api/me")).status == 401
    attacker = await new_client(app, clients, cookie_jar=DummyCookieJar())
    assert await replay(attacker, phone_cookie, phone_body["csrf_token"]) == (401, 401)
    me = await laptop.get("/api/me")
    assert me.status == 200 and (await me.json())["csrf_token"] == fresh_csrf
    assert (await other.get("/api/me")).status == 200, "another account's session must stay"
    assert (await json_login(phone, "agent1"))[0] == 401
    assert (await json_login(phone, "agent1", "a new long password"))[0] == 200
    del other_body


async def test_admin_reset_and_a_change_elsewhere_end_the_sessions(app: web.Application, store: AccountStore,
                                                                  clients: list[TestClient]) -> None:
    admin, agent = await new_client(app, clients), await new_client(app, clients)
    _, admin_body, _ = await json_login(admin, "admin1")
    await json_login(agent, "agent1")
    csrf = {"X-CSRF-Token": admin_body["csrf_token"]}
    resp = await admin.post("/api/accounts/agent1/password", json={"password": "reset by the admin"}, headers=csrf)
    assert resp.status == 200 and (await resp.json())["sessions_ended"] == 1
    assert (await agent.get("/api/me")).status == 401
    resp = await admin.post("/api/accounts/nobody/password", json={"password": "reset by the admin"}, headers=csrf)
    assert resp.status == 404
    # The agent role may not reset passwords.
    _, agent_body, _ = await json_login(agent, "agent1", "reset by the admin")
    resp = await agent.post("/api/accounts/admin1/password", json={"password": "taken over now"},
                            headers={"X-CSRF-Token": agent_body["csrf_token"]})
    assert resp.status == 403
    # A password changed outside the console (another process, a script) voids sessions started before it.
    await store.set_password("agent1", "changed by a script")
    assert (await agent.get("/api/me")).status == 401


async def test_a_disabled_account_is_refused_on_every_route(app: web.Application, store: AccountStore,
                                                            clients: list[TestClient]) -> None:
    client = await new_client(app, clients)
    await json_login(client, "super1")
    assert (await client.get("/admin/health")).status == 200
    await store.set_active("super1", False)
    assert (await client.get("/admin/health", headers={"Accept": "application/json"})).status == 401


# --- password guessing ---------------------------------------------------------------------------


async def test_sixth_wrong_password_is_429_and_the_right_one_waits_too(app: web.Application,
                                                                       clients: list[TestClient]) -> None:
    client = await new_client(app, clients)
    for _ in range(5):
        assert (await json_login(client, "agent1", "wrong password"))[0] == 401
    status, body, headers = await json_login(client, "agent1", "wrong password")
    assert status == 429 and body["error"].startswith("too many failed logins")
    assert 1 <= int(headers["Retry-After"]) <= 300
    assert (await json_login(client, "AGENT1", PASSWORD))[0] == 429, "the lock must not be bypassed"
    # Another account from the same address is not locked by this one's failures (address limit is higher).
    assert (await json_login(client, "agent2"))[0] == 200


async def test_form_login_shows_the_lock(app: web.Application, clients: list[TestClient]) -> None:
    client = await new_client(app, clients)
    for attempt in range(6):
        token = await form_csrf(client)
        resp = await client.post("/login", data={"username": "agent1", "password": "wrong password",
                                                 "csrf_token": token}, allow_redirects=False)
        assert resp.status == (401 if attempt < 5 else 429)
    assert "Too many failed logins" in await resp.text() and int(resp.headers["Retry-After"]) > 0


async def test_success_resets_the_account_count(app: web.Application, clients: list[TestClient]) -> None:
    client = await new_client(app, clients)
    for _ in range(4):
        assert (await json_login(client, "agent1", "wrong password"))[0] == 401
    assert (await json_login(client, "agent1"))[0] == 200
    for _ in range(4):
        assert (await json_login(client, "agent1", "wrong password"))[0] == 401
    assert (await json_login(client, "agent1"))[0] == 200


async def test_one_address_guessing_many_accounts_is_stopped(store: AccountStore) -> None:
    app = console_app(store, login_limits=ThrottleLimits(max_failures=5, address_max_failures=8, window_seconds=60))
    async with TestClient(TestServer(app)) as client:
        names = ["agent1", "agent2", "admin1", "super1", "nobody"]
        statuses = [(await json_login(client, names[i % 5], "wrong password"))[0] for i in range(9)]
        assert statuses == [401] * 8 + [429]
        # A right password from that address waits as well, and a success does not reset the address.
        assert (await json_login(client, "super1"))[0] == 429


async def test_the_window_ends(store: AccountStore) -> None:
    app = console_app(store, login_limits=ThrottleLimits(max_failures=2, address_max_failures=10, window_seconds=1))
    async with TestClient(TestServer(app)) as client:
        assert [(await json_login(client, "agent1", "wrong password"))[0] for _ in range(3)] == [401, 401, 429]
        await asyncio.sleep(1.1)
        assert (await json_login(client, "agent1"))[0] == 200


async def test_password_change_is_throttled_like_login(app: web.Application, clients: list[TestClient]) -> None:
    client = await new_client(app, clients)
    _, body, _ = await json_login(client, "agent1")
    headers = {"X-CSRF-Token": body["csrf_token"]}
    statuses = []
    for _ in range(6):
        resp = await client.post("/api/me/password", json={"current_password": "guess guess",
                                                           "new_password": "a new long password"}, headers=headers)
        statuses.append(resp.status)
    assert statuses == [403] * 5 + [429] and int(resp.headers["Retry-After"]) > 0


# --- where a login sends you ----------------------------------------------------------------------

HOSTILE_NEXT = ["/\t/example.com", "//example.com", "https://evil.example/", "/\\evil.example", "\\\\evil.example",
                "/\n/example.com", " //example.com", "javascript:alert(1)", "example.com", "http:/evil.example",
                "/%09/example.com".replace("%09", "\t"), "///example.com", "", "/" + "a" * 3000]


@pytest.mark.parametrize("target", HOSTILE_NEXT)
async def test_login_never_redirects_off_site(app: web.Application, clients: list[TestClient], target: str) -> None:
    client = await new_client(app, clients)
    token = await form_csrf(client)
    resp = await client.post("/login", data={"username": "agent1", "password": PASSWORD, "csrf_token": token,
                                             "next": target}, allow_redirects=False)
    assert resp.status == 303 and resp.headers["Location"] == "/"


async def test_login_page_next_is_parsed_and_same_site_paths_are_kept(app: web.Application,
                                                                      clients: list[TestClient]) -> None:
    client = await new_client(app, clients)
    for query, expected in (("/%09/example.com", "/"), ("//example.com", "/"), ("https://evil", "/"),
                            ("/%5Cevil", "/"), ("/agents%3Fx%3D1%23top", "/agents?x=1#top")):
        html = await (await client.get(f"/login?next={query}")).text()
        assert f'name="next" value="{expected}"' in html, query
    await json_login(client, "agent1")
    for query, expected in (("/%09/example.com", "/"), ("//example.com", "/"), ("/agents", "/agents")):
        resp = await client.get(f"/login?next={query}", allow_redirects=False)
        assert resp.status == 302 and resp.headers["Location"] == expected


# --- cookie flags ---------------------------------------------------------------------------------


async def test_cookie_flags_follow_the_settings(store: AccountStore) -> None:
    for secure, samesite in ((False, "Lax"), (True, "Strict")):
        app = console_app(store, secure_cookies=secure, cookie_samesite=samesite)
        async with TestClient(TestServer(app)) as client:
            resp = await client.get("/login")
            header = resp.headers["Set-Cookie"]
            assert header.startswith(f"{COOKIE}=") and "HttpOnly" in header and f"SameSite={samesite}" in header
            assert ("Secure" in header.split(";", 1)[1]) is secure
    with pytest.raises(ValueError, match="cookie_samesite"):
        console_app(store, cookie_samesite="None")


# --- the store is down --------------------------------------------------------------------------


class DownBackend(MemorySessionBackend):
    """A session store that stops answering."""

    down = False

    async def load(self, sid: str) -> dict[str, Any] | None:
        if self.down:
            raise ConsoleStoreUnavailable("session store: no answer to load within 2 s")
        return await super().load(sid)


async def test_store_down_is_a_503_with_one_line(store: AccountStore) -> None:
    backend = DownBackend()
    app = console_app(store, sessions=backend)
    async with TestClient(TestServer(app)) as client:
        await json_login(client, "agent1")
        backend.down = True
        resp = await client.get("/api/me")
        assert resp.status == 503 and (await resp.json()) == {"error": "session store: no answer to load within 2 s"}
        assert (await client.get("/healthz")).status == 200, "the public health answer needs no session"
