"""TaskOwner: keeps, names, logs failures, cancels and awaits at close."""
from __future__ import annotations

import asyncio
import logging

import pytest

from lifecycle import TaskOwner


async def test_tasks_are_kept_until_done_and_named() -> None:
    owner = TaskOwner("test")
    release = asyncio.Event()
    task = owner.spawn(release.wait(), "waiter-1")
    assert owner.names == ["waiter-1"] and len(owner) == 1
    release.set()
    await task
    await asyncio.sleep(0)
    assert len(owner) == 0


async def test_failure_is_logged_with_the_task_name(caplog: pytest.LogCaptureFixture) -> None:
    owner = TaskOwner("test")

    async def boom() -> None:
        raise ValueError("broken")

    task = owner.spawn(boom(), "boomer")
    with caplog.at_level(logging.ERROR):
        await asyncio.gather(task, return_exceptions=True)
        await asyncio.sleep(0)
    assert "boomer failed: broken" in caplog.text


async def test_aclose_cancels_awaits_and_refuses_new_tasks() -> None:
    owner = TaskOwner("test")
    cleaned: list[str] = []

    async def worker() -> None:
        try:
            await asyncio.sleep(3600)
        finally:
            await asyncio.sleep(0.01)  # cleanup that itself awaits: aclose must wait for it
            cleaned.append("done")

    owner.spawn(worker(), "w1")
    owner.spawn(worker(), "w2")
    await asyncio.sleep(0)
    await asyncio.wait_for(owner.aclose(), 2)
    assert cleaned == ["done", "done"] and len(owner) == 0
    with pytest.raises(RuntimeError, match="shutting down"):
        owner.spawn(asyncio.sleep(0), "late")


async def test_wait_returns_the_tasks_still_running() -> None:
    owner = TaskOwner("test")
    owner.spawn(asyncio.sleep(0), "quick")
    slow = owner.spawn(asyncio.sleep(3600), "slow")
    pending = await owner.wait(0.05)
    assert pending == {slow}
    await owner.aclose()
