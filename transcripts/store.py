"""TranscriptionJobStore: durable transcription jobs with leases, in SQLite or PostgreSQL."""
from __future__ import annotations

from collections.abc import Collection
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from enum import StrEnum
from typing import Any

from sqlalchemy import ColumnElement, Row, and_, case, or_, select, update
from sqlalchemy.ext.asyncio import AsyncEngine

from storage import dialect_insert, finish_on_cancel

from .tables import TranscriptionJobRow

_jobs = TranscriptionJobRow.__table__


class JobStatus(StrEnum):
    """Where a transcription job is: waiting, being worked on (leased), or finished."""

    PENDING = "pending"
    RUNNING = "running"
    DONE = "done"
    FAILED = "failed"


class JobKind(StrEnum):
    """What is transcribed: a caller's recorded description, or a whole call (both parties)."""

    DESCRIPTION = "description"
    CALL = "call"


class TranscriptionJobError(ValueError):
    """A job was refused; the message is one line naming what was wrong."""


@dataclass(frozen=True)
class Recording:
    """One audio file of a job: mono with one label, or multi-channel with one label per channel."""

    path: str
    labels: tuple[str, ...] = ()

    def to_dict(self) -> dict[str, Any]:
        """JSON form stored in the job row."""
        return {"path": self.path, "labels": list(self.labels)}


@dataclass(frozen=True)
class TranscriptionJob:
    """A snapshot of one job."""

    id: int
    job_key: str
    kind: JobKind
    case_number: str | None
    recordings: tuple[Recording, ...]
    grammar: tuple[str, ...] | None
    status: JobStatus
    attempts: int
    max_attempts: int
    last_error: str | None
    result: list[dict[str, Any]] | None
    lease_owner: str | None
    notified: bool
    created_at: datetime
    updated_at: datetime
    finished_at: datetime | None

    def to_dict(self) -> dict[str, Any]:
        """JSON form for the API: the transcripts (labelled, with word timings) and the job's state."""
        return {
            "job_key": self.job_key, "kind": self.kind.value, "case_number": self.case_number,
            "status": self.status.value, "attempts": self.attempts, "max_attempts": self.max_attempts,
            "error": self.last_error, "transcripts": self.result or [],
            "recordings": [r.to_dict() for r in self.recordings],
            "created_at": self.created_at.isoformat(), "updated_at": self.updated_at.isoformat(),
            "finished_at": self.finished_at.isoformat() if self.finished_at else None,
        }


def _now() -> datetime:
    return datetime.now(UTC)


def _to_job(row: Row[Any]) -> TranscriptionJob:
    m = row._mapping
    grammar = m["grammar"]
    return TranscriptionJob(
        id=m["id"], job_key=m["job_key"], kind=JobKind(m["kind"]), case_number=m["case_number"],
        recordings=tuple(Recording(str(r["path"]), tuple(r.get("labels") or ())) for r in m["recordings"]),
        grammar=tuple(grammar) if grammar else None, status=JobStatus(m["status"]), attempts=m["attempts"],
        max_attempts=m["max_attempts"], last_error=m["last_error"], result=m["result"],
        lease_owner=m["lease_owner"], notified=bool(m["notified"]), created_at=m["created_at"],
        updated_at=m["updated_at"], finished_at=m["finished_at"],
    )


def _claimable(now: datetime, kinds: Collection[JobKind] | None) -> ColumnElement[bool]:
    """Pending jobs that are due, and running jobs whose worker stopped renewing its lease (it died)."""
    due = or_(
        and_(_jobs.c.status == JobStatus.PENDING.value, _jobs.c.not_before <= now),
        and_(_jobs.c.status == JobStatus.RUNNING.value, _jobs.c.lease_expires_at < now),
    )
    if kinds is None:
        return due
    return and_(due, _jobs.c.kind.in_([JobKind(k).value for k in kinds]))


# A caller's description first: the call waits for it (the agent's screen pop); a whole call can wait.
_CLAIM_ORDER = (case((_jobs.c.kind == JobKind.DESCRIPTION.value, 0), else_=1), _jobs.c.not_before, _jobs.c.id)


