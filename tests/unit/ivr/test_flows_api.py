"""The admin flow API of the console: list, get, validate (errors as JSON + diagram), publish, roll back, audit;
admin only, CSRF on POST. Uses the real FlowStore on a migrated SQLite database."""
from __future__ import annotations

import asyncio
import os
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import pytest
import yaml
from aiohttp.test_utils import TestClient, TestServer

from agent_console import create_console_app
from agent_console.flow_views import FLOW_ADMIN
from identity import AccountStore, Role
from ivr import FlowValidator
from ivr.flow_admin import FlowAdmin
from ivr.flow_store import FlowStore
from storage import create_engine_from_url, migrate_database
from tests.support.cases import FakeCases
from tests.support.console import CHEAP_HASHER, PASSWORD, FakeHealth, login
from tests.support.flows import DEFAULT_FLOW, QUEUES, LangPrompts, base_flow, flow_to_queue, vocabulary_for
from tests.support.live import FakeLive
from tests.support.records import FakeRecords


class FlowConsole:
    def __init__(self, client: TestClient, store: FlowStore) -> None:
        self.client = client
        self.store = store


async def _console(tmp_path: Path, with_flows: bool = True) -> tuple[TestClient, FlowStore, Any]:
    url = f"sqlite+aiosqlite:///{tmp_path / 'console.db'}"
    await asyncio.get_running_loop().run_in_executor(None, migrate_database, url)
    engine = create_engine_from_url(url)
    accounts = AccountStore(engine, hasher=CHEAP_HASHER)
    await accounts.create("admin1", PASSWORD, Role.ADMIN, display_name="Admin")
    await accounts.create("super1", PASSWORD, Role.SUPERVISOR, display_name="Super")
    app = create_console_app(cases=FakeCases(), live_calls=FakeLive(), call_records=FakeRecords(),
                             accounts=accounts, health=FakeHealth(), session_key=os.urandom(32))
    store = FlowStore(engine)
    if with_flows:
        validator = FlowValidator(vocabulary_for=vocabulary_for, queues=QUEUES, base_dir=DEFAULT_FLOW.parent)
        app[FLOW_ADMIN] = FlowAdmin(store, validator, lambda _doc: LangPrompts(), DEFAULT_FLOW)
    client = TestClient(TestServer(app))
    await client.start_server()
    return client, store, engine


@pytest.fixture
async def flow_console(tmp_path: Path) -> AsyncIterator[FlowConsole]:
    client, store, engine = await _console(tmp_path)
    try:
        yield FlowConsole(client, store)
    finally:
        await client.close()
        await engine.dispose()


async def test_validate_returns_node_errors_as_json_with_a_diagram(flow_console: FlowConsole) -> None:
    c = flow_console.client
    csrf = await login(c, "admin1")
    flow = base_flow()
    flow["nodes"]["bus"]["next"] = "nowhere"
    flow["nodes"]["menu"]["options"][0]["keywords"]["ko"] = ["도로"]
    resp = await c.post("/api/flows/validate", json={"yaml": yaml.safe_dump(flow, allow_unicode=True)},
                        headers={"X-CSRF-Token": csrf})
    assert resp.status == 200
    report = await resp.json()
    assert report["ok"] is False
    assert {"node": "bus", "message": "next goes to missing node 'nowhere'",
            "text": "node 'bus': next goes to missing node 'nowhere'"} in report["errors"]
    assert any(e["node"] == "menu" and "'도로'" in e["message"] for e in report["errors"])
    svg = report["diagram_svg"]
    assert svg.startswith("<svg") and 'data-node="bus"' in svg and "node-error" in svg
    resp = await c.post("/api/flows/validate", json={"yaml": DEFAULT_FLOW.read_text(encoding="utf-8")},
                        headers={"X-CSRF-Token": csrf})
    report = await resp.json()
    assert report["ok"] is True and report["errors"] == [] and len(report["warnings"]) == 2
    resp = await c.post("/api/flows/validate", json={"nope": 1}, headers={"X-CSRF-Token": csrf})
    assert resp.status == 400 and "yaml" in (await resp.json())["error"]


