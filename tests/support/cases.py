"""FakeCases: the case domain's service (cases.CaseStore's named operations, their transition rules and events)
in memory, for tests whose subject is another domain. The domain's own rules are tested on the real store
(tests/unit/cases/)."""
from __future__ import annotations

from collections.abc import Iterable
from dataclasses import replace
from datetime import UTC, datetime
from typing import Any

from cases import (
    ACTOR_SYSTEM,
    Case,
    CaseEvent,
    CaseEventKind,
    CaseNotFound,
    CaseStatus,
    CaseStoreError,
    NewCase,
    TranscriptStatus,
    check_transition,
)

NOW = datetime(2026, 11, 29, 9, 30, tzinfo=UTC)
MAX_NOTE_LENGTH = 4000  # as cases.model


def sample_case(case_number: str, **fields: Any) -> Case:
    """A stored case as the console shows one (a complaint an agent is working on); fields override."""
    values: dict[str, Any] = {
        "id": int(case_number[-4:]),
        "case_number": case_number,
        "caller_number": "01012345678",
        "category": "complaint",
        "priority": 0,
        "status": CaseStatus.IN_PROGRESS,
        "menu_path": ["1", "complaint"],
        "transcript": "The street light on Main Road is broken.",
        "transcript_status": TranscriptStatus.DONE,
        "recording_path": None,
        "source_ref": None,
        "agent": None,
        "notes": None,
        "created_at": NOW,
        "updated_at": NOW,
    }
    values.update(fields)
    values["status"] = CaseStatus(values["status"])
    values["transcript_status"] = TranscriptStatus(values["transcript_status"])
    return Case(**values)


