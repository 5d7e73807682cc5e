"""Per-caller wait announcements: per-position estimates from history (SQLite metrics), the whisper schedule with a
fake clock, AMI and synthesizer, and the rendered queues.conf (app_queue's own announcements off)."""
from __future__ import annotations

from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import pytest
from sqlalchemy.ext.asyncio import AsyncEngine

from config.settings import PROJECT_ROOT
from ivr import load_prompt_sets
from queueing import QueueMetricsStore, QueueWaitAnnouncer, QueueWaitModel, SpokenPrompts, WaitEstimator
from queueing.wait_announcements import ANNOUNCE_TEXTS, TOO_EARLY_PROMPT, whole_minutes
from telephony.asterisk_process import AsteriskConfig, QueueConf, render_asterisk_config
from tests.support.fake_ami import FakeAmi
from tests.support.live import FakeQueueLive

NOW = datetime(2026, 11, 29, 10, 0, tzinfo=UTC)


class FakeSynth:
    """Writes the text into the target instead of speaking it."""

    def __init__(self) -> None:
        self.calls: list[tuple[str, str, Path]] = []

    def __call__(self, text: str, voice: str, target: Path) -> Path:
        self.calls.append((text, voice, target))
        target.write_text(text, encoding="utf-8")
        return target


def _korean() -> tuple[str, dict[str, str]]:
    ko = load_prompt_sets(PROJECT_ROOT / "config" / "prompts.yaml")["ko"]
    return ko.voice, ko.texts


def _english() -> tuple[str, dict[str, str]]:
    en = load_prompt_sets(PROJECT_ROOT / "config" / "prompts.yaml")["en"]
    return en.voice, en.texts


def test_whole_minutes_rounds_up_and_never_says_zero() -> None:
    assert [whole_minutes(s) for s in (0, 1, 60, 61, 150)] == [1, 1, 1, 2, 3]


def test_model_waits_longer_the_further_back_and_nothing_when_an_agent_is_free() -> None:
    model = QueueWaitModel("q", answer_interval=120.0)
    waits = [model.seconds_for(p) for p in (1, 2, 5)]
    assert waits == [60.0, 180.0, 540.0]  # half an interval for the next one, one more interval per caller ahead
    assert QueueWaitModel("q", 120.0, free_agents=2).seconds_for(2) == 0.0
    assert QueueWaitModel("q", 120.0, free_agents=2).seconds_for(3) == 60.0
    assert QueueWaitModel("q", None).seconds_for(1) is None


async def test_estimate_per_position_from_handle_time_and_staffed_agents(engine: AsyncEngine) -> None:
    metrics = QueueMetricsStore(engine, interval_minutes=15)
    # Two calls handled in the window at 200 s and 400 s talk: 300 s average; 60 s wrap-up; 3 agents staffing.
    await metrics.handled("inquiries", 200.0, NOW - timedelta(minutes=20))
    await metrics.handled("inquiries", 400.0, NOW - timedelta(minutes=5))
    await metrics.handled("inquiries", 5000.0, NOW - timedelta(hours=3))  # outside the window: not counted
    await metrics.answered("inquiries", 90.0, NOW - timedelta(minutes=5))

    async def agents() -> list[dict[str, Any]]:
        return [{"name": "a1", "state": "on_call", "queues": ["inquiries"]},
                {"name": "a2", "state": "wrap_up", "queues": ["inquiries", "operator"]},
                {"name": "a3", "state": "ringing", "queues": ["inquiries"]},
                {"name": "a4", "state": "paused", "queues": ["inquiries"]},  # not taking calls
                {"name": "a5", "state": "logged_out", "queues": ["inquiries"]}]

    estimator = WaitEstimator(metrics, agents, window_minutes=60, wrapup_seconds={"inquiries": 60.0},
                              clock=lambda: NOW)
    models = await estimator.models(["inquiries", "operator"])
    assert models["inquiries"].staffed_agents == 3 and models["inquiries"].answer_interval == pytest.approx(120.0)
    first = await estimator.estimates(["inquiries", "operator"], position=1)
    fifth = await estimator.estimates(["inquiries", "operator"], position=5)
    assert first == {"inquiries": pytest.approx(60.0), "operator": None}  # operator: no history, no agent on it
    assert fifth["inquiries"] == pytest.approx(540.0) and fifth["inquiries"] > first["inquiries"]


