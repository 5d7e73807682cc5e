"""Which flow answers a dialed number: an admin's route (stored) over the configured mapping (ivr_numbers).

Every number of the mapping reaches the IVR through the dialplan; the number a call dialed comes to the
engine as the AGI argument (or agi_extension). A flow that cannot run (never published, no file) does not
fail the call: it runs the default flow, with a warning in the log.
"""
from __future__ import annotations

import asyncio
import logging
import re
from collections.abc import Callable, Mapping
from pathlib import Path
from typing import Protocol

from .flow_source import FlowNotPublished, FlowSource, LoadedFlow

log = logging.getLogger(__name__)

DEFAULT_FLOW_NAME = "default"
FLOW_NAME = re.compile(r"^[a-z][a-z0-9_-]{0,63}$")  # as a flow document's name


class RouteLookup(Protocol):
    """The part of FlowStore the router needs."""

    async def route_of(self, number: str) -> str | None:
        """The flow an admin routed the number to; None: the configured one."""


def dialed_number(agi: object) -> str | None:
    """The number the caller dialed: the AGI argument the dialplan passes, else agi_extension (None if neither)."""
    headers = getattr(agi, "headers", None) or {}
    for key in ("agi_arg_1", "agi_extension"):
        value = (headers.get(key) or "").strip()
        if value.isdigit():
            return value
    return None


def flow_file_for(name: str, flow_file: Path, default_name: str = DEFAULT_FLOW_NAME) -> Path | None:
    """The shipped file of a flow: the configured flow file for the default one, else <name>.yaml beside it."""
    if name == default_name:
        return flow_file
    if not FLOW_NAME.match(name):
        return None  # never a path outside the flow folder
    path = flow_file.parent / f"{name}.yaml"
    return path if path.is_file() else None


def _first_line(exc: BaseException) -> str:
    return str(exc).splitlines()[0] if str(exc) else type(exc).__name__


class FlowRouter:
    """Picks each call's flow by the dialed number; one flow source (LiveFlowSource) per flow name.

    numbers: the configured mapping, dialed number → flow name (the hotline number included);
    source_for: flow name → its source (with current()); routes: admin routes (FlowStore), None for none.
    """

    def __init__(self, numbers: Mapping[str, str], hotline_number: str, source_for: Callable[[str], FlowSource],
                 routes: RouteLookup | None = None, *, default_name: str = DEFAULT_FLOW_NAME,
                 lookup_timeout: float = 2.0) -> None:
        self._numbers = dict(numbers)
        self._numbers.setdefault(hotline_number, default_name)
        self._hotline_number = hotline_number
        self._source_for = source_for
        self._sources: dict[str, FlowSource] = {}
        self._routes = routes
        self._default = default_name
        self._timeout = lookup_timeout

    @property
    def numbers(self) -> dict[str, str]:
        """The configured mapping (dialed number → flow name), the hotline number included."""
        return dict(self._numbers)

    def source(self, name: str) -> FlowSource:
        """The flow source of a flow name (made once)."""
        if name not in self._sources:
            self._sources[name] = self._source_for(name)
        return self._sources[name]

    async def flow_name_for(self, number: str | None) -> str:
        """The flow a call to this number runs: the admin's route, else the configured one."""
        if number not in self._numbers:
            number = self._hotline_number  # e.g. a call placed straight into the IVR without a number
        configured = self._numbers[number]
        if self._routes is None:
            return configured
        try:
            routed = await asyncio.wait_for(self._routes.route_of(number), self._timeout)
        except (TimeoutError, Exception) as exc:  # a database blip must not fail calls: the configured flow runs
            log.warning("number %s: route lookup failed (%s); running its configured flow %r", number,
                        _first_line(exc), configured)
            return configured
        return routed or configured

    async def for_number(self, number: str | None) -> LoadedFlow:
        """The live version of the flow of the dialed number; the default flow if that one cannot run."""
        name = await self.flow_name_for(number)
        if name == self._default:
            return await self.source(name).current()
        try:
            return await self.source(name).current()
        except Exception as exc:  # unpublished, invalid or unloadable: the caller still gets the hotline
            log.warning("number %s: flow %r cannot run (%s); the call runs %r", number or self._hotline_number,
                        name, _first_line(exc), self._default)
            return await self.source(self._default).current()

    async def current(self) -> LoadedFlow:
        """The flow of the hotline number."""
        return await self.for_number(self._hotline_number)

    async def check(self, extra_names: Mapping[str, str] | None = None) -> list[str]:
        """Load every mapped flow (compiling it and synthesizing its prompts now rather than on a first call);
        one line per number whose flow cannot run. extra_names: admin routes (number → flow) to check too."""
        problems = []
        # An admin route of a number no longer configured is never used: the dialplan does not reach the IVR.
        mapping = {**self._numbers, **{n: f for n, f in (extra_names or {}).items() if n in self._numbers}}
        for number, name in sorted(mapping.items()):
            if name == self._default:
                continue
            try:
                await self.source(name).current()
            except FlowNotPublished:
                problems.append(f"number {number} runs flow {name!r}, which is neither published nor a shipped file; "
                                f"its calls run {self._default!r} until it is published")
            except Exception as exc:  # one line naming the flow is the point of this check
                problems.append(f"number {number} runs flow {name!r}, which cannot run ({_first_line(exc)}); "
                                f"its calls run {self._default!r}")
        return problems
