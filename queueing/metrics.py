"""Queue metrics per queue and interval, kept as sums in the database; figures and Prometheus text from them."""
from __future__ import annotations

import asyncio
import logging
from collections.abc import Callable, Iterable
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from typing import Any

from prometheus_client import CollectorRegistry, Counter, Gauge, generate_latest
from sqlalchemy import func, select, update
from sqlalchemy.ext.asyncio import AsyncEngine

from storage import dialect_insert, finish_on_cancel

from .queue_tables import QueueIntervalMetricRow

log = logging.getLogger(__name__)
_t = QueueIntervalMetricRow.__table__
_SUMS = ("offered", "answered", "answered_within_sl", "answer_wait_sum", "abandoned", "abandon_wait_sum", "handled",
         "handle_time_sum")


@dataclass(frozen=True)
class QueueFigures:
    """One queue's figures over some intervals."""

    queue: str
    offered: int
    answered: int
    abandoned: int
    answered_within_sl: int
    service_level: float | None  # answered within N s / (answered + abandoned)
    average_speed_of_answer: float | None
    average_abandon_wait: float | None
    average_handle_time: float | None
    handled: int
    handle_time_sum: float
    answer_wait_sum: float
    longest_wait: float

    def to_dict(self) -> dict[str, Any]:
        """JSON-safe dict."""
        return dict(self.__dict__)


def _ratio(a: float, b: float) -> float | None:
    return a / b if b else None


@finish_on_cancel(cancellable=("run_flusher",))  # it runs until cancelled; its flushes are whole
class QueueMetricsStore:
    """Adds each queue event into its (queue, interval) row; reads figures back for the API and /metrics."""

    def __init__(self, engine: AsyncEngine, *, interval_minutes: int = 15, service_level_seconds: float = 20.0,
                 clock: Callable[[], datetime] = lambda: datetime.now(UTC)) -> None:
        if not 1 <= interval_minutes <= 1440 or 1440 % interval_minutes:
            raise ValueError(f"interval_minutes {interval_minutes!r} must divide a day (1-1440)")
        self._engine = engine
        self._insert = dialect_insert(engine)
        self._interval = timedelta(minutes=interval_minutes)
        self.service_level_seconds = float(service_level_seconds)
        self._clock = clock
        # Increments wait here until flush() (every second from run_flusher, and at shutdown): one transaction
        # for a burst of events instead of one per event. A crash loses at most that second of counts.
        self._pending: dict[tuple[str, datetime], dict[str, float]] = {}
        self._flush_lock = asyncio.Lock()

    def interval_of(self, at: datetime) -> datetime:
        """Start of the interval holding `at` (UTC)."""
        at = at.astimezone(UTC)
        day = at.replace(hour=0, minute=0, second=0, microsecond=0)
        n = (at - day) // self._interval
        return day + n * self._interval

    async def _add(self, queue: str, at: datetime | None, longest: float | None = None, **amounts: float) -> None:
        row = self._pending.setdefault((queue, self.interval_of(at or self._clock())), {})
        for name, value in amounts.items():
            row[name] = row.get(name, 0) + value
        if longest is not None:
            row["longest_wait"] = max(row.get("longest_wait", 0.0), longest)

    async def flush(self) -> None:
        """Write the increments collected so far (one transaction)."""
        async with self._flush_lock:
            pending, self._pending = self._pending, {}
            if not pending:
                return
            zeros = {name: 0 for name in _SUMS}
            try:
                async with self._engine.begin() as conn:
                    for (queue, start), amounts in pending.items():
                        await conn.execute(
                            self._insert(_t).values(queue=queue, interval_start=start, longest_wait=0.0, **zeros)
                            .on_conflict_do_nothing(index_elements=[_t.c.queue, _t.c.interval_start]))
                        changes: dict[str, Any] = {n: _t.c[n] + v for n, v in amounts.items() if n != "longest_wait"}
                        if "longest_wait" in amounts:
                            biggest = func.max if conn.dialect.name == "sqlite" else func.greatest
                            changes["longest_wait"] = biggest(_t.c.longest_wait, amounts["longest_wait"])
                        await conn.execute(update(_t).where(_t.c.queue == queue, _t.c.interval_start == start)
                                           .values(**changes))
            except (Exception, asyncio.CancelledError):
                self._merge_back(pending)  # not written: keep them for the next flush (re-raised, never swallowed)
                raise

    def _merge_back(self, pending: dict[tuple[str, datetime], dict[str, float]]) -> None:
        for key, amounts in pending.items():
            row = self._pending.setdefault(key, {})
            for name, value in amounts.items():
                row[name] = max(row.get(name, 0.0), value) if name == "longest_wait" else row.get(name, 0) + value

    async def run_flusher(self, interval: float = 1.0) -> None:
        """Flush every `interval` seconds until cancelled."""
        while True:
            await asyncio.sleep(interval)
            try:
                await self.flush()
            except Exception as exc:  # database away for a moment: the counts stay pending
                log.warning("queue metrics: flush failed (kept for the next one): %s", exc)

    async def offered(self, queue: str, at: datetime | None = None) -> None:
        """A call joined the queue."""
        await self._add(queue, at, offered=1)

    async def answered(self, queue: str, wait_seconds: float, at: datetime | None = None) -> None:
        """An agent answered after wait_seconds in the queue."""
        within = 1 if wait_seconds <= self.service_level_seconds else 0
        await self._add(queue, at, longest=wait_seconds, answered=1, answered_within_sl=within,
                        answer_wait_sum=wait_seconds)

    async def abandoned(self, queue: str, wait_seconds: float, at: datetime | None = None) -> None:
        """The caller hung up in the queue after wait_seconds."""
        await self._add(queue, at, longest=wait_seconds, abandoned=1, abandon_wait_sum=wait_seconds)

    async def handled(self, queue: str, talk_seconds: float, at: datetime | None = None) -> None:
        """An answered call ended after talk_seconds (its handle time)."""
        await self._add(queue, at, handled=1, handle_time_sum=talk_seconds)

    async def figures(self, queues: Iterable[str], since: datetime | None = None,
                      until: datetime | None = None) -> list[QueueFigures]:
        """Figures per queue over the intervals starting in [since, until) (all time when not given)."""
        await self.flush()
        cols = [func.coalesce(func.sum(_t.c[name]), 0) for name in _SUMS]
        stmt = select(_t.c.queue, *cols, func.coalesce(func.max(_t.c.longest_wait), 0.0)).group_by(_t.c.queue)
        if since is not None:
            stmt = stmt.where(_t.c.interval_start >= self.interval_of(since))
        if until is not None:
            stmt = stmt.where(_t.c.interval_start < until)
        async with self._engine.connect() as conn:
            rows = {r[0]: r[1:] for r in (await conn.execute(stmt)).all()}
        out = []
        for queue in queues:
            values = rows.get(queue, (0,) * (len(_SUMS) + 1))
            s = dict(zip(_SUMS, values, strict=False))  # the row has one more value than _SUMS names
            out.append(QueueFigures(
                queue=queue, offered=int(s["offered"]), answered=int(s["answered"]), abandoned=int(s["abandoned"]),
                answered_within_sl=int(s["answered_within_sl"]),
                service_level=_ratio(s["answered_within_sl"], s["answered"] + s["abandoned"]),
                average_speed_of_answer=_ratio(s["answer_wait_sum"], s["answered"]),
                average_abandon_wait=_ratio(s["abandon_wait_sum"], s["abandoned"]),
                average_handle_time=_ratio(s["handle_time_sum"], s["handled"]),
                handled=int(s["handled"]), handle_time_sum=float(s["handle_time_sum"]),
                answer_wait_sum=float(s["answer_wait_sum"]), longest_wait=float(values[-1])))
        return out

    async def intervals(self, queue: str, since: datetime, limit: int = 96) -> list[dict[str, Any]]:
        """The raw interval rows of one queue from `since`, oldest first."""
        await self.flush()
        stmt = (select(_t).where(_t.c.queue == queue, _t.c.interval_start >= self.interval_of(since))
                .order_by(_t.c.interval_start).limit(limit))
        async with self._engine.connect() as conn:
            rows = (await conn.execute(stmt)).all()
        return [{**r._asdict(), "interval_start": r.interval_start.isoformat()} for r in rows]