async def test_without_staffed_agents_the_observed_answer_rate_is_used(engine: AsyncEngine) -> None:
    metrics = QueueMetricsStore(engine, interval_minutes=15)
    for minutes in (10, 20, 30, 40):  # 4 answered in 60 minutes: one every 900 s
        await metrics.answered("complaints", 30.0, NOW - timedelta(minutes=minutes))
    estimator = WaitEstimator(metrics, None, window_minutes=60, clock=lambda: NOW)
    [model] = (await estimator.models(["complaints"])).values()
    assert model.answer_interval == pytest.approx(900.0)
    assert model.seconds_for(3) == pytest.approx(2250.0)


def _announcer(live: FakeQueueLive, ami: FakeAmi, tmp_path: Path, clock: list[datetime],
               model: QueueWaitModel | None = None, language: str = "ko",
               callback_after: float = 20.0) -> tuple[QueueWaitAnnouncer, FakeSynth]:
    class Estimator:
        async def models(self, queues: list[str]) -> dict[str, QueueWaitModel]:
            return {q: model or QueueWaitModel(q, 120.0) for q in queues}

    voice, texts = _english() if language == "en" else _korean()
    synth = FakeSynth()
    announcer = QueueWaitAnnouncer(Estimator(), live, ami,  # type: ignore[arg-type]
                                   SpokenPrompts(tmp_path, voice, synth),
                                   frequency={"inquiries": 8, "operator": 0}, callback_after=callback_after,
                                   texts=texts, clock=lambda: clock[0])
    return announcer, synth


def _entry(uid: str, position: int, joined: datetime, channel: str | None = None) -> dict[str, Any]:
    return {"uniqueid": uid, "channel": channel or f"PJSIP/trunk-0000000{uid}", "position": position,
            "joined_at": joined.isoformat()}


async def test_first_announcement_comes_at_the_configured_interval_then_every_interval(tmp_path: Path) -> None:
    live, ami, clock = FakeQueueLive(), FakeAmi(), [NOW]
    announcer, _ = _announcer(live, ami, tmp_path, clock)
    live.put_waiting("inquiries", _entry("1", 1, NOW))
    heard_at = []
    for half_seconds in range(0, 2 * 25):  # ticks every 0.5 s for 25 s
        clock[0] = NOW + timedelta(seconds=half_seconds / 2)
        if await announcer.tick():
            heard_at.append(half_seconds / 2)
        await announcer.settle(timeout=5)
    assert heard_at == [8.0, 16.0, 24.0]  # not 16 s: nothing else is played first
    [orig, *_] = ami.originates
    assert orig["Channel"] == "Local/s@hotline-queue-announce/n" and orig["Application"] == "ChanSpy"
    assert orig["Data"] == "PJSIP/trunk-00000001,qwE"
    played = Path(orig["Variable"][0].split("=", 1)[1] + ".wav").read_text(encoding="utf-8")
    assert played == "곧 상담원과 연결됩니다. 예상 대기 시간은 약 1분입니다."
    # From callback_after (20 s) on, the same caller also hears the offer.
    last = Path(ami.originates[-1]["Variable"][0].split("=", 1)[1] + ".wav").read_text(encoding="utf-8")
    assert last.endswith("상담원의 전화를 받으시려면 5번을 누르세요.")


async def test_each_caller_hears_their_own_position_and_estimate(tmp_path: Path) -> None:
    live, ami, clock = FakeQueueLive(), FakeAmi(), [NOW]
    announcer, synth = _announcer(live, ami, tmp_path, clock, language="en", callback_after=600)
    live.put_waiting("inquiries", _entry("1", 1, NOW - timedelta(seconds=8)),
                                  _entry("5", 5, NOW - timedelta(seconds=8)))
    assert sorted(await announcer.tick()) == ["PJSIP/trunk-00000001", "PJSIP/trunk-00000005"]
    await announcer.settle(timeout=5)
    said = {o["Data"].split(",")[0]: Path(o["Variable"][0].split("=", 1)[1] + ".wav").read_text(encoding="utf-8")
            for o in ami.originates}
    assert said["PJSIP/trunk-00000001"] == "You are next in line. Your estimated wait is about 1 minutes."
    assert said["PJSIP/trunk-00000005"] == "You are number 5 in line. Your estimated wait is about 9 minutes."
    assert {v for _, v, _ in synth.calls} == {"en-us"}
    # The same sentence is synthesized once and reused.
    before = len(synth.calls)
    clock[0] = NOW + timedelta(seconds=8)
    await announcer.tick()
    await announcer.settle(timeout=5)
    assert len(ami.originates) == 4 and len(synth.calls) == before


