"""Wait estimate and callback offer through the real parts: the database already holds answered calls of the
inquiries queue, `hotline run` synthesizes the estimate from them, app_queue plays it at the announcement interval
(the plain estimate first, the estimate with "press 5 to be called back" once the caller may ask), and the
caller who presses 5 after the offer gets a callback request. A caller nobody answers within the operator queue's
maximum wait (`on_max_wait: record`) describes the complaint; the case keeps the recording and its transcript."""
from __future__ import annotations

import asyncio
import json
import os
from collections.abc import AsyncIterator
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest
import pytest_asyncio

from cases import CaseStore, create_engine_from_url, migrate_database
from ivr.prompts import synthesize_speech
from queueing import CallbackStore, QueueMetricsStore
from tests.support.hotline_process import PROJECT_ROOT, HotlineUnderTest
from tests.support.rtp_pcap import wav_to_rtp_pcap
from tests.support.sipp import CitizenCall

pytestmark = [pytest.mark.asterisk, pytest.mark.redis]

BASE_PORT = 41000
WORK = PROJECT_ROOT / "var" / "test-queueing-announce"
DB = WORK / "hotline.db"
QUEUES = [
    {"name": "complaints", "strategy": "rrmemory", "timeout_seconds": 15, "wrapup_seconds": 0},
    {"name": "inquiries", "strategy": "rrmemory", "timeout_seconds": 15, "wrapup_seconds": 0,
     "announce_frequency_seconds": 8},
    {"name": "operator", "strategy": "ringall", "timeout_seconds": 15, "wrapup_seconds": 0, "max_wait_seconds": 10,
     "on_max_wait": "record"},
]


async def _seed_history() -> None:
    """Three answered inquiries in the last hour waited 100, 150 and 200 s: "about 3 minutes"."""
    url = f"sqlite+aiosqlite:///{DB}"
    await asyncio.get_running_loop().run_in_executor(None, migrate_database, url)
    engine = create_engine_from_url(url)
    metrics = QueueMetricsStore(engine)
    now = datetime.now(UTC)
    for wait in (100.0, 150.0, 200.0):
        await metrics.answered("inquiries", wait, now - timedelta(minutes=10))
    await metrics.answered("inquiries", 3000.0, now - timedelta(hours=5))  # too old to count
    await metrics.flush()
    await engine.dispose()


@pytest_asyncio.fixture(scope="module", loop_scope="session")
async def hotline() -> AsyncIterator[HotlineUnderTest]:
    WORK.mkdir(parents=True, exist_ok=True)
    DB.unlink(missing_ok=True)
    await _seed_history()
    h = HotlineUnderTest(WORK / "run", base_port=BASE_PORT, env={
        "HOTLINE_REDIS_KEY_PREFIX": f"hotline-i5-announce-{os.getpid()}",
        "DATABASE_URL": f"sqlite+aiosqlite:///{DB}",
        "HOTLINE_QUEUES": json.dumps(QUEUES),
        "HOTLINE_RTP_PORT_START": str(BASE_PORT + 200),
        "HOTLINE_RTP_PORT_END": str(BASE_PORT + 399),
        "HOTLINE_CALLBACK_AFTER_SECONDS": "12",
        "HOTLINE_LANGUAGE": "ko",
    })
    await h.start()
    yield h
    code = await h.stop()
    assert code == 0, f"hotline run did not stop cleanly: {h.log_tail()}"


async def _until(check, timeout: float, what: str):  # type: ignore[no-untyped-def]
    deadline = asyncio.get_running_loop().time() + timeout
    last = None
    while asyncio.get_running_loop().time() < deadline:
        last = check()
        if last:
            return last
        await asyncio.sleep(0.25)
    raise AssertionError(f"{what} not reached within {timeout} s (last: {last!r})")


