"""What a waiting caller hears: their own position, the wait estimate for that position and, once eligible, the
callback offer, every `announce_frequency_seconds` counted from the moment they joined the queue.

app_queue (Asterisk 16) has no per-call announcement: its periodic announcements are the same files for every
caller, and when its position announcement falls due at the same second it plays first, pushing the periodic one
back by the length of the position prompt (the first wait announcement came at ~16 s instead of 8 s). So app_queue's
own announcements are off and the bridge says it: at joined_at + k * frequency it originates
Local/s@hotline-queue-announce (which plays the caller's sentence) with ChanSpy(<caller>,qwE) on the other half,
whispering the sentence over the hold music while app_queue keeps the caller in line and listens for key 5.

The estimate for position p comes from recent history (queue metrics of the last `window_minutes`): the average
handle time (+ wrap-up) of the queue's calls divided by the agents staffing it now gives the seconds between two
answers; with no staffed agents, the observed answer rate of the window does. p callers ahead of free agents wait
about (p - free - 0.5) answer intervals.
"""
from __future__ import annotations

import asyncio
import hashlib
import logging
import math
import re
from collections.abc import Awaitable, Callable, Coroutine
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

from lifecycle import TaskOwner

log = logging.getLogger(__name__)

ESTIMATE_PROMPT, UNKNOWN_PROMPT, OFFER_PROMPT = "queue_wait_estimate", "queue_wait_unknown", "queue_callback_offer"
POSITION_PROMPT, NEXT_PROMPT = "queue_position", "queue_position_next"
TOO_EARLY_PROMPT = "queue_callback_too_early"
ANNOUNCE_TEXTS = (POSITION_PROMPT, NEXT_PROMPT, ESTIMATE_PROMPT, UNKNOWN_PROMPT, OFFER_PROMPT)
STAFFED_STATES = frozenset({"available", "on_call", "ringing", "wrap_up"})  # taking this queue's calls
_CHANNEL = re.compile(r"^[A-Za-z]+/[A-Za-z0-9_.@:+-]+$")  # safe inside ChanSpy()'s argument


def whole_minutes(seconds: float) -> int:
    """Rounded up, at least one: "about 0 minutes" is never said."""
    return max(1, math.ceil(seconds / 60))


@dataclass(frozen=True)
class QueueWaitModel:
    """How fast one queue answers now: seconds between two answers, and agents free this moment."""

    queue: str
    answer_interval: float | None  # None: no history and nobody staffing: nothing honest to say
    free_agents: int = 0
    staffed_agents: int = 0

    def seconds_for(self, position: int) -> float | None:
        """Expected wait of the caller at this position (1 = next); longer the further back."""
        if self.answer_interval is None:
            return None
        ahead = max(1, position) - self.free_agents
        if ahead <= 0:
            return 0.0  # a free agent is being rung for them
        return (ahead - 0.5) * self.answer_interval


class WaitEstimator:
    """Per-position wait of each queue from the last window of metrics and the agents staffing it now."""

    def __init__(self, metrics: Any, agents: Callable[[], Awaitable[list[dict[str, Any]]]] | None = None, *,
                 window_minutes: int = 60, wrapup_seconds: dict[str, float] | None = None,
                 clock: Callable[[], datetime] = lambda: datetime.now(UTC)) -> None:
        self._metrics = metrics  # QueueMetricsStore (or anything with figures(queues, since=))
        self._agents = agents  # QueueLiveState.agents: [{"name", "state", "queues"}, ...]
        self._window = timedelta(minutes=window_minutes)
        self._wrapup = dict(wrapup_seconds or {})
        self._clock = clock

    async def models(self, queues: list[str]) -> dict[str, QueueWaitModel]:
        """One model per queue."""
        figures = await self._metrics.figures(queues, since=self._clock() - self._window)
        agents = await self._agents() if self._agents is not None else []
        out = {}
        for f in figures:
            serving = [a for a in agents if f.queue in (a.get("queues") or [])]
            staffed = sum(1 for a in serving if a.get("state") in STAFFED_STATES)
            free = sum(1 for a in serving if a.get("state") == "available")
            interval: float | None = None
            if staffed and f.average_handle_time is not None:
                interval = (f.average_handle_time + self._wrapup.get(f.queue, 0.0)) / staffed
            elif f.answered:
                interval = self._window.total_seconds() / f.answered  # observed answer rate of the window
            out[f.queue] = QueueWaitModel(f.queue, interval, free_agents=free, staffed_agents=staffed)
        return out

    async def estimates(self, queues: list[str], position: int = 1) -> dict[str, float | None]:
        """Seconds per queue for a caller at this position; None when there is nothing honest to say."""
        return {q: m.seconds_for(position) for q, m in (await self.models(queues)).items()}


class SpokenPrompts:
    """Synthesized sentences, one file per (voice, text): made once (off the event loop), then reused."""

    def __init__(self, directory: Path, voice: str, synthesize: Callable[[str, str, Path], Any]) -> None:
        self._dir = Path(directory).absolute()
        self._voice = voice
        self._synthesize = synthesize  # (text, voice, target .wav) -> path; blocking
        self._locks: dict[str, asyncio.Lock] = {}

    def file_for(self, text: str) -> Path:
        """Playable path (no extension) of this sentence."""
        digest = hashlib.sha256(f"{self._voice}\0{text}".encode()).hexdigest()[:20]
        return self._dir / f"queue-say-{digest}"

    async def path(self, text: str) -> str:
        """The sentence's playable path, synthesized first if it is new."""
        base = self.file_for(text)
        wav = base.with_suffix(".wav")
        lock = self._locks.setdefault(base.name, asyncio.Lock())
        async with lock:
            if not wav.exists():
                self._dir.mkdir(parents=True, exist_ok=True)
                await asyncio.get_running_loop().run_in_executor(None, self._synthesize, text, self._voice, wav)
        return str(base)


