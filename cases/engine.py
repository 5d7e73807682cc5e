"""Async engine construction for the supported databases (SQLite via aiosqlite, PostgreSQL via asyncpg), and
finish_on_cancel, which keeps a store's transactions whole when their callers are cancelled."""
from __future__ import annotations

import asyncio
import functools
import inspect
from collections.abc import Awaitable, Callable
from pathlib import Path
from typing import Any, TypeVar

from sqlalchemy import event
from sqlalchemy.engine import URL, make_url
from sqlalchemy.exc import ArgumentError
from sqlalchemy.ext.asyncio import AsyncEngine, create_async_engine

from .model import CaseStoreError

# Writers wait this long for SQLite's single write lock instead of failing with "database is locked".
SQLITE_BUSY_TIMEOUT_MS = 30_000

# Plain scheme names people put in DATABASE_URL, mapped to the async driver we ship.
_DRIVERS = {
    "sqlite": "sqlite+aiosqlite",
    "sqlite+aiosqlite": "sqlite+aiosqlite",
    "postgres": "postgresql+asyncpg",
    "postgresql": "postgresql+asyncpg",
    "postgresql+asyncpg": "postgresql+asyncpg",
}


def normalize_database_url(url: str) -> URL:
    """Parse a database URL and pin it to the async driver; CaseStoreError (one line) if unsupported."""
    if not isinstance(url, str) or not url.strip():
        raise CaseStoreError("database URL is empty; expected sqlite+aiosqlite:///path or postgresql+asyncpg://...")
    scheme = url.split("://", 1)[0] if "://" in url else ""
    driver = _DRIVERS.get(scheme.lower())
    if driver is None:
        raise CaseStoreError(
            f"unsupported database URL scheme {scheme or url!r}; use sqlite+aiosqlite:// or postgresql+asyncpg://"
        )
    try:
        parsed = make_url(driver + url[len(scheme):])
    except ArgumentError as exc:
        raise CaseStoreError(f"database URL is not valid: {exc}") from None
    return parsed


def _sqlite_file(url: URL) -> Path | None:
    database = url.database
    if not database or database == ":memory:" or database.startswith("file:") or url.query.get("mode") == "memory":
        return None
    return Path(database)


def _on_sqlite_connect(dbapi_connection: Any, _record: Any) -> None:
    cursor = dbapi_connection.cursor()
    try:
        # busy_timeout first: switching to WAL itself needs the lock when another process holds it.
        cursor.execute(f"PRAGMA busy_timeout = {SQLITE_BUSY_TIMEOUT_MS}")
        # WAL lets readers run while one writer commits.
        cursor.execute("PRAGMA journal_mode = WAL")
        cursor.execute("PRAGMA foreign_keys = ON")
    finally:
        cursor.close()


def create_engine_from_url(url: str) -> AsyncEngine:
    """Create an AsyncEngine for sqlite+aiosqlite or postgresql+asyncpg (SQLite: makes the db's directory, WAL)."""
    parsed = normalize_database_url(url)
    if parsed.get_backend_name() == "sqlite":
        path = _sqlite_file(parsed)
        if path is not None:
            try:
                path.parent.mkdir(parents=True, exist_ok=True)
            except OSError as exc:
                raise CaseStoreError(f"cannot create directory for database {path}: {exc.strerror}") from None
        engine = create_async_engine(parsed)
        event.listen(engine.sync_engine, "connect", _on_sqlite_connect)
        return engine
    # pool_pre_ping: a PostgreSQL restart must not surface as errors on the next calls.
    return create_async_engine(parsed, pool_pre_ping=True)


def dialect_insert(engine: AsyncEngine) -> Any:
    """The INSERT construct with ON CONFLICT support for the engine's dialect, or None if unsupported."""
    from sqlalchemy.dialects.postgresql import insert as pg_insert
    from sqlalchemy.dialects.sqlite import insert as sqlite_insert

    return {"sqlite": sqlite_insert, "postgresql": pg_insert}.get(engine.dialect.name)


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


def _finishing(method: Callable[..., Awaitable[Any]], task_name: str) -> Callable[..., Awaitable[Any]]:
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
