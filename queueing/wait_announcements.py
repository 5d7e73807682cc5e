"""What a waiting caller hears besides their position: the queue's wait estimate and, once eligible, the callback offer.

app_queue (Asterisk 16) has no per-call periodic announcement, so each queue gets two synthesized files that the
bridge keeps current: `queue-wait-<q>` (the estimate) and `queue-wait-offer-<q>` (estimate + "press 5 to be
called back"). queues.conf plays them as a rotation of periodic announcements at the queue's announcement
interval: the plain estimate until `callback_after_seconds` have passed, the offer from then on. The estimate is
the average speed of answer of that queue over the last `window_minutes` of interval metrics (history kept in the
database), not Asterisk's in-memory running average.
"""
from __future__ import annotations

import asyncio
import logging
import math
from collections.abc import Callable
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

log = logging.getLogger(__name__)

# app_queue keeps at most this many periodic announcements (MAX_PERIODIC_ANNOUNCEMENTS) and wraps after the last.
ROTATION_SLOTS = 10
ESTIMATE_PROMPT, UNKNOWN_PROMPT, OFFER_PROMPT = "queue_wait_estimate", "queue_wait_unknown", "queue_callback_offer"


def estimate_file(prompts_dir: Path, queue: str) -> Path:
    """Playable path (no extension) of the queue's estimate announcement."""
    return Path(prompts_dir).absolute() / f"queue-wait-{queue}"


def offer_file(prompts_dir: Path, queue: str) -> Path:
    """Playable path (no extension) of the queue's estimate + callback offer announcement."""
    return Path(prompts_dir).absolute() / f"queue-wait-offer-{queue}"


def periodic_rotation(prompts_dir: Path, queue: str, frequency: int, callback_after: int) -> tuple[str, ...]:
    """The periodic-announce list: announcement k plays at (k+1)*frequency s; the offer once callback_after passed.

    After ROTATION_SLOTS announcements app_queue starts the list again, so the offer slots fill the rest of it
    (a caller still waiting then hears the plain estimate again for the first slots: Asterisk's limit)."""
    if frequency <= 0:
        return ()
    plain = max(0, min(ROTATION_SLOTS - 1, math.ceil(callback_after / frequency) - 1))
    return ((str(estimate_file(prompts_dir, queue)),) * plain
            + (str(offer_file(prompts_dir, queue)),) * (ROTATION_SLOTS - plain))


class WaitEstimator:
    """A queue's expected wait from recent history: average wait of the calls answered in the last window."""

    def __init__(self, metrics: Any, *, window_minutes: int = 60,
                 clock: Callable[[], datetime] = lambda: datetime.now(UTC)) -> None:
        self._metrics = metrics  # QueueMetricsStore (or anything with figures(queues, since=))
        self._window = timedelta(minutes=window_minutes)
        self._clock = clock

    async def estimates(self, queues: list[str]) -> dict[str, float | None]:
        """Seconds per queue; None when nobody was answered in the window (nothing honest to say)."""
        figures = await self._metrics.figures(queues, since=self._clock() - self._window)
        return {f.queue: f.average_speed_of_answer for f in figures}


def whole_minutes(seconds: float) -> int:
    """Rounded up, at least one: "about 0 minutes" is never said."""
    return max(1, math.ceil(seconds / 60))


class QueueWaitAnnouncer:
    """Keeps each queue's estimate and offer announcements synthesized from the current estimate."""

    def __init__(self, estimator: WaitEstimator, queues: list[str], prompts_dir: Path, *, voice: str,
                 texts: dict[str, str], synthesize: Callable[[str, str, Path], Any]) -> None:
        missing = [k for k in (ESTIMATE_PROMPT, UNKNOWN_PROMPT, OFFER_PROMPT) if not texts.get(k)]
        if missing:
            raise ValueError(f"prompt texts lack {', '.join(missing)} (config/prompts.yaml)")
        self._estimator = estimator
        self._queues = list(queues)
        self._dir = Path(prompts_dir)
        self._voice = voice
        self._texts = texts
        self._synthesize = synthesize  # (text, voice, target .wav) -> path; blocking: run in an executor
        self._spoken: dict[str, str] = {}  # queue -> the estimate sentence its files hold now

    def sentence(self, seconds: float | None) -> str:
        """What the estimate announcement says."""
        if seconds is None:
            return self._texts[UNKNOWN_PROMPT]
        return self._texts[ESTIMATE_PROMPT].format(minutes=whole_minutes(seconds))

    async def refresh_once(self) -> list[str]:
        """Re-synthesize the queues whose estimate sentence changed; return those queues."""
        estimates = await self._estimator.estimates(self._queues)
        self._dir.mkdir(parents=True, exist_ok=True)
        loop = asyncio.get_running_loop()
        changed = []
        for queue in self._queues:
            text = self.sentence(estimates.get(queue))
            if self._spoken.get(queue) == text:
                continue
            await loop.run_in_executor(None, self._synthesize, text, self._voice,
                                       estimate_file(self._dir, queue).with_suffix(".wav"))
            await loop.run_in_executor(None, self._synthesize, f"{text} {self._texts[OFFER_PROMPT]}", self._voice,
                                       offer_file(self._dir, queue).with_suffix(".wav"))
            self._spoken[queue] = text
            changed.append(queue)
            log.info("queue %s: wait announcement now %r", queue, text)
        return changed

    async def run(self, interval: float = 30.0) -> None:
        """Refresh now and then every interval, forever (cancel to stop)."""
        while True:
            try:
                await self.refresh_once()
            except asyncio.CancelledError:
                raise
            except Exception as exc:  # database or espeak-ng trouble: the previous files keep playing
                log.warning("queue wait announcements not refreshed: %s", exc)
            await asyncio.sleep(interval)
