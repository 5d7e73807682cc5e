"""The flow engine with small fakes: every node kind, speech menus, per-call versions, independence of calls,
and FlowStore versions/audit/surveys on SQLite."""
from __future__ import annotations

import asyncio
from datetime import datetime
from pathlib import Path
from typing import Any

import pytest

from cases import CaseStatus
from ivr import FlowValidator, HotlineCallFlow, IvrOptions, LiveFlowSource
from ivr.flow_source import FileFlowSource
from ivr.flow_store import FlowStore
from tests.support.cases import FakeCases, sample_case
from tests.support.descriptions import DescriptionPipelines, eventually
from tests.support.fake_agi import ScriptedAgi
from tests.support.flows import (
    DEFAULT_FLOW,
    EXAMPLE_FLOW,
    SEOUL_MONDAY_NOON,
    SEOUL_SUNDAY,
    LangPrompts,
    flow_source,
    flow_to_queue,
)
from tests.support.live import FakeLive
from tests.support.recognizer import FakeRecognizer
from tests.support.records import FakeRecords


class FakeSurveys:
    def __init__(self) -> None:
        self.rows: list[tuple[str, int, str, int]] = []

    async def record_survey(self, case_number: str, score: int, flow_name: str, flow_version: int) -> None:
        self.rows.append((case_number, score, flow_name, flow_version))


def _engine(tmp_path: Path, pipelines: DescriptionPipelines, flows: Any, *, speech: Any = None,
            clock: datetime | None = None, cases: FakeCases | None = None,
            transfer_dial: str | None = None) -> tuple[HotlineCallFlow, FakeCases, FakeRecords, FakeLive, FakeSurveys]:
    cases = cases or FakeCases()
    records, live, surveys = FakeRecords(), FakeLive(), FakeSurveys()
    descriptions = pipelines.start(cases, FakeRecognizer("설명"), max_attempts=1, live=live).descriptions
    engine = HotlineCallFlow(options=IvrOptions(recordings_dir=tmp_path, menu_retries=2, transfer_dial=transfer_dial),
                             flows=flows,
                             cases=cases, records=records, live=live, descriptions=descriptions,
                             speech=speech, surveys=surveys, clock=(lambda: clock) if clock else None)
    return engine, cases, records, live, surveys


# -- the default flow --------------------------------------------------------------------------------------

async def test_default_flow_barge_in_during_welcome(tmp_path: Path, pipelines: DescriptionPipelines) -> None:
    engine, cases, records, live, _ = _engine(tmp_path, pipelines, await flow_source(DEFAULT_FLOW))
    agi = ScriptedAgi(barge={"/ko/welcome": "2"})
    await engine.handle(agi)  # type: ignore[arg-type]
    case = cases.only()
    assert case.menu_path == ["2"] and case.category == "inquiry"
    assert agi.variables == {"HOTLINE_CASE": case.case_number, "HOTLINE_PRIORITY": "0",
                             "HOTLINE_QUEUE": "inquiries", "HOTLINE_PROMPT": "/ko/to_agent"}
    assert not any(e.startswith("get:") for e in agi.log)
    assert records.rows[f"linked-{agi.uniqueid}"]["ivr_path"] == ["2"]


async def test_default_flow_hang_up_mid_prompt_keeps_the_case(tmp_path: Path, pipelines: DescriptionPipelines) -> None:
    engine, cases, records, _, _ = _engine(tmp_path, pipelines, await flow_source(DEFAULT_FLOW))
    await engine.handle(ScriptedAgi(keys=["7"], hang_up_on="play:/ko/invalid"))  # type: ignore[arg-type]
    case = cases.only()
    assert case.status == CaseStatus.ABANDONED_IN_IVR and case.menu_path == ["invalid:7"]
    assert records.rows["linked-1.1"]["outcome"] == "abandoned_in_ivr"


async def test_default_flow_description_is_transcribed_by_a_job_onto_the_case(
        tmp_path: Path, pipelines: DescriptionPipelines) -> None:
    engine, cases, _, live, _ = _engine(tmp_path, pipelines, await flow_source(DEFAULT_FLOW))
    agi = ScriptedAgi(keys=["1"], listen=["say"])
    await engine.handle(agi)  # type: ignore[arg-type]
    case = cases.only()
    assert case.menu_path == ["1", "recorded"] and agi.variables["HOTLINE_QUEUE"] == "complaints"
    await eventually(lambda: cases.only().transcript_status != "pending", what="transcript reported")
    case = cases.only()
    assert case.transcript == "설명" and case.transcript_status == "done"
    assert live.calls[f"linked-{agi.uniqueid}"]["transcript"] == "설명"
    job = await pipelines.store.get(f"description:{case.case_number}")
    assert job is not None and job.status == "done" and job.recordings[0].path == case.recording_path