async def test_a_caller_seen_late_is_not_told_a_stale_announcement_and_unsafe_channels_are_skipped(
        tmp_path: Path) -> None:
    live, ami, clock = FakeQueueLive(), FakeAmi(), [NOW]
    announcer, _ = _announcer(live, ami, tmp_path, clock)
    # First seen 19 s after joining (bridge restart): the 16 s one is past; the next comes at 24 s.
    live.put_waiting("inquiries", _entry("1", 2, NOW - timedelta(seconds=19)),
                                  _entry("2", 3, NOW - timedelta(seconds=30), channel="PJSIP/x,evil"))
    assert await announcer.tick() == []
    clock[0] = NOW + timedelta(seconds=5)
    assert await announcer.tick() == ["PJSIP/trunk-00000001"]
    await announcer.settle(timeout=5)
    assert all("evil" not in o["Data"] for o in ami.originates)
    # A caller who left is forgotten.
    live.put_waiting("inquiries")
    await announcer.tick()
    assert announcer._said == {}


async def test_no_announcement_while_ami_is_away(tmp_path: Path) -> None:
    live, ami, clock = FakeQueueLive(), FakeAmi(), [NOW + timedelta(seconds=8)]
    announcer, _ = _announcer(live, ami, tmp_path, clock)
    live.put_waiting("inquiries", _entry("1", 1, NOW))
    ami.connected = False
    assert await announcer.tick() == []
    ami.connected = True
    assert await announcer.tick() == ["PJSIP/trunk-00000001"]
    await announcer.aclose()


def test_announcer_refuses_a_language_without_the_texts(tmp_path: Path) -> None:
    with pytest.raises(ValueError, match="queue_position"):
        QueueWaitAnnouncer(WaitEstimator(None), FakeQueueLive(), FakeAmi(),
                           SpokenPrompts(tmp_path, "ko", FakeSynth()),
                           frequency={"q": 8}, callback_after=30,
                           texts={"queue_wait_estimate": "{minutes}", "queue_wait_unknown": "x",
                                  "queue_callback_offer": "5"})


def test_every_language_has_the_queue_texts() -> None:
    for prompt_set in load_prompt_sets(PROJECT_ROOT / "config" / "prompts.yaml").values():
        assert all(prompt_set.texts.get(k) for k in (*ANNOUNCE_TEXTS, TOO_EARLY_PROMPT)), prompt_set.language
        assert "{minutes}" in prompt_set.texts["queue_wait_estimate"]
        assert "{position}" in prompt_set.texts["queue_position"]


def test_queues_conf_has_app_queue_announcements_off_when_the_bridge_announces(tmp_path: Path) -> None:
    cfg = AsteriskConfig(run_dir=tmp_path / "ast", ami_secret="s", queues=[
        QueueConf("inquiries", announce_frequency_seconds=0, periodic_announce=(), periodic_announce_frequency=0)])
    text = (render_asterisk_config(cfg).parent / "queues.conf").read_text()
    inquiries = text.split("[inquiries]")[1]
    assert "announce-frequency = 0\n" in inquiries and "periodic-announce-frequency = 0\n" in inquiries
    assert "announce-holdtime = no" in inquiries
    extensions = (render_asterisk_config(cfg).parent / "extensions.conf").read_text()
    assert "[hotline-queue-announce]" in extensions and "Playback(${ANNOUNCE_FILE})" in extensions
    modules = (render_asterisk_config(cfg).parent / "modules.conf").read_text()
    assert "load => app_chanspy.so" in modules and "load => func_db.so" in modules
