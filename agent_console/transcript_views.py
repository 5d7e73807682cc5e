"""Console/API route of the transcripts attached to a case (descriptions and whole calls, labelled, timed)."""
from __future__ import annotations

from collections.abc import Sequence
from typing import TYPE_CHECKING, Final

from aiohttp import web

from .security import json_error
from .views import _case_number, _cases, ok

if TYPE_CHECKING:
    from transcripts import TranscriptionJob, TranscriptionJobStore

TRANSCRIPT_JOBS: Final[web.AppKey[TranscriptionJobStore]] = web.AppKey("console_transcript_jobs")


def _summary(jobs: Sequence[TranscriptionJob]) -> str:
    """One word for the case: pending while any job is unfinished, failed if one failed, else done (none: no job)."""
    states = {job.to_dict()["status"] for job in jobs}
    if not states:
        return "none"
    if states & {"pending", "running"}:
        return "pending"
    return "failed" if "failed" in states else "done"


async def api_case_transcripts(request: web.Request) -> web.Response:
    """GET /api/cases/{case_number}/transcripts: every transcription job of the case with its transcripts."""
    number = _case_number(request)
    try:
        await _cases(request).get(number)
    except LookupError:
        return json_error(404, f"case {number} not found")
    jobs = await request.app[TRANSCRIPT_JOBS].list_for_case(number)
    return ok({"case_number": number, "status": _summary(jobs), "jobs": [job.to_dict() for job in jobs]})
