"""A call cut off by a system failure is `interrupted`, never `abandoned_in_ivr`: the caller is not blamed."""
from __future__ import annotations

import asyncio

import pytest

from cases import ACTOR_IVR, CaseEventKind, CaseStatus, CaseStore, CaseTransitionError, NewCase, can_move
from storage import create_engine_from_url, migrate_database


@pytest.fixture
async def cases(tmp_path):
    url = f"sqlite+aiosqlite:///{tmp_path / 'cases.db'}"
    await asyncio.get_running_loop().run_in_executor(None, migrate_database, url)
    engine = create_engine_from_url(url)
    yield CaseStore(engine)
    await engine.dispose()


async def _new(cases: CaseStore) -> str:
    return (await cases.open(NewCase(caller_number="0101", category="unclassified"), actor=ACTOR_IVR)).case_number


def test_only_a_case_being_collected_can_be_interrupted_and_a_supervisor_closes_it() -> None:
    assert can_move(CaseStatus.NEW, CaseStatus.INTERRUPTED)
    for status in (CaseStatus.QUEUED, CaseStatus.IN_PROGRESS, CaseStatus.OPEN, CaseStatus.ABANDONED_IN_IVR):
        assert not can_move(status, CaseStatus.INTERRUPTED)
    assert [s for s in CaseStatus if can_move(CaseStatus.INTERRUPTED, s)] == [CaseStatus.CLOSED]


async def test_mark_interrupted_records_the_system_failure_with_its_reason(cases: CaseStore) -> None:
    number = await _new(cases)
    case = await cases.mark_interrupted(number, "the bridge that ran its IVR (host:1:ab) stopped during the call")
    assert case.status is CaseStatus.INTERRUPTED
    assert case.notes == "call interrupted by a system failure: the bridge that ran its IVR (host:1:ab) stopped " \
                         "during the call"
    kinds = [e.kind for e in await cases.events(number)]
    assert kinds == [CaseEventKind.OPENED, CaseEventKind.INTERRUPTED, CaseEventKind.NOTE]
    # Reported again (the IVR and the call tracker both saw it), or as the call's end: nothing more happens.
    assert (await cases.mark_interrupted(number, "again")).status is CaseStatus.INTERRUPTED
    assert (await cases.end_call(number, "abandoned_in_ivr")).status is CaseStatus.INTERRUPTED
    assert len(await cases.events(number)) == 3
    closed = await cases.close(number, actor="supervisor1", resolution="called the citizen back")
    assert closed.status is CaseStatus.CLOSED


async def test_a_case_the_caller_already_left_or_that_got_further_is_not_rewritten(cases: CaseStore) -> None:
    abandoned = await _new(cases)
    await cases.mark_abandoned_in_ivr(abandoned)
    assert (await cases.mark_interrupted(abandoned, "late")).status is CaseStatus.ABANDONED_IN_IVR
    queued = await _new(cases)
    await cases.mark_queued(queued, "complaints")
    assert (await cases.end_call(queued, "interrupted")).status is CaseStatus.QUEUED
    new = await _new(cases)
    assert (await cases.end_call(new, "interrupted")).status is CaseStatus.INTERRUPTED
    assert [c.case_number for c in await cases.list_recent(status="interrupted")] == [new]
    with pytest.raises(CaseTransitionError):
        await cases.mark_queued(new, "complaints")
