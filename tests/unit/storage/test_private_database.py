"""A SQLite database made by the storage engine is the owner's only (and so are its WAL and shared-memory files),
even in a process with a loose umask; an existing loose database is tightened."""
from __future__ import annotations

import os
import stat
from collections.abc import Iterator
from pathlib import Path

import pytest
from sqlalchemy import text

from storage import create_engine_from_url, sqlite_database_files


def mode(path: Path) -> int:
    return stat.S_IMODE(path.stat().st_mode)


@pytest.fixture
def loose_umask() -> Iterator[None]:
    previous = os.umask(0o022)
    try:
        yield
    finally:
        os.umask(previous)


async def test_a_new_database_and_its_wal_are_private(tmp_path: Path, loose_umask: None) -> None:
    path = tmp_path / "new-folder" / "hotline.db"
    engine = create_engine_from_url(f"sqlite+aiosqlite:///{path}")
    try:
        async with engine.begin() as conn:
            await conn.execute(text("CREATE TABLE t (x TEXT)"))
            await conn.execute(text("INSERT INTO t VALUES ('a citizen''s complaint')"))
        async with engine.connect() as conn:  # WAL mode: the -wal and -shm files exist while connected
            assert (await conn.execute(text("SELECT x FROM t"))).scalar_one() == "a citizen's complaint"
            files = [p for p in sqlite_database_files(f"sqlite+aiosqlite:///{path}") if p.exists()]
            assert {p.name for p in files} >= {"hotline.db", "hotline.db-wal", "hotline.db-shm"}
            for p in files:
                assert mode(p) == 0o600, p
    finally:
        await engine.dispose()
    assert mode(path.parent) == 0o700


async def test_an_existing_loose_database_is_tightened(tmp_path: Path, loose_umask: None) -> None:
    path = tmp_path / "hotline.db"
    path.write_bytes(b"")
    assert mode(path) == 0o644
    engine = create_engine_from_url(f"sqlite+aiosqlite:///{path}")
    await engine.dispose()
    assert mode(path) == 0o600


def test_database_files_of_urls() -> None:
    assert sqlite_database_files("sqlite+aiosqlite:////srv/h.db") == [
        Path("/srv/h.db"), Path("/srv/h.db-wal"), Path("/srv/h.db-shm"), Path("/srv/h.db-journal")]
    assert sqlite_database_files("postgresql+asyncpg://u@127.0.0.1/db") == []
    assert sqlite_database_files("sqlite+aiosqlite:///:memory:") == []