async def test_estimate_from_history_then_callback_offer_is_played_and_5_is_taken(hotline: HotlineUnderTest,
                                                                                   tmp_path: Path) -> None:
    prompts = hotline.run_dir / "prompts"
    await _until(lambda: "wait announcement now '예상 대기 시간은 약 3분입니다.'" in hotline.log_path.read_text(
        errors="replace"), 30, "estimate synthesized from history")
    assert (prompts / "queue-wait-inquiries.wav").stat().st_size > 1000
    assert (prompts / "queue-wait-offer-inquiries.wav").stat().st_size > \
        (prompts / "queue-wait-inquiries.wav").stat().st_size  # the offer is said after the estimate
    conf = (hotline.run_dir / "asterisk" / "etc" / "queues.conf").read_text()
    assert "announce-holdtime = no" in conf
    messages = hotline.run_dir / "asterisk" / "log" / "messages"
    log_start = len(messages.read_text(errors="replace")) if messages.exists() else 0
    settings = hotline.settings()
    caller = "01055504101"
    call = CitizenCall(sip_port=settings.sip_port, number=settings.hotline_number, from_user=caller,
                       work_dir=tmp_path / "caller", name="announce",
                       steps=[("pause", 1500), ("dtmf", "2"), ("pause", 50000), ("dtmf", "5"), ("pause", 15000)],
                       hangup="wait", wait_bye_ms=15000, timeout=120)
    result = await call.run()
    assert result.answered and result.hung_up_by == "asterisk", result.describe()
    log = messages.read_text(errors="replace")[log_start:]
    plain = log.find("queue-wait-inquiries")
    offer = log.find("queue-wait-offer-inquiries")
    # First the estimate alone (too early for a callback), then the estimate with the offer; with the position.
    assert plain != -1 and offer != -1 and plain < offer, log[-4000:]
    assert "queue-youarenext" in log or "queue-thereare" in log, log[-4000:]
    engine = create_engine_from_url(settings.database_url)
    try:
        requests = await CallbackStore(engine).in_status("pending")
    finally:
        await engine.dispose()
    assert [r.caller_number for r in requests] == [caller], requests


async def test_max_wait_record_keeps_the_description_on_the_case(hotline: HotlineUnderTest, tmp_path: Path) -> None:
    settings = hotline.settings()
    wav = synthesize_speech("하수도가 막혔어요. 하수도가 넘쳐요. 하수도를 고쳐 주세요.", "ko", tmp_path / "say.wav",
                            speed=130)
    speech = tmp_path / "say.pcap"
    wav_to_rtp_pcap(wav, speech, pad_seconds=4.0)
    caller = "01055504102"
    # 0: operator queue (after ~17 s of IVR); nobody answers within its 10 s; the describe prompt, beep, speech.
    call = CitizenCall(sip_port=settings.sip_port, number=settings.hotline_number, from_user=caller,
                       work_dir=tmp_path / "caller", name="maxwait",
                       steps=[("pause", 1500), ("dtmf", "0"), ("pause", 36000), ("audio", speech)],
                       hangup="wait", wait_bye_ms=30000, timeout=120)
    result = await call.run()
    assert result.answered and result.hung_up_by == "asterisk", result.describe()
    engine = create_engine_from_url(settings.database_url)
    cases = CaseStore(engine)
    try:
        async def transcribed():  # type: ignore[no-untyped-def]
            found = [c for c in await cases.list_recent(20) if c.caller_number == caller]
            return found[0] if found and found[0].recording_path and found[0].transcript_status != "pending" else None

        case = None
        for _ in range(120):
            case = await transcribed()
            if case:
                break
            await asyncio.sleep(0.5)
    finally:
        await engine.dispose()
    assert case is not None, "no case with a finished transcript for the max-wait caller"
    assert case.recording_path and case.recording_path.endswith(f"{case.case_number}-maxwait.wav"), case
    assert Path(case.recording_path).stat().st_size > 8000
    assert case.transcript_status == "done" and case.transcript and case.transcript.strip(), case
    messages = (hotline.run_dir / "asterisk" / "log" / "messages").read_text(errors="replace")
    assert "queue-maxwait-describe-" in messages