class QueueWaitAnnouncer:
    """Whispers each waiting caller's position, estimate and (once eligible) callback offer at their own interval."""

    def __init__(self, estimator: WaitEstimator, queue_live: Any, ami: Any, prompts: SpokenPrompts, *,
                 frequency: dict[str, int], callback_after: float, texts: dict[str, str],
                 clock: Callable[[], datetime] = lambda: datetime.now(UTC), refresh_seconds: float = 10.0,
                 prepare_ahead: float = 3.0, late_grace: float = 2.0) -> None:
        missing = [k for k in ANNOUNCE_TEXTS if not texts.get(k)]
        if missing:
            raise ValueError(f"prompt texts lack {', '.join(missing)} (config/prompts.yaml)")
        self._estimator = estimator
        self._live = queue_live
        self._ami = ami
        self._prompts = prompts
        self._frequency = {q: int(s) for q, s in frequency.items() if int(s) > 0}
        self._callback_after = float(callback_after)
        self._texts = texts
        self._clock = clock
        self._refresh = timedelta(seconds=refresh_seconds)
        self._ahead = prepare_ahead
        self._grace = late_grace  # first seen this late after a due time (bridge restart): that one is skipped
        self._models: dict[str, QueueWaitModel] = {}
        self._models_at: datetime | None = None
        self._said: dict[str, int] = {}  # caller uniqueid -> announcements made (k)
        self._tasks = TaskOwner("queue wait announcer")
        self.announced: list[tuple[str, str]] = []  # (channel, sentence), most recent last (kept short)

    def sentence(self, position: int, seconds: float | None, offer: bool) -> str:
        """What the caller at this position hears."""
        where = self._texts[NEXT_PROMPT] if position <= 1 else self._texts[POSITION_PROMPT].format(position=position)
        wait = self._texts[UNKNOWN_PROMPT] if seconds is None else \
            self._texts[ESTIMATE_PROMPT].format(minutes=whole_minutes(seconds))
        return f"{where} {wait} {self._texts[OFFER_PROMPT]}" if offer else f"{where} {wait}"

    async def settle(self, timeout: float | None = None) -> None:
        """Wait up to timeout seconds for the announcements being played to end on their own."""
        await self._tasks.wait(timeout)

    async def aclose(self) -> None:
        """Cancel and await announcements being originated."""
        await self._tasks.aclose()

    async def _current_models(self, now: datetime) -> dict[str, QueueWaitModel]:
        if self._models_at is None or now - self._models_at >= self._refresh:
            self._models = await self._estimator.models(list(self._frequency))
            self._models_at = now
        return self._models

    async def tick(self) -> list[str]:
        """Announce to every caller whose next announcement is due; return their channels."""
        if not self._frequency or not getattr(self._ami, "connected", True):
            return []
        now = self._clock()
        models = await self._current_models(now)
        seen: set[str] = set()
        started = []
        for queue, every in self._frequency.items():
            for entry in await self._live.waiting(queue):
                uid, channel = str(entry.get("uniqueid") or ""), str(entry.get("channel") or "")
                try:
                    joined = datetime.fromisoformat(str(entry.get("joined_at")))
                    position = int(entry.get("position") or 0)
                except ValueError:
                    continue
                if not uid or not _CHANNEL.match(channel) or position < 1:
                    continue
                seen.add(uid)
                elapsed = (now - joined).total_seconds()
                if uid not in self._said:
                    self._said[uid] = max(0, math.floor((elapsed - self._grace) / every))
                model = models.get(queue) or QueueWaitModel(queue, None)
                text = self.sentence(position, model.seconds_for(position), elapsed >= self._callback_after)
                due = math.floor(elapsed / every)
                if due > self._said[uid]:
                    self._said[uid] = due
                    started.append(channel)
                    self._spawn(self._whisper(channel, text), f"announce-{uid}")
                elif (self._said[uid] + 1) * every - elapsed <= self._ahead:
                    # Synthesize a new sentence before it is due, so it plays on time.
                    self._spawn(self._prepare(text), f"announce-prepare-{uid}")
        for gone in set(self._said) - seen:
            del self._said[gone]
        return started

    def _spawn(self, coro: Coroutine[Any, Any, None], name: str) -> None:
        self._tasks.spawn(coro, name)

    async def _prepare(self, text: str) -> None:
        try:
            await self._prompts.path(text)
        except Exception as exc:  # espeak-ng trouble: retried when the announcement is due
            log.warning("queue announcement %r not synthesized: %s", text, exc)

    async def _whisper(self, channel: str, text: str) -> None:
        try:
            path = await self._prompts.path(text)
            await self._ami.action({
                "Action": "Originate", "Channel": "Local/s@hotline-queue-announce/n", "Application": "ChanSpy",
                "Data": f"{channel},qwE", "Async": "true", "Timeout": "5000",
                "CallerID": "\"queue announcement\" <0>", "Variable": [f"ANNOUNCE_FILE={path}"]},
                timeout=10, check=False)
        except asyncio.CancelledError:
            raise
        except Exception as exc:  # AMI away or espeak-ng failing: this one is skipped, the next comes on time
            log.warning("queue announcement to %s failed: %s", channel, exc)
            return
        self.announced = [*self.announced[-49:], (channel, text)]
        log.info("queue announcement to %s: %r", channel, text)

    async def run(self, interval: float = 0.5) -> None:
        """Announce forever (cancel to stop)."""
        while True:
            try:
                await self.tick()
            except asyncio.CancelledError:
                raise
            except Exception as exc:  # database or Redis away for a moment: next round
                log.warning("queue announcements: %s", exc)
            await asyncio.sleep(interval)
