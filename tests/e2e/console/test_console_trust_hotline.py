"""The console's trust rules against a real `hotline run` (Asterisk, Redis, SQLite, Vosk), as an attacker on the
same machine would try them: read /healthz, replay a cookie after logout, guess passwords from two addresses,
bounce a login to another site; then nothing secret is in what the hotline logged or printed."""
from __future__ import annotations

import re
from collections.abc import AsyncIterator
from typing import Any

import aiohttp
import pytest
import pytest_asyncio

from tests.support.console import json_login
from tests.support.hotline_process import PROJECT_ROOT, HotlineUnderTest, run_hotline_command, running_hotline
from tests.support.ports import module_ports

pytestmark = [pytest.mark.asterisk, pytest.mark.vosk, pytest.mark.redis]

PORTS = module_ports(__name__)
COOKIE = "HOTLINE_CONSOLE"
WRONG_PASSWORD = "guessed-Wrong-Password-42"


class Seen:
    """Values the test handled that must never show in a log: cookies and CSRF tokens."""

    def __init__(self) -> None:
        self.values: set[str] = set()


@pytest_asyncio.fixture(scope="module", loop_scope="session")
async def hotline() -> AsyncIterator[HotlineUnderTest]:
    h = HotlineUnderTest(PROJECT_ROOT / "var" / "test-console-trust", ports=PORTS)
    async with running_hotline(h):
        yield h


@pytest.fixture(scope="module")
def seen() -> Seen:
    return Seen()


def browser(source: str = "127.0.0.1", *, cookies: bool = True) -> aiohttp.ClientSession:
    jar: aiohttp.abc.AbstractCookieJar = aiohttp.CookieJar(unsafe=True) if cookies else aiohttp.DummyCookieJar()
    return aiohttp.ClientSession(connector=aiohttp.TCPConnector(local_addr=(source, 0)), cookie_jar=jar,
                                 timeout=aiohttp.ClientTimeout(total=15))


def cookie_of(http: aiohttp.ClientSession) -> str:
    return next(c.value for c in http.cookie_jar if c.key == COOKIE)


async def test_public_healthz_tells_only_ok(hotline: HotlineUnderTest) -> None:
    settings = hotline.settings()
    async with browser(cookies=False) as anyone:
        async with anyone.get(hotline.http_url + "/healthz") as resp:
            assert resp.status == 200
            text = await resp.text()
        assert (await resp.json()) == {"status": "ok"}
        for detail in ("pid", "127.0.0.1", "model", str(settings.run_dir)):
            assert detail not in text
        async with anyone.get(hotline.http_url + "/admin/health", headers={"Accept": "application/json"}) as resp:
            assert resp.status == 401
        async with anyone.get(hotline.http_url + "/admin/health", allow_redirects=False) as resp:
            assert resp.status == 302 and resp.headers["Location"].startswith("/login")
    detail = await hotline.health()  # logged in as admin
    assert detail is not None and detail["ok"] is True
    assert isinstance(detail["components"]["asterisk"]["pid"], int)


async def test_copied_cookie_is_refused_after_logout(hotline: HotlineUnderTest, seen: Seen) -> None:
    url = hotline.http_url
    password = hotline.settings().admin_password
    assert password
    async with browser() as victim, browser("127.0.0.2", cookies=False) as attacker:
        status, body, _ = await json_login(victim, "admin", password, base_url=url)
        assert status == 200, body
        cookie, csrf = cookie_of(victim), body["csrf_token"]
        seen.values |= {cookie, csrf}
        stolen = {"Cookie": f"{COOKIE}={cookie}", "X-CSRF-Token": csrf, "Accept": "application/json"}
        async with attacker.get(url + "/api/accounts", headers=stolen) as resp:
            assert resp.status == 200
        async with victim.post(url + "/logout", json={}, headers={"X-CSRF-Token": csrf}) as resp:
            assert resp.status == 200
        async with attacker.get(url + "/api/accounts", headers=stolen) as resp:
            assert resp.status == 401
        async with attacker.post(url + "/api/accounts", headers=stolen,
                                 json={"username": "mallory", "password": "mallory's pw", "role": "admin"}) as resp:
            assert resp.status == 401, "the CSRF token died with the session"
        async with attacker.get(url + "/", headers={"Cookie": stolen["Cookie"]}, allow_redirects=False) as resp:
            assert resp.status == 302 and resp.headers["Location"] == "/login"


async def test_sixth_wrong_password_is_429_even_from_a_second_address(hotline: HotlineUnderTest) -> None:
    url = hotline.http_url
    agent_password = hotline.settings().agents[0].password
    async with browser() as first, browser("127.0.0.2") as second:
        for _ in range(5):
            assert (await json_login(first, "agent1", WRONG_PASSWORD, base_url=url))[0] == 401
        status, body, headers = await json_login(second, "agent1", WRONG_PASSWORD, base_url=url)
        assert status == 429 and body["error"].startswith("too many failed logins"), body
        assert 1 <= int(headers["Retry-After"]) <= 300
        assert agent_password
        assert (await json_login(second, "agent1", agent_password, base_url=url))[0] == 429


async def test_login_does_not_bounce_to_another_site(hotline: HotlineUnderTest, seen: Seen) -> None:
    url = hotline.http_url
    password = hotline.settings().admin_password
    async with browser() as http:
        for target in ("/\t/example.com", "//example.com", "https://evil.example/", "/\\evil.example"):
            async with http.get(url + "/login") as resp:
                token = re.search(r'name="csrf_token" value="([^"]+)"', await resp.text())
            assert token
            seen.values.add(token.group(1))
            async with http.post(url + "/login", allow_redirects=False, data={
                    "username": "admin", "password": password, "csrf_token": token.group(1), "next": target}) as resp:
                assert resp.status == 303 and resp.headers["Location"] == "/", target
            seen.values.add(cookie_of(http))
            async with http.get(url + "/api/me") as resp:
                csrf = (await resp.json())["csrf_token"]
            async with http.post(url + "/logout", json={}, headers={"X-CSRF-Token": csrf}) as resp:
                assert resp.status == 200


async def test_no_secret_in_the_log_or_the_command_output(hotline: HotlineUnderTest, seen: Seen) -> None:
    settings = hotline.settings()
    secrets: dict[str, Any] = {
        "admin password": settings.admin_password,
        "AMI secret": settings.ami_secret,
        "session secret": settings.session_secret,
        "a wrong password typed at login": WRONG_PASSWORD,
        **{f"password of {a.name}": a.password for a in settings.agents},
        **{f"cookie or CSRF token #{i}": v for i, v in enumerate(sorted(seen.values))},
    }
    assert all(secrets.values()) and len(seen.values) >= 4
    code, out, err = await run_hotline_command(["cases", "list"], hotline.env)
    assert code == 0, err
    log = hotline.log_path.read_text(errors="replace")
    assert "12345 hotline is running" in log and "console login: admin" in log, "the log is the one written"
    assert "refused: too many failed attempts" in log
    for where, text in (("hotline run's log", log), ("hotline cases list", out + err)):
        leaked = [name for name, value in secrets.items() if value in text]
        assert not leaked, f"{where} shows: {', '.join(leaked)}"
