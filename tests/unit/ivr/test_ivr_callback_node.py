"""The IVR flow's callback node books a real callback request through the injected `callbacks` port: with a fake
port, and with the queueing CallbackStore on SQLite (a durable row the dispatcher dials like a queue-key callback)."""
from __future__ import annotations

import asyncio
from datetime import datetime
from pathlib import Path
from typing import Any

from ivr import HotlineCallFlow, IvrOptions
from queueing import CallbackStore
from storage import create_engine_from_url, migrate_database
from tests.support.callbacks import FakeCallbacks
from tests.support.cases import FakeCases
from tests.support.descriptions import DescriptionPipelines
from tests.support.fake_agi import ScriptedAgi
from tests.support.flows import EXAMPLE_FLOW, SEOUL_SUNDAY, flow_source
from tests.support.live import FakeLive
from tests.support.recognizer import FakeRecognizer
from tests.support.records import FakeRecords


def _flow(tmp_path: Path, pipelines: DescriptionPipelines, flows: Any, callbacks: Any, cases: FakeCases,
          callback_queue: str | None = "operator") -> HotlineCallFlow:
    live = FakeLive()
    return HotlineCallFlow(options=IvrOptions(recordings_dir=tmp_path, menu_retries=2), flows=flows, cases=cases,
                           records=FakeRecords(), live=live,
                           descriptions=pipelines.start(cases, FakeRecognizer("x"), max_attempts=1).descriptions,
                           clock=lambda: SEOUL_SUNDAY, callbacks=callbacks, callback_queue=callback_queue)


async def test_accepted_callback_node_books_a_request_on_the_port(
        tmp_path: Path, pipelines: DescriptionPipelines) -> None:
    callbacks, cases = FakeCallbacks(), FakeCases()
    flow = _flow(tmp_path, pipelines, await flow_source(EXAMPLE_FLOW), callbacks, cases)
    agi = ScriptedAgi(keys=["2", "1"], caller="01011112222")  # English, then "1": yes, call me back (closed hours)
    await flow.handle(agi)  # type: ignore[arg-type]
    [request] = callbacks.requests
    case = cases.only()
    assert request == {"queue": "inquiries", "caller_number": "01011112222", "case_number": case.case_number,
                       "linkedid": "linked-1.1", "priority": 0, "queued_at": SEOUL_SUNDAY}
    assert case.menu_path == ["language:en", "closed", "callback:yes", "hangup"]
    assert case.notes == "callback 1 requested to 01011112222 (queue inquiries)"
    assert "play:/en/callback_booked" in agi.log


async def test_declined_or_refused_callback_books_nothing(tmp_path: Path, pipelines: DescriptionPipelines) -> None:
    callbacks, cases = FakeCallbacks(), FakeCases()
    flow = _flow(tmp_path, pipelines, await flow_source(EXAMPLE_FLOW), callbacks, cases)
    await flow.handle(ScriptedAgi(keys=["2", "9"]))  # type: ignore[arg-type]
    assert callbacks.requests == [] and cases.only().menu_path[-2] == "callback:no"
    cases = FakeCases()
    flow = _flow(tmp_path, pipelines, await flow_source(EXAMPLE_FLOW), callbacks, cases)
    agi = ScriptedAgi(keys=["2", "1"], caller="anonymous")
    await flow.handle(agi)  # type: ignore[arg-type]
    case = cases.only()
    assert callbacks.requests == [] and "callback:refused" in case.menu_path
    assert "cannot be called back" in case.notes and "play:/en/callback_booked" not in agi.log


async def test_node_without_a_queue_uses_the_default_callback_queue(
        tmp_path: Path, pipelines: DescriptionPipelines) -> None:
    text = EXAMPLE_FLOW.read_text(encoding="utf-8").replace("    queue: inquiries  #", "    #")
    callbacks, cases = FakeCallbacks(), FakeCases()
    flow = _flow(tmp_path, pipelines, await flow_source(text), callbacks, cases)
    await flow.handle(ScriptedAgi(keys=["2", "1"]))  # type: ignore[arg-type]
    assert [r["queue"] for r in callbacks.requests] == ["operator"]


async def test_callback_node_produces_a_durable_callback_store_row(
        tmp_path: Path, pipelines: DescriptionPipelines) -> None:
    url = f"sqlite+aiosqlite:///{tmp_path / 'cb.db'}"
    await asyncio.get_running_loop().run_in_executor(None, migrate_database, url)
    engine = create_engine_from_url(url)
    try:
        store, cases = CallbackStore(engine), FakeCases()
        flow = _flow(tmp_path, pipelines, await flow_source(EXAMPLE_FLOW), store, cases)
        await flow.handle(ScriptedAgi(keys=["2", "1"], caller="01033334444", uniqueid="7.1"))  # type: ignore[arg-type]
        # What the dispatcher will dial, read back through a fresh engine: it is on disk.
        await engine.dispose()
        engine = create_engine_from_url(url)
        [row] = await CallbackStore(engine).due()
        assert (row.queue, row.caller_number, row.status, row.attempts) == ("inquiries", "01033334444", "pending", 0)
        assert row.case_number == cases.only().case_number and row.linkedid == "linked-7.1"
        assert row.queued_at == SEOUL_SUNDAY and isinstance(row.requested_at, datetime)
        assert cases.only().notes == f"callback {row.id} requested to 01033334444 (queue inquiries)"
    finally:
        await engine.dispose()
