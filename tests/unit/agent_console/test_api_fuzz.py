"""The console API fuzzed with generated bad input (Hypothesis): wrong JSON types, huge strings, control characters,
missing/extra fields, deep JSON, NaN/1e999/huge numbers, bad path parameters and query strings, wrong content types,
oversized bodies. Every answer is a 4xx with a one-line error, never a 5xx, a traceback or a hang.

The console app is built as `hotline run` builds it, over the real stores on a migrated SQLite database; only Asterisk
(AMI), the live state (Redis) and prompt synthesis are small fakes. Bounded and derandomized so CI repeats it."""
from __future__ import annotations

import asyncio
import os
from collections.abc import AsyncIterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest
import pytest_asyncio
from aiohttp.test_utils import TestClient, TestServer
from argon2 import PasswordHasher
from hypothesis import HealthCheck, example, given, settings
from hypothesis import strategies as st
from yarl import URL

from agent_console import create_console_app, describe_routes
from agent_console.flow_views import FLOW_ADMIN
from agent_console.queue_views import METRICS_TOKEN, QUEUE_CONSOLE
from agent_console.transcript_views import TRANSCRIPT_JOBS
from cases import CaseStore, CaseStoreError
from identity import AccountStore, Role
from ivr import FlowValidator
from ivr.flow_admin import FlowAdmin
from ivr.flow_store import FlowStore
from queueing import AgentService, AgentStore, QueueConsole, QueueMetricsStore
from queueing.records import CallRecordStore
from storage import create_engine_from_url, migrate_database
from tests.support.api_fuzz import (
    FUZZED_ROUTES,
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
from tests.support.hotline_process import PROJECT_ROOT

PASSWORD = "correct horse battery"
CHEAP_HASHER = PasswordHasher(time_cost=1, memory_cost=1024, parallelism=1)  # fast tests, same code path
QUEUES = ["complaints", "inquiries", "operator"]
DEFAULT_FLOW = PROJECT_ROOT / "config" / "ivr" / "default.yaml"
FUZZ = settings(max_examples=200, deadline=None, derandomize=True, database=None,
                suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large,
                                       HealthCheck.function_scoped_fixture])


class FakeAmi:
    """Asterisk accepting every queue action."""

    async def action(self, fields: dict[str, Any], *, timeout: float | None = None, as_list: bool | None = None,
                     check: bool = True) -> Any:
        return {"Response": "Success"}

    async def event_list(self, fields: dict[str, Any], *, timeout: float | None = None) -> list[Any]:
        return []


class FakeQueueLive:
    """The Redis side of the queue console: nobody waiting, no agent state."""

    async def waiting(self, queue: str) -> list[dict[str, Any]]:
        return []

    async def counters(self, queue: str) -> dict[str, int]:
        return {}

    async def agents(self) -> list[dict[str, Any]]:
        return []


class NoLiveCalls:
    """No call in progress."""

    async def list_calls(self) -> list[dict[str, Any]]:
        return []

    async def get_call(self, linkedid: str) -> dict[str, Any] | None:
        return None


class SilentPrompts:
    """Prompt synthesis that has nothing to do."""

    async def prepare(self) -> None:
        pass

    def path(self, ref: str, language: str) -> str:
        return f"/{language}/{ref}"


class Vocabulary:
    """A model knowing a few Korean words."""

    def missing(self, words: Any) -> list[str]:
        return [w for w in words if w not in {"버스", "상담원"}]


async def healthy() -> dict[str, Any]:
    return {"ok": True, "components": {}}


@dataclass
class Console:
    client: TestClient
    csrf: str

    def __repr__(self) -> str:
        return "Console(admin1)"

    async def answer(self, request: FuzzRequest) -> None:
        """Send one generated request as the logged-in admin and check what comes back."""
        check_answer(request, await send(self.client.session, str(self.client.make_url("")).rstrip("/"), request,
                                         self.csrf))


