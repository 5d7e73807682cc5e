"""TranscriptionWorker: takes due jobs from the store, transcribes them with the shared recognizer, keeps the result."""
from __future__ import annotations

import asyncio
import logging
import os
import socket
import uuid
from collections.abc import Collection, Sequence
from dataclasses import replace
from pathlib import Path
from typing import Any, Protocol

from asr import AsrError, AudioFormatError, EmptyAudioError, Transcript

from .store import JobKind, JobStatus, Recording, TranscriptionJob, TranscriptionJobStore

log = logging.getLogger(__name__)


class TranscriptObserver(Protocol):
    """Told when a job has finished for good (the composition root updates the case and live state)."""

    async def transcript_done(self, job: TranscriptionJob) -> None: ...
    async def transcript_failed(self, job: TranscriptionJob) -> None: ...


class Recognizer(Protocol):
    """The parts of asr.SpeechRecognizer a worker uses."""

    async def transcribe_file(self, path: Path, grammar: list[str] | None = None,
                              timeout: float | None = ...) -> Transcript: ...
    async def transcribe_stereo(self, path: Path, labels: Sequence[str] = ..., grammar: list[str] | None = None,
                                timeout: float | None = ...) -> list[Transcript]: ...


class TranscriptionWorker:
    """Runs durable transcription jobs; a job whose worker died is taken over when its lease expires."""

    def __init__(self, store: TranscriptionJobStore, recognizer: Recognizer, observer: TranscriptObserver, *,
                 owner: str | None = None, concurrency: int = 1, description_lanes: int = 1,
                 lease_seconds: float = 60.0, poll_interval: float = 2.0, retry_delay: float = 30.0,
                 timeout: float = 900.0) -> None:
        self._store = store
        self._recognizer = recognizer
        self._observer = observer
        self.owner = owner or f"{socket.gethostname()}:{os.getpid()}:{uuid.uuid4().hex[:6]}"
        self._concurrency = concurrency
        # Loops that take only callers' descriptions, so a call that waits for one is never stuck behind
        # a long whole-call job.
        self._description_lanes = description_lanes
        self._lease = lease_seconds
        self._poll = poll_interval
        self._retry_delay = retry_delay
        self._timeout = timeout
        self._wake = asyncio.Event()
        self._finished: dict[str, asyncio.Event] = {}
        self.done = 0
        self.failed = 0

    def wake(self) -> None:
        """A job was just enqueued: look now instead of at the next poll."""
        self._wake.set()

    async def wait_finished(self, job_key: str, timeout: float) -> TranscriptionJob | None:
        """Wait (up to timeout s) until the job is done or failed and its observer was told; the job as it then is.

        Woken by this worker's own completion; the stored row is read again at every poll interval, so a job
        finished by another process's worker is seen too. None if there is no such job."""
        loop = asyncio.get_running_loop()
        deadline = loop.time() + timeout
        event = self._finished.setdefault(job_key, asyncio.Event())
        try:
            while True:
                job = await self._store.get(job_key)
                if job is None or (job.status in (JobStatus.DONE, JobStatus.FAILED) and job.notified):
                    return job
                remaining = deadline - loop.time()
                if remaining <= 0:
                    return job
                try:
                    await asyncio.wait_for(event.wait(), min(remaining, self._poll))
                except TimeoutError:
                    pass
        finally:
            # A second waiter on the same job then falls back to reading the row at each poll.
            if self._finished.get(job_key) is event:
                self._finished.pop(job_key, None)

    async def run(self) -> None:
        """Tell the observer of jobs finished before a crash, then work until cancelled (run as an owned task)."""
        await self._notify_leftovers()
        async with asyncio.TaskGroup() as group:
            for index in range(self._concurrency):
                group.create_task(self._loop(None), name=f"transcription-worker-{index}")
            for index in range(self._description_lanes):
                group.create_task(self._loop((JobKind.DESCRIPTION,)), name=f"transcription-descriptions-{index}")

    async def run_once(self, kinds: Collection[JobKind] | None = None) -> bool:
        """Claim and run one due job (of these kinds; None: any); False when none was due."""
        job = await self._store.claim(self.owner, self._lease, kinds)
        if job is None:
            return False
        await self._process(job)
        return True

    async def _loop(self, kinds: Collection[JobKind] | None) -> None:
        while True:
            self._wake.clear()  # cleared before the claim: a job enqueued meanwhile still wakes this loop
            try:
                worked = await self.run_once(kinds)
            except Exception:  # a database hiccup must not end the worker; try again after a pause
                log.exception("transcription worker: pass failed")
                await asyncio.sleep(self._poll)
                continue
            if not worked:
                try:
                    await asyncio.wait_for(self._wake.wait(), self._poll)
                except TimeoutError:
                    pass

    async def _notify_leftovers(self) -> None:
        try:
            for job in await self._store.list_unnotified():
                await self._notify(job)
        except Exception:  # retried at the next start; the jobs themselves are safe in the store
            log.exception("transcription worker: telling the observer of finished jobs failed")

    async def _process(self, job: TranscriptionJob) -> None:
        log.info("transcription job %s: attempt %d of %d", job.job_key, job.attempts, job.max_attempts)
        renewing = asyncio.create_task(self._renew(job), name=f"lease-{job.job_key}")
        try:
            result = await self._transcribe(job)
        except AudioFormatError as exc:
            # Nothing a retry can fix (empty, too short, not audio): fail at once, keep the recording.
            await self._failed(job, str(exc), retry_in=None)
            return
        except (AsrError, TimeoutError, OSError) as exc:
            await self._failed(job, str(exc) or type(exc).__name__, retry_in=self._retry_delay)
            return
        except Exception as exc:  # a bug, not the audio: counted as an attempt, so it cannot loop forever
            log.exception("transcription job %s: unexpected error", job.job_key)
            await self._failed(job, f"{type(exc).__name__}: {exc}", retry_in=self._retry_delay)
            return
        finally:
            renewing.cancel()
            await asyncio.gather(renewing, return_exceptions=True)
        # The transcript is committed before anything else happens: a recording is only ever
        # cleaned up by someone reading a job that is done.
        if not await self._store.complete(job, self.owner, result):
            log.warning("transcription job %s: lease lost to another worker; its result is kept", job.job_key)
            return
        self.done += 1
        finished = await self._store.get(job.job_key)
        if finished is not None:
            await self._notify(finished)

    async def _failed(self, job: TranscriptionJob, error: str, retry_in: float | None) -> None:
        status = await self._store.fail(job, self.owner, error, retry_in=retry_in)
        if status == JobStatus.FAILED:
            self.failed += 1
            log.error("transcription job %s failed for good after %d attempt(s): %s", job.job_key, job.attempts, error)
            finished = await self._store.get(job.job_key)
            if finished is not None:
                await self._notify(finished)
        else:
            log.warning("transcription job %s: attempt %d failed, retrying in %.0f s: %s", job.job_key,
                        job.attempts, retry_in or 0.0, error)

    async def _notify(self, job: TranscriptionJob) -> None:
        try:
            if job.status == JobStatus.DONE:
                await self._observer.transcript_done(job)
            else:
                await self._observer.transcript_failed(job)
        except Exception:  # the job stays unnotified and is told again at the next start
            log.exception("transcription job %s: observer failed", job.job_key)
            return
        await self._store.mark_notified(job)
        event = self._finished.pop(job.job_key, None)
        if event is not None:
            event.set()

    async def _renew(self, job: TranscriptionJob) -> None:
        while True:
            await asyncio.sleep(self._lease / 3)
            try:
                if not await self._store.renew(job, self.owner, self._lease):
                    log.warning("transcription job %s: lease lost", job.job_key)
                    return
            except Exception:  # the next renewal may succeed; the lease has slack for two misses
                log.exception("transcription job %s: lease renewal failed", job.job_key)

    async def _transcribe(self, job: TranscriptionJob) -> list[dict[str, Any]]:
        grammar = list(job.grammar) if job.grammar else None
        if job.kind != JobKind.CALL:
            transcripts: list[dict[str, Any]] = []
            for recording in job.recordings:
                transcripts.extend(await self._transcribe_leg(recording, grammar))
            return transcripts
        return await self._transcribe_call(job, grammar)

    async def _transcribe_call(self, job: TranscriptionJob, grammar: list[str] | None) -> list[dict[str, Any]]:
        """A whole call's legs, each on its own: a leg with no audio (the citizen's phone sent none) is kept as an
        empty transcript and the other legs are still heard; the job fails only when no leg could be read."""
        transcripts: list[dict[str, Any]] = []
        unusable: list[str] = []
        for recording in job.recordings:
            try:
                transcripts.extend(await self._transcribe_leg(recording, grammar))
            except EmptyAudioError as exc:
                log.info("transcription job %s: %s leg is empty (%s)", job.job_key, _leg_name(recording), exc)
                transcripts.extend(_empty_leg(recording, str(exc)))
            except AudioFormatError as exc:
                unusable.append(str(exc))
                transcripts.extend(_empty_leg(recording, str(exc), unusable=True))
        if unusable and len(unusable) == len(job.recordings):
            raise AudioFormatError("; ".join(unusable))
        for reason in unusable:
            log.warning("transcription job %s: a leg could not be read, the others were transcribed: %s",
                        job.job_key, reason)
        return transcripts

    async def _transcribe_leg(self, recording: Recording, grammar: list[str] | None) -> list[dict[str, Any]]:
        path = Path(recording.path)
        if not path.exists():
            raise AudioFormatError(f"recording {path}: file does not exist")
        _keep_private(path)
        if len(recording.labels) > 1:
            parts = await self._recognizer.transcribe_stereo(path, recording.labels, grammar=grammar,
                                                             timeout=self._timeout)
        else:
            one = await self._recognizer.transcribe_file(path, grammar=grammar, timeout=self._timeout)
            parts = [replace(one, channel=recording.labels[0] if recording.labels else None)]
        return [t.to_dict() for t in parts]


def _leg_name(recording: Recording) -> str:
    return "/".join(recording.labels) or Path(recording.path).name


def _empty_leg(recording: Recording, reason: str, *, unusable: bool = False) -> list[dict[str, Any]]:
    """The stored transcript of a leg with nothing to hear: no text, marked empty (or unusable), with the reason."""
    labels: Sequence[str | None] = recording.labels or (None,)
    return [{**Transcript(text="", channel=label).to_dict(), "empty": True, "unusable": unusable, "reason": reason}
            for label in labels]


def _keep_private(path: Path) -> None:
    # Asterisk writes recordings with its own umask (another container, another set-up): a citizen's voice is made
    # readable by the hotline's user only as soon as it is picked up.
    try:
        if path.stat().st_mode & 0o077:
            path.chmod(0o600)
    except OSError as exc:
        log.warning("cannot make recording %s private: %s", path, exc.strerror or exc)
