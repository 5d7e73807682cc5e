"""The case operations the call side drives, kept when the database does not answer in time.

A citizen on the line must not be dropped because the database is locked, slow or away. `DurableCases` offers
the call side's named operations; each goes through the outbox (storage.Outbox): tried at once with a short
timeout, else journaled on local disk and replayed in order, each applied once (the store records the write's id
in the same transaction). Case numbers come from a small pool reserved ahead, so a case opened while the database
is away still has its real number to read back; if the pool is empty too, the case gets a provisional reference
(`ref:<source>`) until its journaled opening is written, and later writes find it by that source.
"""
from __future__ import annotations

import asyncio
import logging
from dataclasses import asdict, dataclass
from typing import Any

from lifecycle import TaskOwner
from storage import Outbox, OutboxEntry, is_transient

from .errors import CaseNotFound
from .events import ACTOR_SYSTEM
from .model import MAX_CALLER_NUMBER, MAX_MENU_STEP, MAX_MENU_STEPS, Case, NewCase
from .store import CaseStore

log = logging.getLogger(__name__)

PROVISIONAL_PREFIX = "ref:"

# The writes of the call side, by outbox operation name; each is the CaseStore named operation of the same name.
_OPERATIONS = ("record_menu_path", "mark_abandoned_in_ivr", "attach_recording", "drop_recording",
               "transcript_pending", "record_transcript", "classify", "add_note", "mark_queued", "assign_agent",
               "end_call", "mark_abandoned_in_queue", "mark_interrupted")


def normalise_caller_number(raw: str | None) -> str:
    """A caller ID as a case can hold it: printable, at most MAX_CALLER_NUMBER characters, 'anonymous' if none."""
    text = "".join(ch for ch in (raw or "") if ch.isprintable()).strip()
    return text[:MAX_CALLER_NUMBER] or "anonymous"


def normalise_menu_path(path: list[str]) -> list[str]:
    """A menu path as a case can hold it: each step cut to MAX_MENU_STEP characters; past MAX_MENU_STEPS steps
    the first ones are kept and the last step says how many were left out."""
    steps = [step[:MAX_MENU_STEP] for step in path]
    if len(steps) > MAX_MENU_STEPS:
        steps = [*steps[:MAX_MENU_STEPS - 1], f"...+{len(steps) - MAX_MENU_STEPS + 1}"]
    return steps


@dataclass(frozen=True)
class OpenedCase:
    """The number a newly opened case goes by: its real number, or a provisional reference (see is_provisional)."""

    case_number: str

    @property
    def provisional(self) -> bool:
        """Whether the number is a provisional reference (the opening is still in the journal)."""
        return is_provisional(self.case_number)


def is_provisional(case_number: str) -> bool:
    """Whether a case number is a provisional reference (the case's opening is still in the journal)."""
    return case_number.startswith(PROVISIONAL_PREFIX)


async def resolve_case_number(store: CaseStore, case_number: str) -> str:
    """The real number of a case, also when it is given by its provisional reference (CaseNotFound while the
    case's opening is not written yet)."""
    if not is_provisional(case_number):
        return case_number
    found = await store.find_by_source(case_number.removeprefix(PROVISIONAL_PREFIX))
    if found is None:
        raise CaseNotFound(f"no case opened for {case_number!r} yet")
    return found.case_number


