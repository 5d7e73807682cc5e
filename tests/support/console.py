"""The console's test helpers: a cheap password hasher, logging in through the form, a health check to change."""
from __future__ import annotations

import re
from typing import Any

from aiohttp.test_utils import TestClient
from argon2 import PasswordHasher

PASSWORD = "correct horse battery"
CHEAP_HASHER = PasswordHasher(time_cost=1, memory_cost=1024, parallelism=1)  # fast tests, same code path


class FakeHealth:
    """Health callable whose report the test changes; async like the real one may be."""

    def __init__(self) -> None:
        self.report: dict[str, Any] = {"ok": True, "components": {"ami": {"ok": True, "reconnects": 0}}}

    async def __call__(self) -> dict[str, Any]:
        return self.report


async def login_csrf(client: TestClient) -> str:
    """The CSRF token of the login form (an anonymous session's token)."""
    resp = await client.get("/login")
    assert resp.status == 200
    match = re.search(r'name="csrf_token" value="([^"]+)"', await resp.text())
    assert match, "login form has no CSRF token"
    return match.group(1)


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