class FakeCases:
    """The case domain in memory: `cases` (number -> Case snapshot), `history` (number -> events), and `calls`,
    every operation called with its arguments. Operations named in `fail_on` raise RuntimeError (the database
    away)."""

    def __init__(self, *cases: Case, fail_on: Iterable[str] = ()) -> None:
        self.cases: dict[str, Case] = {}
        self.history: dict[str, list[CaseEvent]] = {}
        self.calls: list[tuple[Any, ...]] = []
        self.fail_on = set(fail_on)
        self.note_limit = MAX_NOTE_LENGTH
        self._events = 0
        for case in cases:
            self.add(case)

    def add(self, case: Case) -> Case:
        """Put a stored case in (a case opened before the test)."""
        self.cases[case.case_number] = case
        self.history.setdefault(case.case_number, [])
        return case

    @property
    def actors(self) -> list[str]:
        """Who made each change, in order."""
        return [e.actor for events in self.history.values() for e in events]

    def only(self) -> Case:
        """The one case opened (asserts there is exactly one)."""
        assert len(self.cases) == 1, f"expected one case, have {sorted(self.cases)}"
        return next(iter(self.cases.values()))

    def last(self) -> Case:
        """The case opened last."""
        return list(self.cases.values())[-1]

    def kinds(self, case_number: str) -> list[str]:
        """The kinds of a case's events, oldest first."""
        return [e.kind.value for e in self.history.get(case_number, [])]

    # --- inside ------------------------------------------------------------------------------------

    def _called(self, name: str, *args: Any) -> None:
        self.calls.append((name, *args))
        if name in self.fail_on:
            raise RuntimeError("database away")

    def _event(self, case_number: str, actor: str, kind: CaseEventKind, data: dict[str, Any]) -> None:
        self._events += 1
        self.history.setdefault(case_number, []).append(
            CaseEvent(self._events, case_number, datetime.now(UTC), actor, kind, data))

    def _change(self, case_number: str, actor: str, values: dict[str, Any],
                *events: tuple[CaseEventKind, dict[str, Any]]) -> Case:
        case = self._get(case_number)
        notes = [d["text"] for k, d in events if k is CaseEventKind.NOTE]
        if notes:
            values = {**values, "notes": "\n".join([case.notes, *notes] if case.notes else notes)}
        case = replace(case, **values, updated_at=datetime.now(UTC))
        self.cases[case_number] = case
        for kind, data in events:
            self._event(case_number, actor, kind, data)
        return case

    def _move(self, case_number: str, actor: str, target: CaseStatus, kind: CaseEventKind,
              **data: Any) -> Case:
        case = self._get(case_number)
        check_transition(case_number, case.status, target)
        values: dict[str, Any] = {"status": target}
        if "agent" in data:
            values["agent"] = data["agent"]
        return self._change(case_number, actor, values,
                            (kind, {"from": case.status.value, "to": target.value, **data}))

    def _get(self, case_number: str) -> Case:
        try:
            return self.cases[case_number]
        except KeyError:
            raise CaseNotFound(f"no case with number {case_number!r}") from None

    # --- the named operations, as cases.CaseStore ------------------------------------------------

    async def open(self, new: NewCase, *, actor: str) -> Case:
        """Store a new case (status NEW, event `opened`); numbers count up from 2611290001."""
        self._called("open", new.caller_number, new.category)
        number = f"261129{len(self.cases) + 1:04d}"
        case = sample_case(number, caller_number=new.caller_number, category=new.category, status=CaseStatus.NEW,
                           menu_path=list(new.menu_path), transcript=None, transcript_status=TranscriptStatus.NONE,
                           source_ref=new.source_ref, created_at=datetime.now(UTC), updated_at=datetime.now(UTC))
        self.add(case)
        self._event(number, actor, CaseEventKind.OPENED, {"caller_number": new.caller_number,
                                                          "category": new.category, "source_ref": new.source_ref,
                                                          "menu_path": list(new.menu_path)})
        return case

    async def classify(self, case_number: str, *, category: str | None = None, priority: int | None = None,
                       menu_path: list[str] | None = None, actor: str = ACTOR_SYSTEM) -> Case:
        """Set category/priority/menu path; event `classified` with what changed."""
        self._called("classify", case_number, category, priority)
        case = self._get(case_number)
        wanted = {"category": category, "priority": priority, "menu_path": menu_path}
        changed = {k: v for k, v in wanted.items() if v is not None and getattr(case, k) != v}
        if not changed:
            return case
        return self._change(case_number, actor, changed, (CaseEventKind.CLASSIFIED, changed))

    async def record_menu_path(self, case_number: str, menu_path: list[str], *, actor: str = ACTOR_SYSTEM) -> Case:
        """Keep the IVR choices so far; event `menu_path_recorded` (none if unchanged)."""
        self._called("record_menu_path", case_number, list(menu_path))
        if self._get(case_number).menu_path == list(menu_path):
            return self._get(case_number)
        return self._change(case_number, actor, {"menu_path": list(menu_path)},
                            (CaseEventKind.MENU_PATH_RECORDED, {"menu_path": list(menu_path)}))

    async def add_note(self, case_number: str, text: str, *, actor: str) -> Case:
        """Append a note (event `note`); refused when empty or longer than note_limit."""
        self._called("add_note", case_number, text)
        self._get(case_number)
        if not isinstance(text, str) or not text.strip():
            raise CaseStoreError(f"note must be a non-empty string, got {text!r}")
        if len(text) > self.note_limit:
            raise CaseStoreError(f"note is longer than {self.note_limit} characters")
        return self._change(case_number, actor, {}, (CaseEventKind.NOTE, {"text": text}))

    async def attach_recording(self, case_number: str, recording_path: str, *, actor: str = ACTOR_SYSTEM) -> Case:
        """The description is recorded here; transcript pending. Event `recording_attached`."""
        self._called("attach_recording", case_number, recording_path)
        return self._change(case_number, actor,
                            {"recording_path": recording_path, "transcript_status": TranscriptStatus.PENDING},
                            (CaseEventKind.RECORDING_ATTACHED, {"recording_path": recording_path}))

    async def drop_recording(self, case_number: str, reason: str, *, actor: str = ACTOR_SYSTEM) -> Case:
        """The recording was never made; transcript failed. Events `recording_dropped` and a `note`."""
        self._called("drop_recording", case_number, reason)
        path = self._get(case_number).recording_path
        return self._change(case_number, actor,
                            {"recording_path": None, "transcript_status": TranscriptStatus.FAILED},
                            (CaseEventKind.RECORDING_DROPPED, {"recording_path": path, "reason": reason}),
                            (CaseEventKind.NOTE, {"text": reason}))

    async def transcript_pending(self, case_number: str, *, actor: str = ACTOR_SYSTEM) -> Case:
        """The transcript is to be (re)tried; event `transcript_pending` (none if it already is)."""
        self._called("transcript_pending", case_number)
        if self._get(case_number).transcript_status is TranscriptStatus.PENDING:
            return self._get(case_number)
        return self._change(case_number, actor, {"transcript_status": TranscriptStatus.PENDING},
                            (CaseEventKind.TRANSCRIPT_PENDING, {}))

    async def record_transcript(self, case_number: str, text: str, *, actor: str = ACTOR_SYSTEM) -> Case:
        """Store the description's transcript; event `transcript_recorded`."""
        self._called("record_transcript", case_number, text)
        return self._change(case_number, actor, {"transcript": text, "transcript_status": TranscriptStatus.DONE},
                            (CaseEventKind.TRANSCRIPT_RECORDED, {"text": text}))

    async def transcript_failed(self, case_number: str, reason: str, *, actor: str = ACTOR_SYSTEM) -> Case:
        """The description cannot be transcribed; events `transcript_failed` and a `note`."""
        self._called("transcript_failed", case_number, reason)
        return self._change(case_number, actor, {"transcript_status": TranscriptStatus.FAILED},
                            (CaseEventKind.TRANSCRIPT_FAILED, {"reason": reason}),
                            (CaseEventKind.NOTE, {"text": reason}))

    async def mark_queued(self, case_number: str, queue: str, *, actor: str = ACTOR_SYSTEM) -> Case:
        """The caller joined a queue; event `queued`."""
        self._called("mark_queued", case_number, queue)
        return self._move(case_number, actor, CaseStatus.QUEUED, CaseEventKind.QUEUED, queue=queue)

    async def assign_agent(self, case_number: str, agent: str, *, actor: str = ACTOR_SYSTEM) -> Case:
        """An agent answered; event `agent_assigned` (none if the same agent already has it)."""
        self._called("assign_agent", case_number, agent)
        case = self._get(case_number)
        if case.status is CaseStatus.IN_PROGRESS and case.agent == agent:
            return case
        return self._move(case_number, actor, CaseStatus.IN_PROGRESS, CaseEventKind.AGENT_ASSIGNED, agent=agent)

    async def mark_abandoned_in_queue(self, case_number: str, *, actor: str = ACTOR_SYSTEM) -> Case:
        """The caller hung up in a queue; event `abandoned_in_queue` (none if already so)."""
        self._called("mark_abandoned_in_queue", case_number)
        if self._get(case_number).status is CaseStatus.ABANDONED_IN_QUEUE:
            return self._get(case_number)
        return self._move(case_number, actor, CaseStatus.ABANDONED_IN_QUEUE, CaseEventKind.ABANDONED_IN_QUEUE)

    async def mark_abandoned_in_ivr(self, case_number: str, *, actor: str = ACTOR_SYSTEM) -> Case:
        """The caller hung up in the IVR: only a case still NEW is abandoned there."""
        self._called("mark_abandoned_in_ivr", case_number)
        if self._get(case_number).status is not CaseStatus.NEW:
            return self._get(case_number)
        return self._move(case_number, actor, CaseStatus.ABANDONED_IN_IVR, CaseEventKind.ABANDONED_IN_IVR)

    async def end_call(self, case_number: str, outcome: str, *, actor: str = ACTOR_SYSTEM) -> Case:
        """The case's call ended: abandoned where the outcome says, else open (event `call_ended`); late or
        repeated ends leave the case as it is."""
        self._called("end_call", case_number, outcome)
        case = self._get(case_number)
        if outcome == "abandoned_in_queue":
            if case.status is CaseStatus.ABANDONED_IN_QUEUE:
                return case
            return self._move(case_number, actor, CaseStatus.ABANDONED_IN_QUEUE, CaseEventKind.ABANDONED_IN_QUEUE)
        if outcome == "abandoned_in_ivr":
            if case.status is not CaseStatus.NEW:
                return case
            return self._move(case_number, actor, CaseStatus.ABANDONED_IN_IVR, CaseEventKind.ABANDONED_IN_IVR)
        if case.status not in (CaseStatus.NEW, CaseStatus.QUEUED, CaseStatus.IN_PROGRESS):
            return case
        return self._move(case_number, actor, CaseStatus.OPEN, CaseEventKind.CALL_ENDED, outcome=outcome)

    async def close(self, case_number: str, *, actor: str, resolution: str | None = None) -> Case:
        """Close an open case; event `closed`."""
        self._called("close", case_number, resolution)
        return self._move(case_number, actor, CaseStatus.CLOSED, CaseEventKind.CLOSED, resolution=resolution)

    # --- reading ---------------------------------------------------------------------------------

    async def get(self, case_number: str) -> Case:
        """The case, or CaseNotFound."""
        return self._get(case_number)

    async def events(self, case_number: str) -> list[CaseEvent]:
        """The case's events, oldest first (CaseNotFound for an unknown case)."""
        self._get(case_number)
        return list(self.history.get(case_number, []))

    async def find_by_source(self, source_ref: str) -> Case | None:
        """The case opened for this source reference, if any."""
        return next((c for c in self.cases.values() if c.source_ref == source_ref), None)

    async def list_recent(self, limit: int = 50, status: CaseStatus | str | None = None) -> list[Case]:
        """Newest first, optionally those with one status (an unknown status is refused)."""
        if status is not None:
            try:
                status = CaseStatus(status)
            except ValueError:
                allowed = ", ".join(s.value for s in CaseStatus)
                raise CaseStoreError(f"status must be one of {allowed}; got {status!r}") from None
        found = [c for c in self.cases.values() if status is None or c.status is status]
        return sorted(found, key=lambda c: c.created_at, reverse=True)[:limit]

    async def has_open_case(self, caller_number: str, exclude_case: str | None = None) -> bool:
        """True if this caller has another case still being worked on."""
        worked_on = (CaseStatus.QUEUED, CaseStatus.IN_PROGRESS, CaseStatus.OPEN)
        return any(c.caller_number == caller_number and c.status in worked_on and c.case_number != exclude_case
                   for c in self.cases.values())

    async def list_pending_transcripts(self, limit: int = 100) -> list[Case]:
        """Cases whose transcription is pending, oldest first."""
        found = [c for c in self.cases.values() if c.transcript_status is TranscriptStatus.PENDING]
        return sorted(found, key=lambda c: c.created_at)[:limit]