@pytest_asyncio.fixture(scope="module", loop_scope="session")
async def console(tmp_path_factory: pytest.TempPathFactory) -> AsyncIterator[Console]:
    folder: Path = tmp_path_factory.mktemp("console-fuzz")
    url = f"sqlite+aiosqlite:///{folder / 'hotline.db'}"
    await asyncio.get_running_loop().run_in_executor(None, migrate_database, url)
    engine = create_engine_from_url(url)
    accounts = AccountStore(engine, hasher=CHEAP_HASHER)
    await accounts.create("admin1", PASSWORD, Role.ADMIN)
    agents = AgentStore(engine, QUEUES)
    await agents.add("agent1", {"complaints": 0})
    app = create_console_app(cases=CaseStore(engine), live_calls=NoLiveCalls(), call_records=CallRecordStore(engine),
                             accounts=accounts, health=healthy, session_key=os.urandom(32),
                             bad_input_errors=(CaseStoreError,))
    validator = FlowValidator(vocabulary_for=lambda lang, model: Vocabulary() if model == "default" else None,
                              queues=QUEUES, base_dir=DEFAULT_FLOW.parent)
    app[FLOW_ADMIN] = FlowAdmin(FlowStore(engine), validator, lambda _doc: SilentPrompts(), DEFAULT_FLOW,
                                numbers={"12345": "default"})
    app[QUEUE_CONSOLE] = QueueConsole(AgentService(agents, FakeAmi(), None), FakeQueueLive(),  # type: ignore[arg-type]
                                      QueueMetricsStore(engine), QUEUES)
    app[METRICS_TOKEN] = None
    from transcripts import TranscriptionJobStore

    app[TRANSCRIPT_JOBS] = TranscriptionJobStore(engine)
    client = TestClient(TestServer(app))
    await client.start_server()
    try:
        async with client.get("/login") as resp:
            text = await resp.text()
        token = text.split('name="csrf_token" value="', 1)[1].split('"', 1)[0]
        async with client.post("/login", json={"username": "admin1", "password": PASSWORD},
                               headers={"X-CSRF-Token": token}) as resp:
            assert resp.status == 200, await resp.text()
            csrf = (await resp.json())["csrf_token"]
        yield Console(client, csrf)
    finally:
        await client.close()
        await engine.dispose()


async def _still_logged_in(console: Console) -> None:
    async with console.client.get("/api/me") as resp:
        assert resp.status == 200, "the fuzz lost the admin session: later examples would test only the login check"


def test_every_route_of_the_console_is_fuzzed(console: Console) -> None:
    table = {(r["method"], r["path"]) for r in describe_routes(console.client.app) if r["method"] != "HEAD"
             and not str(r["path"]).startswith("/static")}
    assert table - FUZZED_ROUTES == set(), "new routes: add them to tests/support/api_fuzz.py"
    assert FUZZED_ROUTES - table == set(), "routes that are gone: remove them from tests/support/api_fuzz.py"


# Found by this fuzz (each was a 500 before the fix):
@example(FuzzRequest("GET", "/api/flows/default?version=" + "9" * 25))  # OverflowError binding to SQLite
@example(FuzzRequest("GET", "/api/flows/default?version=-" + "9" * 25))
@example(FuzzRequest("GET", "/api/flows/" + "%ff%fe"))
@given(request=bad_path_requests())
@FUZZ
async def test_bad_path_parameters(console: Console, request: FuzzRequest) -> None:
    await console.answer(request)


@example(FuzzRequest("GET", "/api/queues/metrics?since=0001-01-01T00:00:00%2B14:00"))  # OverflowError in UTC
@example(FuzzRequest("GET", "/api/cases?limit=" + "9" * 5000))
@given(request=bad_query_requests())
@FUZZ
async def test_bad_query_strings(console: Console, request: FuzzRequest) -> None:
    await console.answer(request)


@example(FuzzRequest("POST", "/api/cases/2611290001/notes", b"[" * 5000 + b"]" * 5000, "application/json"))
@example(FuzzRequest("POST", "/api/flows/validate", b"[" * 5000 + b"]" * 5000, "application/json"))
@example(FuzzRequest("POST", "/api/agents/agent1/pause", b"[" * 5000 + b"]" * 5000, "application/json"))
@example(FuzzRequest("POST", "/api/accounts", b'{"username": ' + b"1" * 5000 + b"}", "application/json"))
@example(FuzzRequest("POST", "/api/flows/validate", b'{"yaml": "\\ud800"}', "application/json"))
@example(FuzzRequest("POST", "/api/flows/default/rollback", b'{"version": ' + b"9" * 25 + b"}", "application/json"))
@example(FuzzRequest("POST", "/api/flows/default/rollback", b'{"version": 1e999}', "application/json"))
@example(FuzzRequest("POST", "/api/cases/2611290001/notes", b'{"note": "x"}', "application/json; charset=nope"))
@example(FuzzRequest("POST", "/api/accounts", b"username=a", "application/x-www-form-urlencoded; charset=nope"))
@example(FuzzRequest("POST", "/api/accounts", b'{"username": "ab", "password": "long enough", "role": "agent", '
                                               b'"display_name": ["x"]}', "application/json"))
