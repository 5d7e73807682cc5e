"""Wait announcements and callback offer through the real parts: the database already holds answered calls of the
inquiries queue; from the moment a caller joins, every 8 s (the configured interval, the first one included) the
bridge whispers to them their position and the estimate from that history (ChanSpy over the hold music), with
"press 5 to be called back" once they may ask; the caller who presses 5 after the offer gets a callback request,
one who presses it too early goes back in at the place they had. A caller nobody answers within the operator
queue's maximum wait (`on_max_wait: record`) describes the complaint; the case keeps the recording and its
transcript."""
from __future__ import annotations

import asyncio
import json
import os
import re
from collections.abc import AsyncIterator
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest
import pytest_asyncio
import redis.asyncio as aioredis

from cases import CaseStore
from ivr.prompts import synthesize_speech
from queueing import CallbackStore, QueueMetricsStore
from storage import create_engine_from_url, migrate_database
from tests.support.hotline_process import PROJECT_ROOT, HotlineUnderTest, running_hotline
from tests.support.ports import module_ports
from tests.support.rtp_pcap import wav_to_rtp_pcap
from tests.support.sipp import CitizenCall

pytestmark = [pytest.mark.asterisk, pytest.mark.redis]

PORTS = module_ports(__name__)
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
    """Twelve answered inquiries in the last hour (no agent staffs the queue in this test): one answer every 300 s,
    so the caller next in line waits about 150 s: "about 3 minutes"."""
    url = f"sqlite+aiosqlite:///{DB}"
    await asyncio.get_running_loop().run_in_executor(None, migrate_database, url)
    engine = create_engine_from_url(url)
    metrics = QueueMetricsStore(engine)
    now = datetime.now(UTC)
    for minute in range(12):
        await metrics.answered("inquiries", 100.0, now - timedelta(minutes=5 + 4 * minute))
    for _ in range(30):
        await metrics.answered("inquiries", 3000.0, now - timedelta(hours=5))  # too old to count
    await metrics.flush()
    await engine.dispose()


@pytest_asyncio.fixture(scope="module", loop_scope="session")
async def hotline() -> AsyncIterator[HotlineUnderTest]:
    WORK.mkdir(parents=True, exist_ok=True)
    DB.unlink(missing_ok=True)
    await _seed_history()
    h = HotlineUnderTest(WORK / "run", ports=PORTS, env={
        "HOTLINE_REDIS_KEY_PREFIX": f"hotline-i5-announce-{os.getpid()}",
        "DATABASE_URL": f"sqlite+aiosqlite:///{DB}",
        "HOTLINE_QUEUES": json.dumps(QUEUES),
        "HOTLINE_CALLBACK_AFTER_SECONDS": "12",
        "HOTLINE_LANGUAGE": "ko",
    })
    async with running_hotline(h):
        yield h


_STAMP = re.compile(r"^\[(\d{4}-\d\d-\d\d \d\d:\d\d:\d\d\.\d+)\]")


def _at(line: str) -> datetime:
    found = _STAMP.match(line)
    assert found, line
    return datetime.strptime(found.group(1), "%Y-%m-%d %H:%M:%S.%f")


def _queue_entries(log: str, caller_channel_hint: str = "") -> list[tuple[datetime, str, str]]:
    """(time, channel, Queue() arguments) of every Queue() in the Asterisk log."""
    found = []
    for line in log.splitlines():
        m = re.search(r'Queue\("(PJSIP/trunk-[0-9a-f]+)", "([^"]*)"\)', line)
        if m and caller_channel_hint in line:
            found.append((_at(line), m.group(1), m.group(2)))
    return found


