"""FlowAdmin: what admins do with flows (validate, publish, roll back, browse, audit, route numbers), for the CLI
and the console."""
from __future__ import annotations

import asyncio
from collections.abc import Mapping
from pathlib import Path
from typing import Any

from .flow_routes import FLOW_NAME, flow_file_for
from .flow_source import SHIPPED_VERSION, FlowRejected, PromptFactory
from .flow_store import AuditEntry, FlowStore, FlowVersion
from .flow_validator import FlowReport, FlowValidator


class FlowNotFound(LookupError):
    """No such flow or version; the message is one line."""


class RouteRefused(ValueError):
    """A number cannot be routed (it does not reach the IVR, or the flow name is malformed); one-line message."""


class FlowAdmin:
    """Publishing goes through validation and prompt synthesis first, so nothing invalid or silent goes live."""

    def __init__(self, store: FlowStore, validator: FlowValidator, prompts_for: PromptFactory,
                 shipped_file: Path, live_name: str = "default", numbers: Mapping[str, str] | None = None) -> None:
        self._store = store
        self._validator = validator
        self._prompts_for = prompts_for
        self._shipped = shipped_file
        self.live_name = live_name
        self._numbers = dict(numbers or {})  # the configured mapping: dialed number → flow name

    async def validate(self, text: str) -> FlowReport:
        """Every error and warning of a flow document (off the loop: keyword checks may load an ASR model)."""
        return await asyncio.get_running_loop().run_in_executor(None, self._validator.validate_text, text)

    async def publish(self, text: str, actor: str, comment: str = "") -> FlowVersion:
        """Validate, synthesize its prompts, then store it as the flow's next version (live from the next call)."""
        report = await self._checked(text)
        assert report.document is not None
        return await self._store.publish(report.document.name, text, actor, comment=comment)

    async def rollback(self, name: str, version: int, actor: str) -> FlowVersion:
        """Re-publish an older version's text as a new version (re-validated: files or models may have changed)."""
        old = await self._store.get(name, version)
        if old is None:
            raise FlowNotFound(f"flow {name!r} has no version {version}")
        report = await self._checked(old.text)
        assert report.document is not None
        return await self._store.publish(name, old.text, actor, rollback_of=version)

    async def _checked(self, text: str) -> FlowReport:
        report = await self.validate(text)
        if not report.ok:
            raise FlowRejected(report)
        assert report.document is not None
        await self._prompts_for(report.document).prepare()  # PromptError if a prompt cannot be synthesized
        return report

    async def list_flows(self) -> list[dict[str, Any]]:
        """Published flows with their live versions; the shipped default when it was never published."""
        flows = await self._store.list_flows()
        for flow in flows:
            flow["live"] = flow["name"] == self.live_name
        if not any(f["name"] == self.live_name for f in flows):
            flows.insert(0, {"name": self.live_name, "live_version": SHIPPED_VERSION, "live": True,
                             "shipped_file": str(self._shipped)})
        return flows

    async def get(self, name: str, version: int | None = None) -> dict[str, Any]:
        """A version's text and metadata (the live one by default; version 0 is the shipped file)."""
        stored = await self._store.get(name, version) if version != SHIPPED_VERSION else None
        if stored is not None:
            return stored.to_dict()
        if name == self.live_name and (version in (None, SHIPPED_VERSION)):
            return {"flow_name": name, "version": SHIPPED_VERSION, "text": self._shipped.read_text(encoding="utf-8"),
                    "published_at": None, "published_by": "shipped", "rollback_of": None,
                    "comment": f"shipped file {self._shipped.name}"}
        raise FlowNotFound(f"flow {name!r} has no version {version}" if version is not None
                           else f"no flow named {name!r}")

    async def versions(self, name: str) -> list[FlowVersion]:
        """Every stored version, newest first."""
        return await self._store.versions(name)

    async def audit(self, limit: int = 100) -> list[AuditEntry]:
        """Who published what, most recent first."""
        return await self._store.audit(limit)

    async def routes(self) -> list[dict[str, Any]]:
        """Each number reaching the IVR with the flow it runs (an admin's route over the configured one)."""
        routed = {r.number: r for r in await self._store.routes()}
        out = []
        for number, configured in sorted(self._numbers.items()):
            route = routed.get(number)
            out.append({"number": number, "flow": route.flow_name if route else configured,
                        "configured_flow": configured, "routed_by": route.routed_by if route else None,
                        "routed_at": route.routed_at if route else None})
        return out

    async def route(self, number: str, flow_name: str, actor: str) -> dict[str, Any]:
        """Switch the flow a number runs, from its next call on (every bridge process; audited like a publish)."""
        if number not in self._numbers:
            known = ", ".join(sorted(self._numbers)) or "none"
            raise RouteRefused(f"number {number!r} does not reach the IVR (numbers: {known}); add it to "
                               f"ivr_numbers and restart")
        if not FLOW_NAME.match(flow_name):
            raise RouteRefused(f"{flow_name!r} is not a flow name (lower-case letters, digits, - and _)")
        live_version = await self._store.live_version(flow_name)
        if live_version is None:
            if flow_file_for(flow_name, self._shipped, self.live_name) is None:
                raise FlowNotFound(f"no flow named {flow_name!r}: publish it first")
            live_version = SHIPPED_VERSION
        previous = next(r["flow"] for r in await self.routes() if r["number"] == number)
        await self._store.set_route(number, flow_name, actor, previous=previous, live_version=live_version)
        return next(r for r in await self.routes() if r["number"] == number)
