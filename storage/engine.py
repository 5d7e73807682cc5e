"""Async engine construction for the supported databases (SQLite via aiosqlite, PostgreSQL via asyncpg), with
timeouts on connecting and on every statement."""
from __future__ import annotations

import os
from pathlib import Path
from typing import Any

from sqlalchemy import event
from sqlalchemy.engine import URL, make_url
from sqlalchemy.exc import ArgumentError
from sqlalchemy.ext.asyncio import AsyncEngine, create_async_engine

from .errors import StorageError

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


def normalize_database_url(url: str, *, setting: str = "database_url") -> URL:
    """Parse a database URL and pin it to the async driver; StorageError (one line, naming the setting) if not."""
    if not isinstance(url, str) or not url.strip():
        raise StorageError(f"{setting}: database URL is empty; expected sqlite+aiosqlite:///path or "
                           "postgresql+asyncpg://...")
    scheme = url.split("://", 1)[0] if "://" in url else ""
    driver = _DRIVERS.get(scheme.lower())
    if driver is None:
        raise StorageError(
            f"{setting}: unsupported database URL scheme {scheme or url!r}; use sqlite+aiosqlite:// or postgresql+asyncpg://"
        )
    try:
        parsed = make_url(driver + url[len(scheme):])
    except ArgumentError as exc:
        raise StorageError(f"{setting}: database URL is not valid: {exc}") from None
    return parsed


def _sqlite_file(url: URL) -> Path | None:
    database = url.database
    if not database or database == ":memory:" or database.startswith("file:") or url.query.get("mode") == "memory":
        return None
    return Path(database)


def sqlite_database_files(url: str) -> list[Path]:
    """The files of a SQLite database URL (the database, its WAL, shared memory and journal); [] for others."""
    try:
        parsed = normalize_database_url(url)
    except StorageError:
        return []
    path = _sqlite_file(parsed) if parsed.get_backend_name() == "sqlite" else None
    if path is None:
        return []
    return [path, *(path.with_name(path.name + suffix) for suffix in ("-wal", "-shm", "-journal"))]


def _create_private_sqlite_file(path: Path, setting: str) -> None:
    # SQLite creates its -wal, -shm and journal files with the database file's permissions: a database made 0600
    # here keeps all of them private, whatever the umask of the process.
    try:
        path.parent.mkdir(parents=True, exist_ok=True, mode=0o700)
        fd = os.open(path, os.O_WRONLY | os.O_CREAT, 0o600)
        os.close(fd)
        st = path.stat()
        if st.st_mode & 0o077 and st.st_uid == os.geteuid():
            path.chmod(0o600)
    except OSError as exc:
        raise StorageError(f"{setting}: cannot create database {path}: {exc.strerror}") from None


def _on_sqlite_connect(dbapi_connection: Any, _record: Any, busy_timeout_ms: int = SQLITE_BUSY_TIMEOUT_MS) -> None:
    cursor = dbapi_connection.cursor()
    try:
        # busy_timeout first: switching to WAL itself needs the lock when another process holds it.
        cursor.execute(f"PRAGMA busy_timeout = {int(busy_timeout_ms)}")
        # WAL lets readers run while one writer commits.
        cursor.execute("PRAGMA journal_mode = WAL")
        cursor.execute("PRAGMA foreign_keys = ON")
    finally:
        cursor.close()


def create_engine_from_url(url: str, *, connect_timeout: float = 10.0, statement_timeout: float = 30.0,
                           setting: str = "database_url") -> AsyncEngine:
    """An AsyncEngine for sqlite+aiosqlite or postgresql+asyncpg with bounded connects and statements.

    SQLite: makes the database's directory, WAL, and a busy timeout of statement_timeout (its only wait is for
    the write lock). PostgreSQL: asyncpg's connect timeout, and statement_timeout both on the server and as the
    driver's command timeout, so a stuck query ends instead of holding a caller forever."""
    parsed = normalize_database_url(url, setting=setting)
    if parsed.get_backend_name() == "sqlite":
        path = _sqlite_file(parsed)
        if path is not None:
            _create_private_sqlite_file(path, setting)
        engine = create_async_engine(parsed, connect_args={"timeout": statement_timeout})
        busy_ms = int(statement_timeout * 1000)
        event.listen(engine.sync_engine, "connect", lambda conn, record: _on_sqlite_connect(conn, record, busy_ms))
        return engine
    # pool_pre_ping: a PostgreSQL restart must not surface as errors on the next calls.
    return create_async_engine(
        parsed, pool_pre_ping=True, pool_timeout=connect_timeout,
        connect_args={"timeout": connect_timeout, "command_timeout": statement_timeout,
                      "server_settings": {"statement_timeout": str(int(statement_timeout * 1000))}})


def dialect_insert(engine: AsyncEngine) -> Any:
    """The INSERT construct with ON CONFLICT support for the engine's dialect, or None if unsupported."""
    from sqlalchemy.dialects.postgresql import insert as pg_insert
    from sqlalchemy.dialects.sqlite import insert as sqlite_insert

    return {"sqlite": sqlite_insert, "postgresql": pg_insert}.get(engine.dialect.name)


