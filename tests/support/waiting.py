"""Waiting, in tests through the real parts, for what a user would see to happen."""
from __future__ import annotations

import asyncio
import inspect
from collections.abc import Callable
from typing import Any


async def until(check: Callable[[], Any], timeout: float = 30.0, what: str = "condition") -> Any:
    """Poll check() (a function or a coroutine function) until it returns something true, and return that;
    AssertionError naming `what` and the last value seen after timeout seconds."""
    deadline = asyncio.get_running_loop().time() + timeout
    last = None
    while asyncio.get_running_loop().time() < deadline:
        last = check()
        if inspect.isawaitable(last):
            last = await last
        if last:
            return last
        await asyncio.sleep(0.25)
    raise AssertionError(f"{what} not reached within {timeout} s (last: {last!r})")
