"""TaskOwner: creates named tasks, keeps them (asyncio holds tasks only weakly), cancels and awaits them."""
from __future__ import annotations

import asyncio
import logging
from collections.abc import Coroutine
from typing import Any, TypeVar

T = TypeVar("T")

log = logging.getLogger(__name__)


class TaskOwner:
    """Owns a set of named background tasks: spawn keeps each until it ends; aclose cancels and awaits them all.

    A task that ends with an exception is logged (with its name) when it ends, so no failure goes unseen;
    cancellation is never logged as a failure and never swallowed from the task's own point of view."""

    def __init__(self, name: str) -> None:
        self.name = name
        self._tasks: set[asyncio.Task[Any]] = set()
        self._closed = False

    def spawn(self, coro: Coroutine[Any, Any, T], name: str) -> asyncio.Task[T]:
        """Start coro as a task named name, kept until it ends; refused (RuntimeError) once closed."""
        if self._closed:
            coro.close()
            raise RuntimeError(f"{self.name}: cannot start task {name!r}, the owner is shutting down")
        task = asyncio.get_running_loop().create_task(coro, name=name)
        self._tasks.add(task)
        task.add_done_callback(self._done)
        return task

    def _done(self, task: asyncio.Task[Any]) -> None:
        self._tasks.discard(task)
        if task.cancelled():
            return
        exc = task.exception()
        if exc is not None:
            log.error("%s: task %s failed: %s", self.name, task.get_name(), exc, exc_info=exc)

    def __len__(self) -> int:
        return len(self._tasks)

    @property
    def names(self) -> list[str]:
        """The names of the tasks still running, sorted."""
        return sorted(t.get_name() for t in self._tasks)

    async def wait(self, timeout: float | None = None) -> set[asyncio.Task[Any]]:
        """Wait up to timeout seconds for the running tasks to end on their own; returns those still running."""
        if not self._tasks:
            return set()
        _, pending = await asyncio.wait(set(self._tasks), timeout=timeout)
        return pending

    async def cancel_all(self) -> None:
        """Cancel the running tasks and wait until every one has ended; new tasks may be started after."""
        while self._tasks:
            tasks = set(self._tasks)
            for task in tasks:
                task.cancel()
            await asyncio.gather(*tasks, return_exceptions=True)

    async def aclose(self) -> None:
        """Refuse new tasks, cancel the running ones and wait until every one has ended."""
        self._closed = True
        await self.cancel_all()
