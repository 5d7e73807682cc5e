"""The outbox keeps writes the database did not take in time, in order, and replays each once."""
from __future__ import annotations

import asyncio
import json
from pathlib import Path

import pytest
from sqlalchemy.exc import OperationalError

from storage import Outbox, OutboxEntry


class Flaky:
    """A handler that fails with a lock error while `down` is set, and records what it applied."""

    def __init__(self) -> None:
        self.down = False
        self.applied: list[tuple[str, dict[str, object]]] = []
        self.refuse: set[str] = set()

    async def __call__(self, entry: OutboxEntry) -> None:
        if self.down:
            raise OperationalError("INSERT", {}, Exception("database is locked"))
        if entry.args.get("key") in self.refuse:
            raise ValueError(f"bad key {entry.args['key']}")
        self.applied.append((entry.id, entry.args))


async def _outbox(tmp_path: Path, handler: Flaky, **kwargs: float) -> Outbox:
    box = Outbox(tmp_path, write_timeout=kwargs.get("write_timeout", 0.5), retry_min=0.05, retry_max=0.1)
    box.register("write", handler)
    await box.start()
    return box


async def test_a_write_the_database_takes_is_applied_at_once_and_not_journaled(tmp_path: Path) -> None:
    handler = Flaky()
    box = await _outbox(tmp_path, handler)
    try:
        assert await box.submit(box.entry("write", {"key": "a"})) is True
        assert [a for _, a in handler.applied] == [{"key": "a"}]
        assert box.pending == 0 and box.journaled == 0
    finally:
        await box.aclose()


async def test_writes_during_an_outage_are_kept_in_order_and_replayed_once_when_it_ends(tmp_path: Path) -> None:
    handler = Flaky()
    box = await _outbox(tmp_path, handler)
    try:
        handler.down = True
        for key in "abc":
            assert await box.submit(box.entry("write", {"key": key})) is False
        assert box.pending == 3
        lines = (tmp_path / "outbox.jsonl").read_text().splitlines()
        assert [json.loads(line)["args"]["key"] for line in lines] == ["a", "b", "c"]
        assert (tmp_path / "outbox.jsonl").stat().st_mode & 0o777 == 0o600
        assert box.health_report()["pending"] == 3
        handler.down = False
        assert await box.wait_drained(5)
        assert [a["key"] for _, a in handler.applied] == ["a", "b", "c"]
        assert box.replayed == 3 and box.pending == 0
        assert (tmp_path / "outbox.jsonl").read_text() == ""  # started afresh once everything is written
    finally:
        await box.aclose()


async def test_a_write_after_an_outage_waits_behind_the_journal(tmp_path: Path) -> None:
    handler = Flaky()
    box = await _outbox(tmp_path, handler)
    try:
        handler.down = True
        await box.submit(box.entry("write", {"key": "first"}))
        handler.down = False
        # The database answers again, but an older write is still waiting: this one must not overtake it.
        await box.submit(box.entry("write", {"key": "second"}))
        assert await box.wait_drained(5)
        assert [a["key"] for _, a in handler.applied] == ["first", "second"]
    finally:
        await box.aclose()


async def test_what_a_stopped_process_left_is_replayed_by_the_next_one(tmp_path: Path) -> None:
    handler = Flaky()
    handler.down = True
    box = await _outbox(tmp_path, handler)
    entries = [box.entry("write", {"key": key}) for key in "xy"]
    for entry in entries:
        await box.submit(entry)
    await box.aclose()
    with (tmp_path / "outbox.jsonl").open("a") as fh:
        fh.write('{"id": "torn')  # a crash in the middle of a line
    later = Flaky()
    box2 = await _outbox(tmp_path, later)
    try:
        assert await box2.wait_drained(5)
        assert [(i, a["key"]) for i, a in later.applied] == [(entries[0].id, "x"), (entries[1].id, "y")]
    finally:
        await box2.aclose()


async def test_replayed_entries_marked_done_are_not_replayed_again_after_a_restart(tmp_path: Path) -> None:
    handler = Flaky()
    handler.down = True
    box = await _outbox(tmp_path, handler)
    for key in "pq":
        await box.submit(box.entry("write", {"key": key}))
    await box.aclose()
    # A process that wrote p, marked it done, and died before q.
    first = json.loads((tmp_path / "outbox.jsonl").read_text().splitlines()[0])
    with (tmp_path / "outbox.jsonl").open("a") as fh:
        fh.write(json.dumps({"done": first["id"]}) + "\n")
    later = Flaky()
    box2 = await _outbox(tmp_path, later)
    try:
        assert await box2.wait_drained(5)
        assert [a["key"] for _, a in later.applied] == ["q"]
    finally:
        await box2.aclose()


async def test_a_write_refused_for_good_is_an_error_now_and_parked_on_replay(tmp_path: Path) -> None:
    handler = Flaky()
    handler.refuse = {"bad"}
    box = await _outbox(tmp_path, handler)
    try:
        with pytest.raises(ValueError, match="bad key bad"):
            await box.submit(box.entry("write", {"key": "bad"}))
        handler.down = True
        await box.submit(box.entry("write", {"key": "bad"}))
        await box.submit(box.entry("write", {"key": "good"}))
        handler.down = False
        assert await box.wait_drained(5)
        assert [a["key"] for _, a in handler.applied] == ["good"]  # the bad one did not block the queue
        parked = [json.loads(line) for line in (tmp_path / "outbox.parked.jsonl").read_text().splitlines()]
        assert parked[0]["entry"]["args"] == {"key": "bad"} and "bad key" in parked[0]["error"]
        assert box.parked == 1
    finally:
        await box.aclose()


async def test_a_write_that_hangs_is_journaled_after_the_write_timeout(tmp_path: Path) -> None:
    release = asyncio.Event()
    applied: list[str] = []

    async def slow(entry: OutboxEntry) -> None:
        await release.wait()
        applied.append(entry.id)

    box = Outbox(tmp_path, write_timeout=0.2, retry_min=0.05, retry_max=0.1)
    box.register("write", slow)
    await box.start()
    try:
        loop = asyncio.get_running_loop()
        started = loop.time()
        assert await box.submit(box.entry("write", {})) is False
        assert loop.time() - started < 1.0
        release.set()
        assert await box.wait_drained(5)
    finally:
        await box.aclose()


def test_an_unknown_operation_is_refused_with_its_name(tmp_path: Path) -> None:
    box = Outbox(tmp_path)
    with pytest.raises(ValueError, match="unknown outbox operation 'nope'"):
        box.entry("nope", {})