def prometheus_text(figures: Iterable[QueueFigures], live: dict[str, Any], service_level_seconds: float) -> bytes:
    """Prometheus exposition text: all-time counters from the database plus live gauges from Redis."""
    registry = CollectorRegistry(auto_describe=True)
    q = ["queue"]
    offered = Counter("hotline_queue_offered", "Calls that joined the queue", q, registry=registry)
    answered = Counter("hotline_queue_answered", "Calls answered by an agent", q, registry=registry)
    abandoned = Counter("hotline_queue_abandoned", "Calls abandoned in the queue", q, registry=registry)
    within = Counter("hotline_queue_answered_within_service_level",
                     f"Calls answered within {service_level_seconds:g} s", q, registry=registry)
    wait = Counter("hotline_queue_answer_wait_seconds", "Sum of waits of answered calls", q, registry=registry)
    handle = Counter("hotline_queue_handle_seconds", "Sum of handle (talk) times", q, registry=registry)
    level = Gauge("hotline_queue_service_level_ratio", "Answered within the threshold / (answered + abandoned)", q,
                  registry=registry)
    asa = Gauge("hotline_queue_average_speed_of_answer_seconds", "Average wait of answered calls", q,
                registry=registry)
    aht = Gauge("hotline_queue_average_handle_time_seconds", "Average talk time", q, registry=registry)
    longest = Gauge("hotline_queue_longest_wait_seconds", "Longest wait recorded", q, registry=registry)
    waiting = Gauge("hotline_queue_calls_waiting", "Calls waiting now", q, registry=registry)
    agents = Gauge("hotline_agents", "Agents by state now", ["state"], registry=registry)
    for f in figures:
        offered.labels(f.queue).inc(f.offered)
        answered.labels(f.queue).inc(f.answered)
        abandoned.labels(f.queue).inc(f.abandoned)
        within.labels(f.queue).inc(f.answered_within_sl)
        wait.labels(f.queue).inc(f.answer_wait_sum)
        handle.labels(f.queue).inc(f.handle_time_sum)
        level.labels(f.queue).set(f.service_level if f.service_level is not None else float("nan"))
        asa.labels(f.queue).set(f.average_speed_of_answer or 0.0)
        aht.labels(f.queue).set(f.average_handle_time or 0.0)
        longest.labels(f.queue).set(f.longest_wait)
    for queue, count in live.get("waiting", {}).items():
        waiting.labels(queue).set(count)
    for state, count in live.get("agents", {}).items():
        agents.labels(state).set(count)
    return generate_latest(registry)
