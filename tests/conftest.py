"""Shared fixtures and markers of the whole suite (fakes live in tests/support/)."""
from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from pathlib import Path

import pytest
from sqlalchemy.ext.asyncio import AsyncEngine

from storage import create_engine_from_url, migrate_database
from tests.support.descriptions import DescriptionPipelines, description_pipelines

pytest_plugins = ["tests.support.asterisk_fixture"]

_E2E = Path(__file__).parent / "e2e"


def pytest_configure(config: pytest.Config) -> None:
    """Register the suite's own markers (pyproject.toml lists those of the real parts)."""
    config.addinivalue_line("markers", "e2e: starts real parts (tests/e2e/): Asterisk, SIPp, the hotline, Chromium")


def pytest_collection_modifyitems(items: list[pytest.Item]) -> None:
    """Every test under tests/e2e/ is marked e2e (`-m 'not e2e'` runs the unit tests only)."""
    for item in items:
        if _E2E in item.path.parents:
            item.add_marker(pytest.mark.e2e)


@pytest.fixture
async def pipelines(tmp_path: Path) -> AsyncIterator[DescriptionPipelines]:
    """Description transcription pipelines (the durable job table on SQLite) to start with fakes."""
    async with description_pipelines(f"sqlite+aiosqlite:///{tmp_path / 'jobs.db'}") as running:
        yield running


@pytest.fixture
async def engine(tmp_path: Path) -> AsyncIterator[AsyncEngine]:
    """An engine on a freshly migrated SQLite database of the test's own (modules may override it)."""
    url = f"sqlite+aiosqlite:///{tmp_path / 'hotline.db'}"
    await asyncio.get_running_loop().run_in_executor(None, migrate_database, url)
    eng = create_engine_from_url(url)
    try:
        yield eng
    finally:
        await eng.dispose()