@example(FuzzRequest("POST", "/api/agents/agent1/pause", b"\xff", "multipart/form-data; boundary="))
@example(FuzzRequest("POST", "/api/cases/2611290001/notes", b"x" * 2_000_000, "application/json"))
@given(request=bad_body_requests())
@FUZZ
async def test_bad_bodies(console: Console, request: FuzzRequest) -> None:
    await console.answer(request)
    await _still_logged_in(console)


@given(request=odd_method_requests())
@settings(max_examples=80, deadline=None, derandomize=True, database=None,
          suppress_health_check=[HealthCheck.function_scoped_fixture])
async def test_odd_methods_and_oversized_requests(console: Console, request: FuzzRequest) -> None:
    await console.answer(request)


@example(RawRequest("GET", "/login", ((b"Cookie", b"HOTLINE_CONSOLE=" + b"a" * 100 + b"\xc3"),)))  # 500: token.encode()
@example(RawRequest("POST", "/api/cases/2611290001/notes", ((b"X-CSRF-Token", b"\xff\xfe"),), b'{"note": "x"}'))
@given(request=raw_header_requests())
@settings(max_examples=120, deadline=None, derandomize=True, database=None,
          suppress_health_check=[HealthCheck.function_scoped_fixture])
async def test_headers_of_arbitrary_bytes(console: Console, request: RawRequest) -> None:
    cookie = next(f"{c.key}={c.value}" for c in console.client.session.cookie_jar if c.key == "HOTLINE_CONSOLE")
    server = console.client.server
    check_answer(request, await send_raw(str(server.host), int(server.port or 0), request, console.csrf, cookie))
    await _still_logged_in(console)


@given(request=bad_flow_yaml_requests())
@FUZZ
async def test_malformed_flows_through_the_api(console: Console, request: FuzzRequest) -> None:
    await console.answer(request)


@given(request=st.sampled_from(sorted(FUZZED_ROUTES)).map(
    lambda mr: FuzzRequest(mr[0], mr[1].format(case_number="x", name="x", action="x"), b"{}", "application/json",
                           headers={"X-CSRF-Token": "wrong"}, may_succeed=mr[0] == "GET")))
@settings(max_examples=40, deadline=None, derandomize=True, database=None,
          suppress_health_check=[HealthCheck.function_scoped_fixture])
async def test_a_wrong_csrf_token_is_refused_in_one_line(console: Console, request: FuzzRequest) -> None:
    await console.answer(request)


async def test_a_one_line_error_names_the_problem(console: Console) -> None:
    """What the fixes answer, as a user reads it."""
    client, headers = console.client, {"X-CSRF-Token": console.csrf}
    answers = []
    for method, path, body, content_type in (
        ("GET", "/api/flows/default?version=" + "9" * 25, None, None),
        ("GET", "/api/flows/Bad%20Name/versions", None, None),
        ("POST", "/api/flows/validate", b"[" * 5000 + b"]" * 5000, "application/json"),
        ("POST", "/api/flows/validate", b'{"yaml": "\\ud800"}', "application/json"),
        ("POST", "/api/cases/2611290001/notes", b'{"note": ' + b"1" * 5000 + b"}", "application/json"),
        ("POST", "/api/cases/2611290001/notes", b'{"note": "x"}', "application/json; charset=nope"),
        ("POST", "/api/agents/agent1/pause", b"[" * 5000 + b"]" * 5000, "application/json"),
        ("GET", "/api/queues/metrics?since=0001-01-01T00:00:00%2B14:00", None, None),
        ("GET", "/api/queues/metrics?since=2026-11-29T09:30:00%2B00:00%00", None, None),
    ):
        async with client.request(method, URL(path, encoded=True), data=body, headers={
                **headers, **({"Content-Type": content_type} if content_type else {})}) as resp:
            answers.append((resp.status, (await resp.json())["error"]))
    assert answers == [
        (400, "version: 0 (the shipped file) or a published version number"),
        (400, "flow name: lower-case letters, digits, - and _ (at most 64)"),
        (400, "the body must be JSON: nested too deeply"),
        (400, "the body must be JSON: text must be valid Unicode (no lone surrogate escapes)"),
        (400, "body: a number has too many digits"),
        (400, "body: unknown charset 'nope'"),
        (400, "body: nested too deeply"),
        (400, "since: out of range"),
        (400, "since: not an ISO 8601 time"),
    ]
