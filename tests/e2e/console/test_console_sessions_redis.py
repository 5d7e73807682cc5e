"""Console sessions and the login throttle in the real Redis, shared by two console processes' apps.

Two apps on their own ports stand for two `hotline run` processes behind one address; the attacker's second
client connects from another loopback address (127.0.0.2)."""
from __future__ import annotations

import os
import uuid
from collections.abc import AsyncIterator
from dataclasses import dataclass
from typing import Any

import aiohttp
import pytest
import pytest_asyncio
import redis.asyncio as aioredis
from aiohttp.test_utils import TestServer
from sqlalchemy.ext.asyncio import create_async_engine

from agent_console.sessions import RedisSessionBackend
from agent_console.throttle import RedisFailureCounters
from identity import AccountStore, Role
from queueing import connect_redis
from tests.support.console import CHEAP_HASHER, PASSWORD, console_app, json_login
from tests.support.ports import module_ports

pytestmark = [pytest.mark.redis]

REDIS_URL = "redis://127.0.0.1:6379/0"
PORTS = (module_ports(__name__).spare(0), module_ports(__name__).spare(1))
COOKIE = "HOTLINE_CONSOLE"


@dataclass
class Deployment:
    urls: tuple[str, str]
    prefix: str
    redis: aioredis.Redis
    accounts: AccountStore


@pytest_asyncio.fixture(loop_scope="session")
async def deployment(tmp_path: Any) -> AsyncIterator[Deployment]:
    prefix = f"hotline-test-console-{os.getpid()}-{uuid.uuid4().hex[:8]}"
    engine = create_async_engine(f"sqlite+aiosqlite:///{tmp_path / 'console.db'}")
    accounts = AccountStore(engine, hasher=CHEAP_HASHER)
    await accounts.create_schema()
    await accounts.create("agent1", PASSWORD, Role.AGENT, sip_endpoint="agent1")
    key = os.urandom(32)  # both processes derive it from the same session_secret
    clients = [connect_redis(REDIS_URL) for _ in PORTS]
    servers = []
    for port, client in zip(PORTS, clients, strict=True):
        app = console_app(accounts, session_key=key, sessions=RedisSessionBackend(client, prefix=prefix),
                          login_failures=RedisFailureCounters(client, prefix=prefix))
        server = TestServer(app, host="127.0.0.1", port=port)
        await server.start_server()
        servers.append(server)
    probe = aioredis.Redis.from_url(REDIS_URL, decode_responses=True)
    try:
        yield Deployment((f"http://127.0.0.1:{PORTS[0]}", f"http://127.0.0.1:{PORTS[1]}"), prefix, probe, accounts)
    finally:
        for server in servers:
            await server.close()
        keys = [k async for k in probe.scan_iter(f"{prefix}:*")]
        if keys:
            await probe.delete(*keys)
        await probe.aclose()
        for client in clients:
            await client.aclose()
        await engine.dispose()


def browser(source: str = "127.0.0.1", *, cookies: bool = True) -> aiohttp.ClientSession:
    jar: aiohttp.abc.AbstractCookieJar = aiohttp.CookieJar(unsafe=True) if cookies else aiohttp.DummyCookieJar()
    return aiohttp.ClientSession(connector=aiohttp.TCPConnector(local_addr=(source, 0)), cookie_jar=jar,
                                 timeout=aiohttp.ClientTimeout(total=15))


def cookie_of(http: aiohttp.ClientSession) -> str:
    return next(c.value for c in http.cookie_jar if c.key == COOKIE)


async def session_keys(d: Deployment) -> list[str]:
    return [k async for k in d.redis.scan_iter(f"{d.prefix}:console:session:*")]


async def test_copied_cookie_is_refused_by_every_process_after_logout(deployment: Deployment) -> None:
    a, b = deployment.urls
    async with browser() as victim, browser("127.0.0.2", cookies=False) as attacker:
        status, body, _ = await json_login(victim, "agent1", base_url=a)
        assert status == 200
        cookie, csrf = cookie_of(victim), body["csrf_token"]
        stolen = {"Cookie": f"{COOKIE}={cookie}", "X-CSRF-Token": csrf}
        async with attacker.get(b + "/api/me", headers=stolen) as resp:
            assert resp.status == 200, "the other process must see the session while it lives"
        keys = await session_keys(deployment)
        assert len(keys) == 1 and cookie not in keys[0], "Redis holds a keyed hash of the token, not the token"
        assert await deployment.redis.ttl(keys[0]) > 3600

        async with victim.post(a + "/logout", json={}, headers={"X-CSRF-Token": csrf}) as resp:
            assert resp.status == 200
        assert await session_keys(deployment) == []
        async with attacker.get(b + "/api/me", headers=stolen) as resp:
            assert resp.status == 401
        async with attacker.post(b + "/api/cases/1/notes", json={"note": "forged"}, headers=stolen) as resp:
            assert resp.status == 401
        async with attacker.post(b + "/logout", json={}, headers=stolen) as resp:
            assert resp.status == 401


async def test_sixth_wrong_password_is_429_from_a_second_address_and_process(deployment: Deployment) -> None:
    a, b = deployment.urls
    async with browser() as first, browser("127.0.0.2") as second:
        for _ in range(5):
            assert (await json_login(first, "agent1", "wrong password", base_url=a))[0] == 401
        status, body, headers = await json_login(second, "agent1", "wrong password", base_url=b)
        assert status == 429, body
        assert 1 <= int(headers["Retry-After"]) <= 300
        assert (await json_login(second, "agent1", base_url=b))[0] == 429, "the right password waits too"
        counters = [k async for k in deployment.redis.scan_iter(f"{deployment.prefix}:console:login-failures:*")]
        assert any(k.endswith("address:127.0.0.1") for k in counters)
        assert not any("agent1" in k for k in counters), "what was typed as a username is not a Redis key"
        ttls = [await deployment.redis.ttl(k) for k in counters]
        assert ttls and all(0 < ttl <= 300 for ttl in ttls), ttls


async def test_password_change_in_one_process_ends_sessions_in_the_other(deployment: Deployment) -> None:
    a, b = deployment.urls
    async with browser() as laptop, browser("127.0.0.2") as phone:
        _, body, _ = await json_login(laptop, "agent1", base_url=a)
        await json_login(phone, "agent1", base_url=b)
        assert len(await session_keys(deployment)) == 2
        async with laptop.post(a + "/api/me/password", headers={"X-CSRF-Token": body["csrf_token"]},
                               json={"current_password": PASSWORD, "new_password": "a new long password"}) as resp:
            assert resp.status == 200, await resp.text()
        async with phone.get(b + "/api/me") as resp:
            assert resp.status == 401
        async with laptop.get(b + "/api/me") as resp:
            assert resp.status == 200, "the changer's fresh session works in every process"
        assert len(await session_keys(deployment)) == 1
