"""Wait estimate from history and the callback offer: units with a fake synthesizer, plus the rendered queues.conf."""
from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest
import pytest_asyncio
from sqlalchemy.ext.asyncio import AsyncEngine

from cases import create_engine_from_url, migrate_database
from config.settings import PROJECT_ROOT
from ivr import load_prompt_sets
from queueing import (
    QueueMetricsStore,
    QueueWaitAnnouncer,
    WaitEstimator,
    periodic_rotation,
)
from queueing.wait_announcements import (
    ROTATION_SLOTS,
    estimate_file,
    offer_file,
    whole_minutes,
)
from telephony.asterisk_process import AsteriskConfig, QueueConf, render_asterisk_config

NOW = datetime(2026, 11, 29, 10, 0, tzinfo=UTC)


@pytest_asyncio.fixture
async def engine(tmp_path: Path) -> AsyncIterator[AsyncEngine]:
    url = f"sqlite+aiosqlite:///{tmp_path / 'w.db'}"
    await asyncio.get_running_loop().run_in_executor(None, migrate_database, url)
    eng = create_engine_from_url(url)
    yield eng
    await eng.dispose()


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


def test_rotation_plays_the_estimate_until_the_callback_may_be_asked_then_the_offer(tmp_path: Path) -> None:
    est, offer = str(estimate_file(tmp_path, "q")), str(offer_file(tmp_path, "q"))
    # Announcement k plays (k+1)*30 s after joining: 30 s is too early for a 60 s callback_after, 60 s is not.
    assert periodic_rotation(tmp_path, "q", 30, 60) == (est,) + (offer,) * (ROTATION_SLOTS - 1)
    assert periodic_rotation(tmp_path, "q", 30, 30) == (offer,) * ROTATION_SLOTS
    assert periodic_rotation(tmp_path, "q", 30, 0) == (offer,) * ROTATION_SLOTS
    assert periodic_rotation(tmp_path, "q", 20, 90)[:4] == (est, est, est, est)
    assert periodic_rotation(tmp_path, "q", 20, 90)[4] == offer
    assert periodic_rotation(tmp_path, "q", 0, 30) == ()
    assert all(Path(p).is_absolute() for p in periodic_rotation(Path("rel"), "q", 30, 60))


def test_whole_minutes_rounds_up_and_never_says_zero() -> None:
    assert [whole_minutes(s) for s in (0, 1, 60, 61, 150)] == [1, 1, 1, 2, 3]


async def test_estimate_comes_from_answered_calls_in_the_window(engine: AsyncEngine) -> None:
    metrics = QueueMetricsStore(engine, interval_minutes=15)
    # Old history (outside the 60-minute window) must not count.
    await metrics.answered("inquiries", 900.0, NOW - timedelta(hours=3))
    await metrics.answered("inquiries", 100.0, NOW - timedelta(minutes=20))
    await metrics.answered("inquiries", 200.0, NOW - timedelta(minutes=5))
    await metrics.abandoned("inquiries", 500.0, NOW - timedelta(minutes=5))  # abandons are not answered waits
    estimator = WaitEstimator(metrics, window_minutes=60, clock=lambda: NOW)
    assert await estimator.estimates(["inquiries", "operator"]) == {"inquiries": pytest.approx(150.0),
                                                                    "operator": None}


async def test_announcer_synthesizes_korean_estimate_and_offer_only_when_it_changes(
        engine: AsyncEngine, tmp_path: Path) -> None:
    metrics = QueueMetricsStore(engine, interval_minutes=15)
    clock = [NOW]
    voice, texts = _korean()
    synth = FakeSynth()
    announcer = QueueWaitAnnouncer(WaitEstimator(metrics, clock=lambda: clock[0]), ["inquiries", "operator"],
                                   tmp_path, voice=voice, texts=texts, synthesize=synth)
    assert sorted(await announcer.refresh_once()) == ["inquiries", "operator"]
    assert estimate_file(tmp_path, "inquiries").with_suffix(".wav").read_text(encoding="utf-8") == "잠시만 기다려 주세요."
    await metrics.answered("inquiries", 130.0, NOW - timedelta(minutes=1))
    assert await announcer.refresh_once() == ["inquiries"]
    assert estimate_file(tmp_path, "inquiries").with_suffix(".wav").read_text(encoding="utf-8") == \
        "예상 대기 시간은 약 3분입니다."
    offer = offer_file(tmp_path, "inquiries").with_suffix(".wav").read_text(encoding="utf-8")
    assert offer.startswith("예상 대기 시간은 약 3분입니다.") and "5번을 누르세요" in offer
    assert {v for _, v, _ in synth.calls} == {"ko"}
    before = len(synth.calls)
    await metrics.answered("inquiries", 170.0, NOW - timedelta(minutes=1))  # average 150 s: still "3 minutes"
    assert await announcer.refresh_once() == []
    assert len(synth.calls) == before


def test_announcer_refuses_a_language_without_the_texts(tmp_path: Path) -> None:
    with pytest.raises(ValueError, match="queue_callback_offer"):
        QueueWaitAnnouncer(WaitEstimator(None), ["q"], tmp_path, voice="ko",
                           texts={"queue_wait_estimate": "{minutes}", "queue_wait_unknown": "x"},
                           synthesize=FakeSynth())


def test_every_language_has_the_queue_texts() -> None:
    for prompt_set in load_prompt_sets(PROJECT_ROOT / "config" / "prompts.yaml").values():
        assert "{minutes}" in prompt_set.texts["queue_wait_estimate"]
        assert prompt_set.texts["queue_wait_unknown"] and prompt_set.texts["queue_callback_offer"]


def test_queues_conf_plays_the_rotation_and_not_asterisks_holdtime(tmp_path: Path) -> None:
    rotation = periodic_rotation(tmp_path / "prompts", "inquiries", 30, 60)
    cfg = AsteriskConfig(run_dir=tmp_path / "ast", ami_secret="s", queues=[
        QueueConf("inquiries", announce_frequency_seconds=30, periodic_announce=rotation,
                  periodic_announce_frequency=30),
        QueueConf("operator")])
    text = (render_asterisk_config(cfg).parent / "queues.conf").read_text()
    inquiries, operator = text.split("[inquiries]")[1].split("[operator]")
    assert f"periodic-announce = {','.join(rotation)}\n" in inquiries
    assert "periodic-announce-frequency = 30\n" in inquiries
    assert "announce-holdtime = no" in inquiries
    assert "periodic-announce-frequency = 0\n" in operator
