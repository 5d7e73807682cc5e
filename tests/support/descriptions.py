"""The real description pipeline for unit tests: durable jobs in a database, a running worker, the case observer."""
from __future__ import annotations

import asyncio
import contextlib
from collections.abc import AsyncIterator, Callable
from dataclasses import dataclass
from typing import Any, cast

from sqlalchemy import Table

from hotline.transcription_wiring import CaseTranscriptObserver
from storage import create_engine_from_url, migrate_database
from transcripts import (
    DescriptionTranscripts,
    TranscriptionJobStore,
    TranscriptionWorker,
)
from transcripts.tables import TranscriptionJobRow

job_table = cast(Table, TranscriptionJobRow.__table__)


@dataclass
class RunningPipeline:
    """One worker's pipeline: what the call flow is given, and the parts a test looks into."""

    descriptions: DescriptionTranscripts
    worker: TranscriptionWorker
    store: TranscriptionJobStore


class DescriptionPipelines:
    """A job table and the workers started on it (each reporting to its own cases), stopped together."""

    def __init__(self, store: TranscriptionJobStore) -> None:
        self.store = store
        self._tasks: list[asyncio.Task[None]] = []

    def start(self, cases: Any, recognizer: Any, *, max_attempts: int = 2, retry_delay: float = 0.0,
              lease_seconds: float = 5.0, poll_interval: float = 0.05, grammar: list[str] | None = None,
              owner: str | None = None, run: bool = True, live: Any = None) -> RunningPipeline:
        """A worker transcribing with recognizer into cases, and live calls if given (update_existing), running
        unless run=False, and its descriptions."""
        worker = TranscriptionWorker(self.store, recognizer, CaseTranscriptObserver(cases, live), owner=owner,
                                     lease_seconds=lease_seconds, poll_interval=poll_interval,
                                     retry_delay=retry_delay)
        if run:
            self._tasks.append(asyncio.get_running_loop().create_task(worker.run(), name="test-transcription"))
        return RunningPipeline(DescriptionTranscripts(self.store, worker, grammar=grammar,
                                                      max_attempts=max_attempts), worker, self.store)

    async def aclose(self) -> None:
        """Stop every worker started here."""
        for task in self._tasks:
            task.cancel()
        await asyncio.gather(*self._tasks, return_exceptions=True)


async def eventually(check: Callable[[], Any], timeout: float = 5.0, what: str = "condition") -> None:
    """Wait until check() is true (the worker reports a transcript after the call went on); AssertionError naming
    what did not happen within timeout s."""
    loop = asyncio.get_running_loop()
    deadline = loop.time() + timeout
    while not check():
        if loop.time() > deadline:
            raise AssertionError(f"{what}: not within {timeout:g} s")
        await asyncio.sleep(0.02)


@contextlib.asynccontextmanager
async def description_pipelines(db_url: str, *, migrate: bool = False) -> AsyncIterator[DescriptionPipelines]:
    """Pipelines on db_url: the job table alone (fast; kept if it exists) or, with migrate, the whole schema."""
    if migrate:
        await asyncio.get_running_loop().run_in_executor(None, migrate_database, db_url)
    engine = create_engine_from_url(db_url)
    try:
        if not migrate:
            async with engine.begin() as conn:
                await conn.run_sync(lambda sync: job_table.create(sync, checkfirst=True))
        pipelines = DescriptionPipelines(TranscriptionJobStore(engine))
        try:
            yield pipelines
        finally:
            await pipelines.aclose()
    finally:
        await engine.dispose()
