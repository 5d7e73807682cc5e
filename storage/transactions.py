"""finish_on_cancel: a store's transactions stay whole when their callers are cancelled."""
from __future__ import annotations

import asyncio
import functools
import inspect
from collections.abc import Awaitable, Callable, Coroutine
from typing import Any, TypeVar

_StoreClass = TypeVar("_StoreClass", bound=type)


def finish_on_cancel(cls: _StoreClass | None = None, *,
                     cancellable: tuple[str, ...] = ()) -> Any:
    """Class decorator for stores: each public coroutine method runs to its end even when its caller is cancelled.

    A task cancelled between two statements of a transaction (shutdown, a caller hanging up mid-step) leaves the
    transaction half done: the write is lost, and with aiosqlite the cancelled connection can be dropped without
    being closed, so SQLite's write lock stays held and every other writer waits out the busy timeout. Here the
    method runs in its own task; a cancel of the caller waits for it to commit or roll back, then goes on
    (CancelledError is re-raised, never swallowed). Store methods are short; the ones that run until cancelled
    (a periodic flusher) are named in `cancellable` and left as they are."""
    def decorate(store: _StoreClass) -> _StoreClass:
        for name, member in list(vars(store).items()):
            if name.startswith("_") or name in cancellable or not inspect.iscoroutinefunction(member):
                continue
            setattr(store, name, _finishing(member, f"db-{store.__name__}.{name}"))
        return store

    return decorate if cls is None else decorate(cls)


def _finishing(method: Callable[..., Coroutine[Any, Any, Any]], task_name: str) -> Callable[..., Awaitable[Any]]:
    running: set[asyncio.Task[Any]] = set()  # kept: asyncio holds tasks only weakly

    @functools.wraps(method)
    async def run(*args: Any, **kwargs: Any) -> Any:
        task = asyncio.get_running_loop().create_task(method(*args, **kwargs), name=task_name)
        running.add(task)
        task.add_done_callback(_forget(running))
        try:
            return await asyncio.shield(task)
        except asyncio.CancelledError:
            if not task.done():
                await asyncio.wait([task])  # a second cancel ends this wait; the task still finishes on its own
            raise

    return run


def _forget(running: set[asyncio.Task[Any]]) -> Callable[[asyncio.Task[Any]], None]:
    def done(task: asyncio.Task[Any]) -> None:
        running.discard(task)
        if not task.cancelled():
            task.exception()  # retrieved: the caller saw it, or was cancelled and no longer wants it
    return done