# -- speech menus ------------------------------------------------------------------------------------------

async def test_speech_menu_spoken_keyword_selects_the_branch(tmp_path: Path, pipelines: DescriptionPipelines) -> None:
    recognizer = FakeRecognizer("버스", then="", check_files=True)
    engine, cases, _, _, _ = _engine(tmp_path, pipelines, await flow_source(DEFAULT_FLOW),
                                     speech=lambda lang, model: recognizer if model == "default" else None)
    agi = ScriptedAgi(listen=["say"])
    await engine.handle(agi)  # type: ignore[arg-type]
    case = cases.only()
    assert case.menu_path == ["speech:버스:2"] and case.category == "inquiry"
    assert agi.variables["HOTLINE_QUEUE"] == "inquiries"
    assert sorted(recognizer.grammars[0]) == sorted(["쓰레기", "하수도", "보도블록", "위생", "버스", "상담원"])
    assert list((tmp_path / "menu-speech").iterdir()) == []  # the listened-to audio is not kept


async def test_speech_menu_key_press_wins_and_unrecognized_speech_reprompts(
        tmp_path: Path, pipelines: DescriptionPipelines) -> None:
    recognizer = FakeRecognizer("", then="", check_files=True)
    engine, cases, _, _, _ = _engine(tmp_path, pipelines, await flow_source(DEFAULT_FLOW),
                                     speech=lambda lang, model: recognizer)
    agi = ScriptedAgi(listen=["say", "dtmf:1"])
    await engine.handle(agi)  # type: ignore[arg-type]
    case = cases.only()
    assert case.menu_path == ["no-input", "1", "recorded"]
    assert agi.variables["HOTLINE_QUEUE"] == "complaints" and agi.variables["HOTLINE_PRIORITY"] == "1"
    # Invalid keys during listening count as invalid, like in a DTMF menu.
    engine, cases, _, _, _ = _engine(tmp_path, pipelines, await flow_source(DEFAULT_FLOW),
                                     speech=lambda lang, model: recognizer)
    await engine.handle(ScriptedAgi(listen=["dtmf:9", "", ""]))  # type: ignore[arg-type]
    assert cases.only().menu_path == ["invalid:9", "no-input", "no-input", "fallback:0"]


async def test_speech_menu_without_a_model_uses_keys(tmp_path: Path, pipelines: DescriptionPipelines) -> None:
    engine, cases, _, _, _ = _engine(tmp_path, pipelines, await flow_source(DEFAULT_FLOW),
                                     speech=lambda lang, model: None)
    agi = ScriptedAgi(keys=["0"])
    await engine.handle(agi)  # type: ignore[arg-type]
    assert cases.only().menu_path == ["0"]
    assert "get:/ko/menu" in agi.log and not any(e.startswith("record:") for e in agi.log)


# -- the example flow: language, hours, callback, case status, survey, transfer, goto -----------------------

async def test_language_choice_then_closed_hours_callback(tmp_path: Path, pipelines: DescriptionPipelines) -> None:
    engine, cases, records, live, _ = _engine(tmp_path, pipelines, await flow_source(EXAMPLE_FLOW), clock=SEOUL_SUNDAY)
    agi = ScriptedAgi(keys=["2", "1"])
    await engine.handle(agi)  # type: ignore[arg-type]
    case = cases.only()
    assert case.menu_path == ["language:en", "closed", "callback:yes", "hangup"]
    assert case.notes == "callback requested to 01011112222"
    assert "play:/en/welcome" in agi.log and "play:/en/callback_booked" in agi.log and "play:/en/thanks" in agi.log
    assert live.calls["linked-1.1"]["language"] == "en"
    assert "HOTLINE_QUEUE" not in agi.variables  # the dialplan hangs up


async def test_case_status_lookup_and_survey(tmp_path: Path, pipelines: DescriptionPipelines) -> None:
    cases = FakeCases()
    cases.add(sample_case("2611280042", status=CaseStatus.OPEN, menu_path=[], transcript="x"))
    engine, _, _, _, surveys = _engine(tmp_path, pipelines, await flow_source(EXAMPLE_FLOW), clock=SEOUL_MONDAY_NOON,
                                       cases=cases)
    agi = ScriptedAgi(keys=["1", "2", "2611280042", "5"])
    await engine.handle(agi)  # type: ignore[arg-type]
    new = [c for n, c in cases.cases.items() if n != "2611280042"][0]
    assert new.menu_path == ["language:ko", "open", "2", "status:2611280042", "survey:5", "hangup"]
    assert "play:/ko/status_open" in agi.log and "say:2611280042" in agi.log
    assert surveys.rows == [(new.case_number, 5, "default", 1)]