class DurableCases:
    """The call side's case operations through the outbox: a database outage delays them, never loses them.

    Register the handlers with register() before the outbox starts; keep the number pool full with refill()."""

    def __init__(self, store: CaseStore, outbox: Outbox, *, pool_size: int = 20, read_timeout: float = 2.0) -> None:
        self._store = store
        self._outbox = outbox
        self._pool_size = pool_size
        self._read_timeout = read_timeout
        self._numbers: list[str] = []
        self._refilling: asyncio.Lock = asyncio.Lock()
        self._tasks = TaskOwner("case number pool")

    async def aclose(self) -> None:
        """Stop a refill in flight."""
        await self._tasks.aclose()

    def register(self) -> None:
        """Name this domain's writes on the outbox (once, before it starts)."""
        self._outbox.register("cases.open", self._apply_open)
        for name in _OPERATIONS:
            self._outbox.register(f"cases.{name}", self._apply_operation)

    @property
    def reserved_numbers(self) -> int:
        """Case numbers in hand for openings while the database is away."""
        return len(self._numbers)

    async def refill(self, *, wait: bool = False) -> None:
        """Top the number pool up (one round trip); a database that does not answer leaves it as it is.

        wait: if a refill is already under way, wait for it (and refill again if it did not leave enough)."""
        if len(self._numbers) > self._pool_size // 2 or (self._refilling.locked() and not wait):
            return
        async with self._refilling:
            if len(self._numbers) > self._pool_size // 2:  # another caller's refill filled it meanwhile
                return
            try:
                async with asyncio.timeout(self._read_timeout):
                    self._numbers.extend(await self._store.reserve_numbers(self._pool_size - len(self._numbers)))
            except Exception as exc:
                if not is_transient(exc):
                    raise
                log.info("cases: could not reserve case numbers now: %s", str(exc).splitlines()[0] if str(exc)
                         else type(exc).__name__)

    async def _take_number(self) -> str | None:
        # Many calls at once may empty the pool while a refill is under way: wait for it rather than falling back
        # to a provisional reference, as long as the database answers (the outbox is not holding writes back).
        for _ in range(3):
            if self._numbers:
                return self._numbers.pop(0)
            if self._outbox.pending:
                return None
            await self.refill(wait=True)
        return self._numbers.pop(0) if self._numbers else None

    # --- the writes -------------------------------------------------------------------------------

    async def open(self, new: NewCase, *, actor: str) -> OpenedCase:
        """Open the case (now or from the journal); return its number, or a provisional reference when neither
        the database nor the number pool could give one."""
        new = NewCase(caller_number=normalise_caller_number(new.caller_number), category=new.category,
                      source_ref=new.source_ref, menu_path=normalise_menu_path(list(new.menu_path)))
        number = await self._take_number()
        if number is None and new.source_ref is None:
            # No number and nothing to find the case by later: the database must answer now.
            case = await self._store.open(new, actor=actor)
            return OpenedCase(case.case_number)
        await self._outbox.submit(self._outbox.entry("cases.open", {"new": asdict(new), "actor": actor,
                                                                    "case_number": number}))
        if len(self._numbers) <= self._pool_size // 2 and not self._outbox.pending and not self._refilling.locked():
            self._tasks.spawn(self.refill(), "case-number-refill")
        return OpenedCase(number if number is not None else f"{PROVISIONAL_PREFIX}{new.source_ref}")

    async def record_menu_path(self, case_number: str, menu_path: list[str], *, actor: str) -> None:
        """The caller's choices so far (cut to what a case holds)."""
        await self._write("record_menu_path", case_number, menu_path=normalise_menu_path(list(menu_path)),
                          actor=actor)

    async def mark_abandoned_in_ivr(self, case_number: str, *, actor: str) -> None:
        """The caller hung up in the IVR."""
        await self._write("mark_abandoned_in_ivr", case_number, actor=actor)

    async def attach_recording(self, case_number: str, recording_path: str, *, actor: str) -> None:
        """The caller's recorded description."""
        await self._write("attach_recording", case_number, recording_path=recording_path, actor=actor)

    async def drop_recording(self, case_number: str, reason: str, *, actor: str) -> None:
        """No usable recording was made."""
        await self._write("drop_recording", case_number, reason=reason, actor=actor)

    async def transcript_pending(self, case_number: str, *, actor: str) -> None:
        """The description waits for its transcript."""
        await self._write("transcript_pending", case_number, actor=actor)

    async def record_transcript(self, case_number: str, text: str, *, actor: str) -> None:
        """The description's transcript."""
        await self._write("record_transcript", case_number, text=text, actor=actor)

    async def classify(self, case_number: str, *, category: str | None = None, priority: int | None = None,
                       menu_path: list[str] | None = None, actor: str) -> None:
        """Category and priority from the menu."""
        await self._write("classify", case_number, category=category, priority=priority,
                          menu_path=None if menu_path is None else normalise_menu_path(list(menu_path)), actor=actor)

    async def add_note(self, case_number: str, text: str, *, actor: str) -> None:
        """A note on the case."""
        await self._write("add_note", case_number, text=text, actor=actor)

    async def mark_queued(self, case_number: str, queue: str) -> None:
        """The call joined a queue."""
        await self._write("mark_queued", case_number, queue=queue)

    async def assign_agent(self, case_number: str, agent: str) -> None:
        """An agent answered the call."""
        await self._write("assign_agent", case_number, agent=agent)

    async def end_call(self, case_number: str, outcome: str) -> None:
        """The call ended with this outcome."""
        await self._write("end_call", case_number, outcome=outcome)

    async def mark_interrupted(self, case_number: str, reason: str, *, actor: str = ACTOR_SYSTEM) -> None:
        """The hotline failed during the call (not the caller's hang-up)."""
        await self._write("mark_interrupted", case_number, reason=reason, actor=actor)

    async def mark_abandoned_in_queue(self, case_number: str) -> None:
        """The caller hung up while waiting in the queue."""
        await self._write("mark_abandoned_in_queue", case_number)

    # --- reads (bounded; the call side goes on without them) ---------------------------------------

    async def get(self, case_number: str) -> Case:
        """The case (CaseNotFound if unknown; TimeoutError if the database does not answer in time)."""
        async with asyncio.timeout(self._read_timeout):
            return await self._store.get(case_number)

    async def has_open_case(self, caller_number: str, exclude_case: str | None = None) -> bool:
        """Whether the caller has another open case; False when the database does not answer in time."""
        try:
            async with asyncio.timeout(self._read_timeout):
                return await self._store.has_open_case(caller_number, exclude_case)
        except Exception as exc:
            if not is_transient(exc):
                raise
            return False

    # --- inside -----------------------------------------------------------------------------------

    async def _write(self, operation: str, case_number: str, **args: Any) -> None:
        await self._outbox.submit(self._outbox.entry(f"cases.{operation}", {"case_number": case_number, **args}))

    async def _apply_open(self, entry: OutboxEntry) -> None:
        args = entry.args
        await self._store.idempotent(entry.id, entry.at).open(NewCase(**args["new"]), actor=args["actor"],
                                                               case_number=args.get("case_number"))

    async def _apply_operation(self, entry: OutboxEntry) -> None:
        args = dict(entry.args)
        case_number = await resolve_case_number(self._store, str(args.pop("case_number")))
        operation = getattr(self._store.idempotent(entry.id, entry.at), entry.op.removeprefix("cases."))
        await operation(case_number, **args)
