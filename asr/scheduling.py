"""Admission of recognitions onto the recognizer's threads: a caller waiting goes ahead of batch work."""
from __future__ import annotations

import asyncio
import heapq
import itertools
from dataclasses import dataclass, field
from enum import IntEnum


class RecognitionPriority(IntEnum):
    """Who waits on a recognition: a caller on the line (LIVE), or nobody in particular (BATCH)."""

    LIVE = 0  # a speech menu's answer: the caller hears silence until it is recognized
    BATCH = 1  # recorded descriptions and whole calls: the case gets the transcript when it is done


@dataclass(order=True)
class _Waiter:
    priority: int
    seq: int
    future: asyncio.Future[None] = field(compare=False)


class RecognitionSlots:
    """Counts running recognitions; a free slot goes to the waiting LIVE recognition first, then to BATCH in
    arrival order, and BATCH never holds more than batch_limit slots (the rest stay free for callers).

    slots: how many recognitions run at once (the thread pool's size); batch_limit: at most this many of them
    BATCH (1 to slots)."""

    def __init__(self, slots: int, batch_limit: int) -> None:
        if slots < 1:
            raise ValueError(f"recognition slots must be at least 1 (got {slots})")
        if not 1 <= batch_limit <= slots:
            raise ValueError(f"batch limit {batch_limit} is not from 1 to {slots}")
        self._slots = slots
        self._batch_limit = batch_limit
        self._running = {RecognitionPriority.LIVE: 0, RecognitionPriority.BATCH: 0}
        self._waiting: list[_Waiter] = []
        self._seq = itertools.count()

    @property
    def running(self) -> dict[RecognitionPriority, int]:
        """Recognitions holding a slot, by priority."""
        return dict(self._running)

    @property
    def waiting(self) -> int:
        """Recognitions waiting for a slot."""
        return sum(1 for w in self._waiting if not w.future.done())

    async def acquire(self, priority: RecognitionPriority) -> None:
        """Wait for a slot (release it with release(priority)); a cancelled wait takes none."""
        priority = RecognitionPriority(priority)
        future: asyncio.Future[None] = asyncio.get_running_loop().create_future()
        heapq.heappush(self._waiting, _Waiter(int(priority), next(self._seq), future))
        self._dispatch()
        try:
            await future
        except asyncio.CancelledError:
            if future.done() and not future.cancelled():
                self.release(priority)  # granted just as the wait was cancelled: hand it on
            else:
                future.cancel()  # dropped from the heap when it reaches the top
            raise

    def release(self, priority: RecognitionPriority) -> None:
        """A recognition of this priority stopped running: its slot goes to the next waiter."""
        priority = RecognitionPriority(priority)
        if self._running[priority] <= 0:
            raise RuntimeError(f"release of a {priority.name} recognition slot that was not held")
        self._running[priority] -= 1
        self._dispatch()

    def _can_start(self, priority: RecognitionPriority) -> bool:
        if sum(self._running.values()) >= self._slots:
            return False
        return priority == RecognitionPriority.LIVE or self._running[priority] < self._batch_limit

    def _dispatch(self) -> None:
        # The heap is ordered by (priority, arrival): every LIVE waiter comes before any BATCH one, and BATCH
        # waiters share one limit, so when the first waiter cannot start, none behind it can.
        while self._waiting:
            top = self._waiting[0]
            if top.future.done():  # its wait was cancelled
                heapq.heappop(self._waiting)
                continue
            priority = RecognitionPriority(top.priority)
            if not self._can_start(priority):
                return
            heapq.heappop(self._waiting)
            self._running[priority] += 1
            top.future.set_result(None)
