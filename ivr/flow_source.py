"""Where each call gets its flow: the version live when the call starts, compiled once and cached per version."""
from __future__ import annotations

import asyncio
import logging
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Protocol

from .flow_model import FlowDocument
from .flow_prompts import PromptResolver
from .flow_store import FlowVersion
from .flow_validator import FlowReport, FlowValidator

log = logging.getLogger(__name__)

SHIPPED_VERSION = 0  # the version number of the shipped file, used until a flow is published


class FlowNotPublished(LookupError):
    """A flow with no published version and no shipped file: nothing to run; the message is one line."""


class FlowRejected(Exception):
    """A flow failed validation; .report has every error; the message is the first one."""

    def __init__(self, report: FlowReport) -> None:
        first = str(report.errors[0]) if report.errors else "invalid flow"
        more = f" (and {len(report.errors) - 1} more)" if len(report.errors) > 1 else ""
        super().__init__(f"{first}{more}")
        self.report = report


@dataclass(frozen=True)
class LoadedFlow:
    """One immutable version of a flow with its prepared prompts; a call keeps it to its end."""

    name: str
    version: int
    document: FlowDocument
    prompts: PromptResolver


PromptFactory = Callable[[FlowDocument], PromptResolver]


class FlowSource(Protocol):
    """Where a call gets its flow: FileFlowSource, LiveFlowSource or the number router."""

    async def current(self) -> LoadedFlow:
        """The flow a call starting now runs."""


class VersionLookup(Protocol):
    """The part of FlowStore a bridge process needs."""

    async def live_version(self, name: str) -> int | None:
        """Number of the live version of a flow, None if never published."""

    async def get(self, name: str, version: int | None = None) -> FlowVersion | None:
        """A stored version, None if missing."""


async def compile_flow(name: str, version: int, text: str, validator: FlowValidator,
                       prompts_for: PromptFactory) -> LoadedFlow:
    """Validate YAML text and prepare its prompts; FlowRejected if invalid."""
    # Off the loop: checking keywords may load an ASR model.
    report = await asyncio.get_running_loop().run_in_executor(None, validator.validate_text, text)
    if not report.ok:
        raise FlowRejected(report)
    assert report.document is not None
    prompts = prompts_for(report.document)
    await prompts.prepare()
    return LoadedFlow(name, version, report.document, prompts)


class FileFlowSource:
    """Always the flow of one YAML file (the shipped default), loaded on first use."""

    def __init__(self, path: Path, validator: FlowValidator, prompts_for: PromptFactory) -> None:
        self._path = path
        self._validator = validator
        self._prompts_for = prompts_for
        self._loaded: LoadedFlow | None = None
        self._lock = asyncio.Lock()

    async def current(self) -> LoadedFlow:
        """The file's flow."""
        if self._loaded is None:
            async with self._lock:
                if self._loaded is None:
                    text = self._path.read_text(encoding="utf-8")
                    doc_name = self._path.stem
                    self._loaded = await compile_flow(doc_name, SHIPPED_VERSION, text, self._validator,
                                                      self._prompts_for)
        return self._loaded


class LiveFlowSource:
    """The published live version of a named flow (the shipped file until the first publish; FlowNotPublished
    when the flow has neither).

    Each call asks for current() once, at its start: one cheap indexed max(version) query, then the
    compiled flow comes from a per-version cache, so a publish from any process is picked up by the
    next call of every bridge process without restarting anything, and calls in progress keep theirs.
    """

    def __init__(self, store: VersionLookup, name: str, shipped: FileFlowSource | None, validator: FlowValidator,
                 prompts_for: PromptFactory, lookup_timeout: float = 2.0) -> None:
        self._store = store
        self._name = name
        self._shipped = shipped
        self._validator = validator
        self._prompts_for = prompts_for
        self._timeout = lookup_timeout
        self._cache: dict[int, LoadedFlow] = {}
        self._lock = asyncio.Lock()
        self._last: LoadedFlow | None = None
        self._broken: set[int] = set()

    async def current(self) -> LoadedFlow:
        """The flow a call starting now runs."""
        try:
            version = await asyncio.wait_for(self._store.live_version(self._name), self._timeout)
        except (TimeoutError, Exception) as exc:  # a database blip must not fail calls: keep the last known flow
            if self._last is not None:
                log.warning("flow %s: live version lookup failed (%s); using version %d", self._name,
                            str(exc).splitlines()[0] if str(exc) else type(exc).__name__, self._last.version)
                return self._last
            raise
        if version is None:
            if self._shipped is None:
                raise FlowNotPublished(f"flow {self._name!r} has no published version and no shipped file")
            self._last = await self._shipped.current()
            return self._last
        loaded = self._cache.get(version)
        if loaded is None and version in self._broken and self._last is not None:
            return self._last
        if loaded is None:
            try:
                loaded = await self._load(version)
            except Exception as exc:  # a version this process cannot run must not fail calls: keep the last good one
                if self._last is None:
                    raise
                self._broken.add(version)  # not retried on every call; the next publish gets a new number
                log.error("flow %s: version %d cannot be loaded here (%s); calls keep version %d", self._name,
                          version, str(exc).splitlines()[0] if str(exc) else type(exc).__name__, self._last.version)
                return self._last
        self._last = loaded
        return loaded

    async def _load(self, version: int) -> LoadedFlow:
        async with self._lock:  # one compile per new version, however many calls arrive at once
            if version in self._cache:
                return self._cache[version]
            stored = await asyncio.wait_for(self._store.get(self._name, version), self._timeout)
            if stored is None:
                raise LookupError(f"flow {self._name!r} version {version} vanished from the store")
            loaded = await compile_flow(self._name, version, stored.text, self._validator, self._prompts_for)
            # Older versions may still run in calls (they hold their own reference); keep only a few here.
            for old in sorted(self._cache)[:-3]:
                del self._cache[old]
            self._cache[version] = loaded
            log.info("flow %s: version %d is live", self._name, version)
            return loaded


FlowLoader = Callable[[], Awaitable[LoadedFlow]]