async def test_unknown_case_number_and_menu_failure_transfer(tmp_path: Path, pipelines: DescriptionPipelines) -> None:
    engine, cases, _, _, surveys = _engine(tmp_path, pipelines, await flow_source(EXAMPLE_FLOW),
                                           clock=SEOUL_MONDAY_NOON)
    agi = ScriptedAgi(keys=["1", "2", "999", ""])
    await engine.handle(agi)  # type: ignore[arg-type]
    assert "play:/ko/not_found" in agi.log and "say:999" not in agi.log
    assert cases.only().menu_path[-2:] == ["survey:none", "hangup"] and surveys.rows == []
    engine, cases, _, _, _ = _engine(tmp_path, pipelines, await flow_source(EXAMPLE_FLOW), clock=SEOUL_MONDAY_NOON)
    agi = ScriptedAgi(keys=["1", "8", ""])  # retries: 1, then on_failure: emergency transfer
    await engine.handle(agi)  # type: ignore[arg-type]
    case = cases.only()
    assert case.menu_path == ["language:ko", "open", "invalid:8", "no-input", "failure", "transfer:0212345678"]
    assert agi.variables["HOTLINE_TRANSFER"] == "0212345678" and "HOTLINE_QUEUE" not in agi.variables
    assert "HOTLINE_TRANSFER_DIAL" not in agi.variables  # no outbound route configured: the call ends
    engine, cases, _, _, _ = _engine(tmp_path, pipelines, await flow_source(EXAMPLE_FLOW), clock=SEOUL_MONDAY_NOON,
                                     transfer_dial="PJSIP/trunk/sip:{number}@10.0.0.1:5060")
    agi = ScriptedAgi(keys=["1", "", ""])
    await engine.handle(agi)  # type: ignore[arg-type]
    assert agi.variables["HOTLINE_TRANSFER_DIAL"] == "PJSIP/trunk/sip:0212345678@10.0.0.1:5060"


async def test_operator_goto_and_queue_priority(tmp_path: Path, pipelines: DescriptionPipelines) -> None:
    engine, cases, _, _, _ = _engine(tmp_path, pipelines, await flow_source(EXAMPLE_FLOW), clock=SEOUL_MONDAY_NOON)
    agi = ScriptedAgi(keys=["3", "0"])
    await engine.handle(agi)  # type: ignore[arg-type]
    assert agi.variables["HOTLINE_QUEUE"] == "operator" and agi.variables["HOTLINE_PRIORITY"] == "2"
    # the dialplan plays the queue node's prompt after the AGI, in the caller's language
    assert agi.variables["HOTLINE_PROMPT"] == "/zh/to_agent" and not any("to_agent" in e for e in agi.log)
    engine, cases, _, _, _ = _engine(tmp_path, pipelines, await flow_source(EXAMPLE_FLOW), clock=SEOUL_MONDAY_NOON)
    agi = ScriptedAgi(keys=["1", "1"])
    await engine.handle(agi)  # type: ignore[arg-type]
    assert agi.variables["HOTLINE_QUEUE_MAXWAIT"] == "900"
    assert any(e.startswith("record:") for e in agi.log)


# -- versions and independence of calls ---------------------------------------------------------------------

class MemoryVersions:
    """FlowStore's lookup half, in memory."""

    def __init__(self) -> None:
        self.texts: dict[int, str] = {}
        self.lookups = 0

    async def live_version(self, name: str) -> int | None:
        self.lookups += 1
        return max(self.texts, default=None)

    async def get(self, name: str, version: int | None = None) -> Any:
        return type("V", (), {"text": self.texts[version if version is not None else max(self.texts)]})()


async def test_calls_in_progress_keep_their_version_new_calls_take_the_new_one(
        tmp_path: Path, pipelines: DescriptionPipelines) -> None:
    store = MemoryVersions()
    validator = FlowValidator(base_dir=DEFAULT_FLOW.parent)
    shipped = FileFlowSource(DEFAULT_FLOW, validator, lambda _doc: LangPrompts())
    source = LiveFlowSource(store, "default", shipped, validator, lambda _doc: LangPrompts())
    engine, cases, _, _, _ = _engine(tmp_path, pipelines, source)
    # Nothing published: the shipped file runs.
    first = ScriptedAgi(keys=["0"], uniqueid="1.0")
    await engine.handle(first)  # type: ignore[arg-type]
    assert first.variables["HOTLINE_QUEUE"] == "operator" and "play:/ko/welcome" in first.log
    store.texts[1] = flow_to_queue("inquiries")
    old_call = ScriptedAgi(keys=["0"], block_on="get:/ko/menu", uniqueid="1.1")
    running = asyncio.create_task(engine.handle(old_call))  # type: ignore[arg-type]
    await asyncio.wait_for(old_call.blocked.wait(), 5)
    store.texts[2] = flow_to_queue("complaints")  # published while the call is in the menu
    new_call = ScriptedAgi(keys=["0"], uniqueid="1.2")
    await asyncio.wait_for(engine.handle(new_call), 5)  # type: ignore[arg-type]
    assert new_call.variables["HOTLINE_QUEUE"] == "complaints"
    old_call.release.set()
    await asyncio.wait_for(running, 5)
    assert old_call.variables["HOTLINE_QUEUE"] == "inquiries"  # finished on the version it started with
    store.texts[3] = store.texts[1]  # a rollback re-publishes version 1's text
    back = ScriptedAgi(keys=["0"], uniqueid="1.3")
    await engine.handle(back)  # type: ignore[arg-type]
    assert back.variables["HOTLINE_QUEUE"] == "inquiries"


