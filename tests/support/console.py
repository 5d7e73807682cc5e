"""The console's test helpers: a console app over empty fakes of the other domains, a cheap password hasher,
logging in through the form (test client or a real session), a health check to change."""
from __future__ import annotations

import os
import re
from typing import Any

from aiohttp import ClientSession, web
from aiohttp.test_utils import TestClient
from argon2 import PasswordHasher

from agent_console import create_console_app
from identity import AccountStore

PASSWORD = "correct horse battery"
CHEAP_HASHER = PasswordHasher(time_cost=1, memory_cost=1024, parallelism=1)  # fast tests, same code path


class NoCases:
    """A cases service with no cases."""

    async def list_recent(self, limit: int = 50, status: str | None = None) -> list[Any]:
        return []

    async def get(self, case_number: str) -> Any:
        raise LookupError(case_number)

    async def events(self, case_number: str) -> list[Any]:
        raise LookupError(case_number)

    async def add_note(self, case_number: str, text: str, *, actor: str) -> Any:
        raise LookupError(case_number)


class NoCalls:
    """Live calls and call records: none."""

    async def list_calls(self) -> list[dict[str, Any]]:
        return []

    async def get_call(self, linkedid: str) -> dict[str, Any] | None:
        return None

    async def list_recent(self, limit: int = 50) -> list[Any]:
        return []


class SettableHealth:
    """A health check whose report the test sets."""

    def __init__(self) -> None:
        self.report: dict[str, Any] = {"ok": True, "components": {}}

    async def __call__(self) -> dict[str, Any]:
        return self.report


class FakeHealth:
    """Health callable whose report the test changes; async like the real one may be."""

    def __init__(self) -> None:
        self.report: dict[str, Any] = {"ok": True, "components": {"ami": {"ok": True, "reconnects": 0}}}

    async def __call__(self) -> dict[str, Any]:
        return self.report


def console_app(accounts: AccountStore, *, session_key: bytes | None = None, **options: Any) -> web.Application:
    """The real console app with empty domain fakes; options go to create_console_app."""
    calls = NoCalls()
    options.setdefault("health", SettableHealth())
    return create_console_app(cases=NoCases(), live_calls=calls, call_records=calls, accounts=accounts,
                              session_key=session_key or os.urandom(32), **options)


async def form_csrf(http: ClientSession, base_url: str = "") -> str:
    """The CSRF token of the login form (an anonymous session's token)."""
    async with http.get(base_url + "/login") as resp:
        assert resp.status == 200, resp.status
        match = re.search(r'name="csrf_token" value="([^"]+)"', await resp.text())
    assert match, "login form has no CSRF token"
    return match.group(1)


async def login_csrf(client: TestClient) -> str:
    """The CSRF token of the login form (an anonymous session's token)."""
    resp = await client.get("/login")
    assert resp.status == 200
    match = re.search(r'name="csrf_token" value="([^"]+)"', await resp.text())
    assert match, "login form has no CSRF token"
    return match.group(1)


async def json_login(http: ClientSession, username: str, password: str = PASSWORD,
                     base_url: str = "") -> tuple[int, dict[str, Any], dict[str, str]]:
    """POST /login as JSON with the form's CSRF token: (status, body, headers)."""
    token = await form_csrf(http, base_url)
    async with http.post(base_url + "/login", json={"username": username, "password": password},
                         headers={"X-CSRF-Token": token}) as resp:
        return resp.status, await resp.json(), dict(resp.headers)


async def login(client: TestClient, username: str, password: str = PASSWORD) -> str:
    """Log in through the form; return the session's CSRF token for API calls."""
    token = await login_csrf(client)
    resp = await client.post(
        "/login",
        data={"username": username, "password": password, "csrf_token": token},
        allow_redirects=False,
    )
    assert resp.status == 303, await resp.text()
    me = await client.get("/api/me")
    assert me.status == 200
    return str((await me.json())["csrf_token"])
