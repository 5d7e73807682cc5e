"""The IVR flow's callback node books a real callback request through the injected `callbacks` port: with a fake
port, and with the queueing CallbackStore on SQLite (a durable row the dispatcher dials like a queue-key callback)."""
from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from datetime import datetime
from pathlib import Path
from typing import Any

import pytest

from storage import create_engine_from_url, migrate_database
from ivr import HotlineCallFlow, IvrOptions
from queueing import CallbackStore
from tests.support.descriptions import DescriptionPipelines, description_pipelines
from tests.unit.ivr.test_call_flow import FakeRecognizer, FakeStore
from tests.unit.ivr.test_flows_engine import SEOUL_SUNDAY, LookupCases, ScriptedAgi, _only_case, _source
from tests.unit.ivr.test_flows_validator import EXAMPLE_FLOW


class FakeCallbacks:
    """The port: remembers requests; refuses numbers it cannot call, as CallbackStore does."""

    def __init__(self) -> None:
        self.requests: list[dict[str, Any]] = []

    async def request(self, **fields: Any) -> Any:
        if not str(fields["caller_number"]).isdigit():
            raise ValueError(f"caller number {fields['caller_number']!r} cannot be called back")
        self.requests.append(fields)
        return type("Booked", (), {"id": len(self.requests)})()


@pytest.fixture
async def pipelines(tmp_path: Path) -> AsyncIterator[DescriptionPipelines]:
    async with description_pipelines(f"sqlite+aiosqlite:///{tmp_path / 'jobs.db'}") as running:
        yield running


def _flow(tmp_path: Path, pipelines: DescriptionPipelines, flows: Any, callbacks: Any, cases: LookupCases,
          callback_queue: str | None = "operator") -> HotlineCallFlow:
    live = FakeStore()
    return HotlineCallFlow(options=IvrOptions(recordings_dir=tmp_path, menu_retries=2), flows=flows, cases=cases,
                           records=FakeStore(), live=live,
                           descriptions=pipelines.start(cases, FakeRecognizer("x"), max_attempts=1).descriptions,
                           clock=lambda: SEOUL_SUNDAY, callbacks=callbacks, callback_queue=callback_queue)


async def test_accepted_callback_node_books_a_request_on_the_port(tmp_path: Path, pipelines: DescriptionPipelines) -> None:
    callbacks, cases = FakeCallbacks(), LookupCases()
    flow = _flow(tmp_path, pipelines, await _source(EXAMPLE_FLOW), callbacks, cases)
    agi = ScriptedAgi(keys=["2", "1"], caller="01011112222")  # English, then "1": yes, call me back (closed hours)
    await flow.handle(agi)  # type: ignore[arg-type]
    [request] = callbacks.requests
    case = _only_case(cases)
    assert request == {"queue": "inquiries", "caller_number": "01011112222", "case_number": case["case_number"],
                       "linkedid": "linked-1.1", "priority": 0, "queued_at": SEOUL_SUNDAY}
    assert case["menu_path"] == ["language:en", "closed", "callback:yes", "hangup"]
    assert case["notes"] == "callback 1 requested to 01011112222 (queue inquiries)"
    assert "play:/en/callback_booked" in agi.log


async def test_declined_or_refused_callback_books_nothing(tmp_path: Path, pipelines: DescriptionPipelines) -> None:
    callbacks, cases = FakeCallbacks(), LookupCases()
    flow = _flow(tmp_path, pipelines, await _source(EXAMPLE_FLOW), callbacks, cases)
    await flow.handle(ScriptedAgi(keys=["2", "9"]))  # type: ignore[arg-type]
    assert callbacks.requests == [] and _only_case(cases)["menu_path"][-2] == "callback:no"
    cases = LookupCases()
    flow = _flow(tmp_path, pipelines, await _source(EXAMPLE_FLOW), callbacks, cases)
    agi = ScriptedAgi(keys=["2", "1"], caller="anonymous")
    await flow.handle(agi)  # type: ignore[arg-type]
    case = _only_case(cases)
    assert callbacks.requests == [] and "callback:refused" in case["menu_path"]
    assert "cannot be called back" in case["notes"] and "play:/en/callback_booked" not in agi.log


async def test_node_without_a_queue_uses_the_default_callback_queue(tmp_path: Path, pipelines: DescriptionPipelines) -> None:
    text = EXAMPLE_FLOW.read_text(encoding="utf-8").replace("    queue: inquiries  #", "    #")
    callbacks, cases = FakeCallbacks(), LookupCases()
    flow = _flow(tmp_path, pipelines, await _source(text), callbacks, cases)
    await flow.handle(ScriptedAgi(keys=["2", "1"]))  # type: ignore[arg-type]
    assert [r["queue"] for r in callbacks.requests] == ["operator"]


async def test_callback_node_produces_a_durable_callback_store_row(tmp_path: Path, pipelines: DescriptionPipelines) -> None:
    url = f"sqlite+aiosqlite:///{tmp_path / 'cb.db'}"
    await asyncio.get_running_loop().run_in_executor(None, migrate_database, url)
    engine = create_engine_from_url(url)
    try:
        store, cases = CallbackStore(engine), LookupCases()
        flow = _flow(tmp_path, pipelines, await _source(EXAMPLE_FLOW), store, cases)
        await flow.handle(ScriptedAgi(keys=["2", "1"], caller="01033334444", uniqueid="7.1"))  # type: ignore[arg-type]
        # What the dispatcher will dial, read back through a fresh engine: it is on disk.
        await engine.dispose()
        engine = create_engine_from_url(url)
        [row] = await CallbackStore(engine).due()
        assert (row.queue, row.caller_number, row.status, row.attempts) == ("inquiries", "01033334444", "pending", 0)
        assert row.case_number == _only_case(cases)["case_number"] and row.linkedid == "linked-7.1"
        assert row.queued_at == SEOUL_SUNDAY and isinstance(row.requested_at, datetime)
        assert _only_case(cases)["notes"] == f"callback {row.id} requested to 01033334444 (queue inquiries)"
    finally:
        await engine.dispose()