async def test_announcements_at_the_interval_for_the_callers_position_then_offer_and_5(
        hotline: HotlineUnderTest, tmp_path: Path) -> None:
    conf = (hotline.run_dir / "asterisk" / "etc" / "queues.conf").read_text()
    inquiries = conf.split("[inquiries]")[1].split("[")[0]
    assert "announce-frequency = 0" in inquiries and "periodic-announce-frequency = 0" in inquiries
    messages = hotline.run_dir / "asterisk" / "log" / "messages"
    log_start = len(messages.read_text(errors="replace")) if messages.exists() else 0
    bridge_start = len(hotline.log_path.read_text(errors="replace"))
    settings = hotline.settings()
    caller = "01055504101"
    call = CitizenCall(sip_port=settings.sip_port, number=settings.hotline_number, from_user=caller,
                       work_dir=tmp_path / "caller", name="announce",
                       steps=[("pause", 1500), ("dtmf", "2"), ("pause", 50000), ("dtmf", "5"), ("pause", 15000)],
                       hangup="wait", wait_bye_ms=15000, timeout=120)
    result = await call.run()
    assert result.answered and result.hung_up_by == "asterisk", result.describe()
    log = messages.read_text(errors="replace")[log_start:]
    [(joined, channel, _)] = _queue_entries(log)
    spied = [_at(line) for line in log.splitlines() if f"app_chanspy.c: Spying on channel {channel}" in line]
    offsets = [(s - joined).total_seconds() for s in spied]
    # The first at the configured 8 s (not ~16 s), then every 8 s, until the caller pressed 5 at ~33 s in line.
    assert len(offsets) >= 3, log[-4000:]
    for k, offset in enumerate(offsets[:3], start=1):
        assert abs(offset - 8 * k) <= 1.5, (k, offsets)
    said = re.findall(rf"queue announcement to {re.escape(channel)}: '([^']*)'",
                      hotline.log_path.read_text(errors="replace")[bridge_start:])
    # Next in line, the estimate from history; from 12 s on (the 16 s one) also the callback offer.
    assert said[0] == "곧 상담원과 연결됩니다. 예상 대기 시간은 약 3분입니다.", said
    assert said[1] == said[0] + " 상담원의 전화를 받으시려면 5번을 누르세요.", said
    assert re.search(r"Local/s@hotline-queue-announce-[0-9a-f]+;2> Playing '.*/queue-say-[0-9a-f]+\.slin'", log)
    engine = create_engine_from_url(settings.database_url)
    try:
        requests = await CallbackStore(engine).in_status("pending")
    finally:
        await engine.dispose()
    assert [r.caller_number for r in requests] == [caller], requests


async def test_5_pressed_too_early_keeps_the_callers_place(hotline: HotlineUnderTest, tmp_path: Path) -> None:
    settings = hotline.settings()
    prefix = settings.redis_key_prefix
    messages = hotline.run_dir / "asterisk" / "log" / "messages"
    log_start = len(messages.read_text(errors="replace"))
    first, second = "01055504103", "01055504104"
    # The first caller presses 5 about 7 s after joining (the callback is offered from 12 s): too early.
    early = CitizenCall(sip_port=settings.sip_port, number=settings.hotline_number, from_user=first,
                        work_dir=tmp_path / "early", name="early",
                        steps=[("pause", 1500), ("dtmf", "2"), ("pause", 24000), ("dtmf", "5"), ("pause", 14000)],
                        hangup="caller", timeout=90)
    later = CitizenCall(sip_port=settings.sip_port, number=settings.hotline_number, from_user=second,
                        work_dir=tmp_path / "later", name="later",
                        steps=[("pause", 1500), ("dtmf", "2"), ("pause", 36000)], hangup="caller", timeout=90)
    redis = aioredis.Redis.from_url(settings.redis_url, decode_responses=True)

    async def waiting() -> dict[str, dict]:  # type: ignore[type-arg]
        raw = await redis.hgetall(f"{prefix}:queue:inquiries:waiting")
        return {e["caller"]: e for e in (json.loads(v) for v in raw.values())}

    task_early = asyncio.create_task(early.run())
    await asyncio.sleep(2.5)
    task_later = asyncio.create_task(later.run())
    try:
        both = None
        for _ in range(160):
            found = await waiting()
            if first in found and second in found:
                both = found
                break
            await asyncio.sleep(0.25)
        assert both is not None, "both callers never waited together"
        assert (both[first]["position"], both[second]["position"]) == (1, 2)
        log = ""
        for _ in range(80):  # until the first caller went back into the queue
            log = messages.read_text(errors="replace")[log_start:]
            if len(_queue_entries(log)) == 3:
                break
            await asyncio.sleep(0.25)
        entries = _queue_entries(log)
        assert len(entries) == 3, log[-3000:]
        await asyncio.sleep(1.0)
        after = await waiting()
        result_early, result_later = await asyncio.gather(task_early, task_later)
    finally:
        await redis.aclose()
    assert result_early.answered and result_later.answered, (result_early.describe(), result_later.describe())
    early_channel = entries[0][1]
    requeued = entries[2]
    assert requeued[1] == early_channel and requeued[2].endswith(",,,,,1"), requeued  # back at place 1
    assert (after[first]["position"], after[second]["position"]) == (1, 2)  # still ahead of the later caller
    # The wait goes on from the first join (a new join would be 7 s later; the two trackers' clocks differ by ms).
    first_join = datetime.fromisoformat(both[first]["joined_at"])
    assert abs((datetime.fromisoformat(after[first]["joined_at"]) - first_join).total_seconds()) < 0.5
    # They heard why (the too-early sentence, through the callback-request AGI) and no callback was booked.
    assert re.search(rf"<{re.escape(early_channel)}> Playing '.*/queue-say-[0-9a-f]+\.slin'", log), log[-3000:]
    engine = create_engine_from_url(settings.database_url)
    try:
        requests = await CallbackStore(engine).in_status("pending")
    finally:
        await engine.dispose()
    assert first not in [r.caller_number for r in requests]


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