@finish_on_cancel
class TranscriptionJobStore:
    """Durable queue of transcription jobs; a worker leases one at a time and must renew the lease."""

    def __init__(self, engine: AsyncEngine) -> None:
        self._engine = engine

    async def enqueue(self, job_key: str, kind: JobKind | str, recordings: list[Recording], *,
                      case_number: str | None = None, grammar: list[str] | None = None,
                      max_attempts: int = 3, delay: float = 0.0) -> TranscriptionJob:
        """Add a job (or return the existing one with this key); it becomes due after delay seconds."""
        if not job_key or len(job_key) > 128:
            raise TranscriptionJobError(f"job key {job_key!r} must be 1 to 128 characters")
        try:
            kind = JobKind(kind)
        except ValueError:
            raise TranscriptionJobError(f"job kind {kind!r} is not one of {', '.join(JobKind)}") from None
        if not recordings:
            raise TranscriptionJobError(f"job {job_key}: no recordings to transcribe")
        if not 1 <= max_attempts <= 100:
            raise TranscriptionJobError(f"job {job_key}: max_attempts {max_attempts} is not from 1 to 100")
        now = _now()
        insert = dialect_insert(self._engine)
        stmt = insert(_jobs).values(
            job_key=job_key, kind=kind.value, case_number=case_number,
            recordings=[r.to_dict() for r in recordings], grammar=list(grammar) if grammar else None,
            status=JobStatus.PENDING.value, attempts=0, max_attempts=max_attempts,
            not_before=now + timedelta(seconds=delay), notified=False, created_at=now, updated_at=now,
        ).on_conflict_do_nothing(index_elements=["job_key"])
        async with self._engine.begin() as conn:
            await conn.execute(stmt)
            row = (await conn.execute(select(_jobs).where(_jobs.c.job_key == job_key))).one()
        return _to_job(row)

    async def get(self, job_key: str) -> TranscriptionJob | None:
        """The job with this key, or None."""
        async with self._engine.connect() as conn:
            row = (await conn.execute(select(_jobs).where(_jobs.c.job_key == job_key))).first()
        return _to_job(row) if row is not None else None

    async def list_for_case(self, case_number: str) -> list[TranscriptionJob]:
        """Every job of a case, oldest first."""
        async with self._engine.connect() as conn:
            rows = (await conn.execute(
                select(_jobs).where(_jobs.c.case_number == case_number).order_by(_jobs.c.id))).all()
        return [_to_job(r) for r in rows]

    async def list_unnotified(self, limit: int = 100) -> list[TranscriptionJob]:
        """Finished jobs whose observer never heard of it (the process stopped in between)."""
        async with self._engine.connect() as conn:
            rows = (await conn.execute(
                select(_jobs).where(_jobs.c.status.in_([JobStatus.DONE.value, JobStatus.FAILED.value]),
                                    _jobs.c.notified.is_(False)).order_by(_jobs.c.id).limit(limit))).all()
        return [_to_job(r) for r in rows]

    async def claim(self, owner: str, lease_seconds: float,
                    kinds: Collection[JobKind] | None = None) -> TranscriptionJob | None:
        """Lease the next due job (descriptions first, then oldest) to owner (attempts + 1); None when none is due.

        kinds: only jobs of these kinds (None: any)."""
        for _ in range(5):  # another worker may win the race for the same row: try the next one
            now = _now()
            async with self._engine.begin() as conn:
                job_id = (await conn.execute(
                    select(_jobs.c.id).where(_claimable(now, kinds)).order_by(*_CLAIM_ORDER).limit(1)
                )).scalar()
                if job_id is None:
                    return None
                # The WHERE repeats the claimable test: of two workers racing, exactly one row update wins.
                won = await conn.execute(
                    update(_jobs).where(_jobs.c.id == job_id, _claimable(now, kinds)).values(
                        status=JobStatus.RUNNING.value, lease_owner=owner,
                        lease_expires_at=now + timedelta(seconds=lease_seconds),
                        attempts=_jobs.c.attempts + 1, updated_at=now))
                if won.rowcount == 1:
                    row = (await conn.execute(select(_jobs).where(_jobs.c.id == job_id))).one()
                    return _to_job(row)
        return None

    async def renew(self, job: TranscriptionJob, owner: str, lease_seconds: float) -> bool:
        """Extend owner's lease; False if the job is no longer owner's (the lease was lost)."""
        now = _now()
        return await self._update_owned(job, owner, lease_expires_at=now + timedelta(seconds=lease_seconds),
                                        updated_at=now)

    async def complete(self, job: TranscriptionJob, owner: str, result: list[dict[str, Any]]) -> bool:
        """Store the transcripts and mark the job done (only if owner still holds the lease)."""
        now = _now()
        return await self._update_owned(job, owner, status=JobStatus.DONE.value, result=result, last_error=None,
                                        lease_owner=None, lease_expires_at=None, finished_at=now, updated_at=now)

    async def fail(self, job: TranscriptionJob, owner: str, error: str, *, retry_in: float | None) -> JobStatus:
        """Record a failed attempt: pending again after retry_in seconds, or failed for good (None, no tries left)."""
        now = _now()
        final = retry_in is None or job.attempts >= job.max_attempts
        status = JobStatus.FAILED if final else JobStatus.PENDING
        values: dict[str, Any] = dict(status=status.value, last_error=error[:2000], lease_owner=None,
                                      lease_expires_at=None, updated_at=now)
        if final:
            values["finished_at"] = now
        else:
            values["not_before"] = now + timedelta(seconds=retry_in or 0.0)
        await self._update_owned(job, owner, **values)
        return status

    async def mark_notified(self, job: TranscriptionJob) -> None:
        """The observer has been told of the job's final state."""
        async with self._engine.begin() as conn:
            await conn.execute(update(_jobs).where(_jobs.c.id == job.id).values(notified=True))

    async def _update_owned(self, job: TranscriptionJob, owner: str, **values: Any) -> bool:
        async with self._engine.begin() as conn:
            result = await conn.execute(update(_jobs).where(
                _jobs.c.id == job.id, _jobs.c.lease_owner == owner,
                _jobs.c.status == JobStatus.RUNNING.value).values(**values))
        return result.rowcount == 1