async def test_publish_rollback_audit_and_listing(flow_console: FlowConsole) -> None:
    c = flow_console.client
    csrf = await login(c, "admin1")
    listed = await (await c.get("/api/flows")).json()
    assert listed["flows"] == [{"name": "default", "live_version": 0, "live": True, "shipped_file": str(DEFAULT_FLOW)}]
    shipped = await (await c.get("/api/flows/default")).json()
    assert shipped["version"] == 0 and shipped["text"] == DEFAULT_FLOW.read_text(encoding="utf-8")

    text_a = flow_to_queue("inquiries").replace("name: t", "name: default")
    text_b = flow_to_queue("complaints").replace("name: t", "name: default")
    resp = await c.post("/api/flows/publish", json={"yaml": text_a, "comment": "holiday menu"},
                        headers={"X-CSRF-Token": csrf})
    assert resp.status == 201, await resp.text()
    assert (await resp.json())["version"] == 1
    resp = await c.post("/api/flows/publish", json={"yaml": text_b}, headers={"X-CSRF-Token": csrf})
    assert (await resp.json())["version"] == 2
    assert await flow_console.store.live_version("default") == 2

    bad = yaml.safe_load(text_b)
    bad["nodes"]["orphan"] = {"kind": "hangup"}
    resp = await c.post("/api/flows/publish", json={"yaml": yaml.safe_dump(bad, allow_unicode=True)},
                        headers={"X-CSRF-Token": csrf})
    assert resp.status == 422
    body = await resp.json()
    assert body["error"] == "node 'orphan': unreachable: no path from the start node 'welcome'"
    assert await flow_console.store.live_version("default") == 2  # nothing invalid went live

    resp = await c.post("/api/flows/default/rollback", json={"version": 1}, headers={"X-CSRF-Token": csrf})
    assert resp.status == 201
    assert (await resp.json())["version"] == 3 and (await resp.json())["rollback_of"] == 1
    live = await (await c.get("/api/flows/default")).json()
    assert live["version"] == 3 and live["text"] == text_a
    old = await (await c.get("/api/flows/default?version=2")).json()
    assert old["text"] == text_b
    resp = await c.post("/api/flows/default/rollback", json={"version": 42}, headers={"X-CSRF-Token": csrf})
    assert resp.status == 404 and (await resp.json())["error"] == "flow 'default' has no version 42"

    versions = (await (await c.get("/api/flows/default/versions")).json())["versions"]
    assert [v["version"] for v in versions] == [3, 2, 1] and "text" not in versions[0]
    audit = (await (await c.get("/api/flows/audit")).json())["audit"]
    assert [(a["actor"], a["action"], a["from_version"], a["to_version"]) for a in audit] == [
        ("admin1", "rollback", 2, 3), ("admin1", "publish", 1, 2), ("admin1", "publish", None, 1)]
    assert audit[2]["detail"] == "holiday menu"
    page = await c.get("/flows")
    assert page.status == 200
    html = await page.text()
    assert "flow-yaml" in html and "name: default" in html and 'id="live-version">3<' in html


async def test_flow_routes_are_admin_only_and_need_csrf(flow_console: FlowConsole) -> None:
    c = flow_console.client
    csrf = await login(c, "super1")
    for method, path in (("GET", "/api/flows"), ("GET", "/api/flows/default"), ("GET", "/flows"),
                         ("GET", "/api/flows/audit"), ("POST", "/api/flows/validate"),
                         ("POST", "/api/flows/publish"), ("POST", "/api/flows/default/rollback")):
        resp = await c.request(method, path, headers={"X-CSRF-Token": csrf, "Accept": "application/json"},
                               json={"yaml": "x"} if method == "POST" else None)
        assert resp.status == 403, (method, path, resp.status)
    admin = TestClient(TestServer(c.server.app))
    await admin.start_server()
    try:
        await login(admin, "admin1")
        resp = await admin.post("/api/flows/publish", json={"yaml": DEFAULT_FLOW.read_text(encoding="utf-8")})
        assert resp.status == 403  # no CSRF token
        assert await flow_console.store.live_version("default") is None
    finally:
        await admin.close()


async def test_flow_text_is_escaped_on_the_editor_page(flow_console: FlowConsole) -> None:
    c = flow_console.client
    csrf = await login(c, "admin1")
    text = "# </textarea><script>alert('x')</script>\n" + flow_to_queue("inquiries").replace("name: t", "name: default")
    resp = await c.post("/api/flows/publish", json={"yaml": text}, headers={"X-CSRF-Token": csrf})
    assert resp.status == 201, await resp.text()
    html = await (await c.get("/flows")).text()
    assert "</textarea><script>" not in html
    assert "&lt;/textarea&gt;&lt;script&gt;alert(&#39;x&#39;)&lt;/script&gt;" in html


def test_flow_diagram_escapes_every_name() -> None:
    from types import SimpleNamespace

    from agent_console.flow_diagram import render_flow_svg

    evil = "<script>alert('x')</script>"
    node = SimpleNamespace(kind=evil, branches=lambda: {evil: evil}, queue=evil)
    target = SimpleNamespace(kind="queue", branches=dict, queue=evil)
    svg = render_flow_svg(SimpleNamespace(start=evil, nodes={evil: node, '"x" onload="y': target}), {evil})
    assert "<script>" not in svg and 'onload="y' not in svg
    assert "&lt;script&gt;alert(&#x27;x&#x27;)&lt;/script&gt;" in svg and "&quot;x&quot; onload=&quot;y" in svg
