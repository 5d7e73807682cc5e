"""What the console and the API see of queueing: agents with their live state, queues, metrics, Prometheus text."""
from __future__ import annotations

from datetime import UTC, datetime
from typing import Any

from .agents import AgentService
from .metrics import QueueMetricsStore, prometheus_text
from .queue_live import QueueLiveState


class QueueConsole:
    """One facade over agent commands, the live queue state and the metrics (the console never touches AMI)."""

    def __init__(self, agents: AgentService, live: QueueLiveState, metrics: QueueMetricsStore,
                 queues: list[str]) -> None:
        self._agents = agents
        self._live = live
        self._metrics = metrics
        self._queues = list(queues)

    @property
    def agents(self) -> AgentService:
        """Agent commands (login, pause, resume, logout, add, remove)."""
        return self._agents

    async def list_agents(self) -> list[dict[str, Any]]:
        """Agent records merged with their live state."""
        live = {a["name"]: a for a in await self._live.agents()}
        out = []
        for agent in await self._agents.list():
            state = live.get(agent.name) or {}
            out.append({**agent.to_dict(), "state": state.get("state") or "logged_out",
                        "state_since": state.get("since"), "live_pause_reason": state.get("pause_reason"),
                        "linkedid": state.get("linkedid")})
        return out

    async def queues(self) -> list[dict[str, Any]]:
        """Each queue's waiting calls (by position) and counters."""
        return [{"queue": q, "waiting": await self._live.waiting(q), "counters": await self._live.counters(q)}
                for q in self._queues]

    async def figures(self, since: datetime | None = None) -> list[dict[str, Any]]:
        """Metrics per queue since `since` (default: today, UTC)."""
        since = since or datetime.now(UTC).replace(hour=0, minute=0, second=0, microsecond=0)
        return [f.to_dict() for f in await self._metrics.figures(self._queues, since=since)]

    async def prometheus(self) -> bytes:
        """/metrics text: all-time counters and live gauges."""
        waiting = {q: len(await self._live.waiting(q)) for q in self._queues}
        by_state: dict[str, int] = {}
        for a in await self._live.agents():
            state = a.get("state") or "unknown"
            by_state[state] = by_state.get(state, 0) + 1
        return prometheus_text(await self._metrics.figures(self._queues), {"waiting": waiting, "agents": by_state},
                               self._metrics.service_level_seconds)
