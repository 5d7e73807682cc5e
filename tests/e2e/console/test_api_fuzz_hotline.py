"""A sample of the generated bad console requests sent to a real `hotline run` (Asterisk, Redis sessions, SQLite,
Vosk) as a logged-in admin with CSRF: every answer is a 4xx with a one-line error, never a 5xx, a traceback or a
hang; the hotline logs no failure of its own and is still healthy afterwards."""
from __future__ import annotations

from collections.abc import AsyncIterator
from dataclasses import dataclass

import aiohttp
import pytest
import pytest_asyncio
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from yarl import URL

from tests.support.api_fuzz import (
    FuzzRequest,
    RawRequest,
    bad_body_requests,
    bad_flow_yaml_requests,
    bad_path_requests,
    bad_query_requests,
    check_answer,
    odd_method_requests,
    raw_header_requests,
    send,
    send_raw,
)
from tests.support.console import json_login
from tests.support.hotline_process import PROJECT_ROOT, HotlineUnderTest, running_hotline
from tests.support.ports import module_ports

pytestmark = [pytest.mark.asterisk, pytest.mark.vosk, pytest.mark.redis]

PORTS = module_ports(__name__)


@dataclass
class Admin:
    """A logged-in admin session on the real console."""

    hotline: HotlineUnderTest
    http: aiohttp.ClientSession
    csrf: str

    def __repr__(self) -> str:
        return "Admin(admin)"


@pytest_asyncio.fixture(scope="module", loop_scope="session")
async def admin() -> AsyncIterator[Admin]:
    hotline = HotlineUnderTest(PROJECT_ROOT / "var" / "test-api-fuzz", ports=PORTS)
    async with running_hotline(hotline):
        async with aiohttp.ClientSession(cookie_jar=aiohttp.CookieJar(unsafe=True)) as http:
            status, body, _ = await json_login(http, "admin", hotline.settings().admin_password or "",
                                               base_url=hotline.http_url)
            assert status == 200, body
            yield Admin(hotline, http, body["csrf_token"])


@given(request=st.one_of(bad_path_requests(), bad_query_requests(), bad_body_requests(), odd_method_requests(),
                         bad_flow_yaml_requests(), raw_header_requests()))
@settings(max_examples=150, deadline=None, derandomize=True, database=None,
          suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large,
                                 HealthCheck.function_scoped_fixture])
async def test_generated_bad_requests_get_one_line_refusals(admin: Admin, request: FuzzRequest | RawRequest) -> None:
    if isinstance(request, RawRequest):
        cookie = next(f"{c.key}={c.value}" for c in admin.http.cookie_jar if c.key == "HOTLINE_CONSOLE")
        url = URL(admin.hotline.http_url)
        answer = await send_raw(str(url.host), int(url.port or 80), request, admin.csrf, cookie)
    else:
        answer = await send(admin.http, admin.hotline.http_url, request, admin.csrf)
    check_answer(request, answer)


async def test_the_hotline_logged_no_failure_and_is_healthy(admin: Admin) -> None:
    """After the fuzz: still ok, the admin session still works, nothing failed inside the console."""
    assert await admin.hotline.public_health() == {"status": "ok"}
    async with admin.http.get(admin.hotline.http_url + "/api/me") as resp:
        assert resp.status == 200
    log = admin.hotline.log_path.read_text(errors="replace")
    failures = [line for line in log.splitlines() if "console API" in line and "failed" in line]
    assert failures == [], failures[:5]
    assert "Traceback" not in log, admin.hotline.log_tail(60)