async def test_a_version_this_process_cannot_load_keeps_the_last_good_one(
        tmp_path: Path, pipelines: DescriptionPipelines) -> None:
    store = MemoryVersions()
    validator = FlowValidator(base_dir=DEFAULT_FLOW.parent)
    shipped = FileFlowSource(DEFAULT_FLOW, validator, lambda _doc: LangPrompts())
    source = LiveFlowSource(store, "default", shipped, validator, lambda _doc: LangPrompts())
    engine, _, _, _, _ = _engine(tmp_path, pipelines, source)
    store.texts[1] = flow_to_queue("inquiries")
    await engine.handle(ScriptedAgi(keys=["0"], uniqueid="3.1"))  # type: ignore[arg-type]
    store.texts[2] = "name: default\nstart: nowhere"  # e.g. written to the database by hand
    for n in range(2, 4):
        call = ScriptedAgi(keys=["0"], uniqueid=f"3.{n}")
        await engine.handle(call)  # type: ignore[arg-type]
        assert call.variables["HOTLINE_QUEUE"] == "inquiries"


async def test_a_stalled_call_does_not_hold_up_others(tmp_path: Path, pipelines: DescriptionPipelines) -> None:
    engine, cases, _, _, _ = _engine(tmp_path, pipelines, await flow_source(DEFAULT_FLOW))
    stuck = ScriptedAgi(block_on="play:/ko/welcome", uniqueid="2.0")
    stuck_task = asyncio.create_task(engine.handle(stuck))  # type: ignore[arg-type]
    await asyncio.wait_for(stuck.blocked.wait(), 5)
    others = [ScriptedAgi(keys=["2"], uniqueid=f"2.{i}") for i in range(1, 21)]
    await asyncio.wait_for(asyncio.gather(*(engine.handle(a) for a in others)), 5)  # type: ignore[arg-type]
    assert all(a.variables["HOTLINE_QUEUE"] == "inquiries" for a in others)
    assert not stuck_task.done()
    stuck.release.set()
    await asyncio.wait_for(stuck_task, 5)


# -- FlowStore ----------------------------------------------------------------------------------------------

@pytest.fixture
async def flow_store(tmp_path: Path) -> Any:
    from storage import create_engine_from_url, migrate_database

    url = f"sqlite+aiosqlite:///{tmp_path / 'flows.db'}"
    await asyncio.get_running_loop().run_in_executor(None, migrate_database, url)
    engine = create_engine_from_url(url)
    yield FlowStore(engine)
    await engine.dispose()


async def test_flow_store_versions_rollback_audit_and_surveys(flow_store: FlowStore) -> None:
    assert await flow_store.live_version("default") is None
    v1 = await flow_store.publish("default", "text one", "admin", comment="first")
    v2 = await flow_store.publish("default", "text two", "alice")
    assert (v1.version, v2.version) == (1, 2)
    assert await flow_store.live_version("default") == 2
    v3 = await flow_store.publish("default", (await flow_store.get("default", 1)).text, "bob", rollback_of=1)
    assert v3.version == 3 and (await flow_store.get("default")).text == "text one"
    assert [v.version for v in await flow_store.versions("default")] == [3, 2, 1]
    audit = await flow_store.audit()
    assert [(a.actor, a.action, a.from_version, a.to_version) for a in audit] == [
        ("bob", "rollback", 2, 3), ("alice", "publish", 1, 2), ("admin", "publish", None, 1)]
    # Concurrent publishers get distinct numbers.
    results = await asyncio.gather(*(flow_store.publish("other", f"t{i}", "x") for i in range(5)))
    assert sorted(v.version for v in results) == [1, 2, 3, 4, 5]
    await flow_store.record_survey("2611290001", 4, "default", 3)
    assert await flow_store.surveys("2611290001") == [4]
    with pytest.raises(ValueError):
        await flow_store.record_survey("2611290001", 6, "default", 3)
