"""Scratch databases for tests that run on both SQLite and PostgreSQL (HOTLINE_TEST_PG_URL, default the machine's
127.0.0.1:5432/test)."""
from __future__ import annotations

import contextlib
import os
import socket
import uuid
from collections.abc import AsyncIterator

import pytest
from sqlalchemy import text
from sqlalchemy.engine import make_url
from sqlalchemy.ext.asyncio import create_async_engine
from sqlalchemy.pool import NullPool

PG_URL = os.environ.get("HOTLINE_TEST_PG_URL", "postgresql+asyncpg://postgres@127.0.0.1:5432/test")


def pg_unreachable_reason() -> str | None:
    """Why PostgreSQL cannot be used, or None when it answers."""
    url = make_url(PG_URL)
    host, port = url.host or "127.0.0.1", url.port or 5432
    try:
        socket.create_connection((host, port), timeout=3).close()
    except OSError as exc:
        return f"PostgreSQL not reachable at {host}:{port} ({exc}); set HOTLINE_TEST_PG_URL to test it"
    return None


@contextlib.asynccontextmanager
async def scratch_pg_database(unreachable: str | None) -> AsyncIterator[str]:
    """A fresh, uniquely named PostgreSQL database for one test (reruns and parallel runs never share tables);
    skips the test when PostgreSQL is unreachable."""
    if unreachable:
        pytest.skip(unreachable)
    name = f"hotline_test_{uuid.uuid4().hex[:16]}"
    admin = create_async_engine(make_url(PG_URL), isolation_level="AUTOCOMMIT", poolclass=NullPool)
    try:
        async with admin.connect() as conn:
            await conn.execute(text(f'CREATE DATABASE "{name}"'))
        try:
            yield make_url(PG_URL).set(database=name).render_as_string(hide_password=False)
        finally:
            async with admin.connect() as conn:
                await conn.execute(text(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)'))
    finally:
        await admin.dispose()
