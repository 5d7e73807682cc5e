"""Agents: their records (SIP endpoint, skills), the durable log-in/pause wish, and applying it to Asterisk.

The database holds what each agent *should* be (logged in to which queues, paused and why); Asterisk's
app_queue holds dynamic members. ``AgentService`` changes both (database first, so a lost AMI
connection loses nothing) and ``sync()`` makes Asterisk match the database again after every (re)connect.
"""
from __future__ import annotations

import asyncio
import builtins
import logging
import os
import re
import secrets
from collections.abc import Awaitable, Iterable, Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from sqlalchemy import delete, select, update
from sqlalchemy.exc import IntegrityError
from sqlalchemy.ext.asyncio import AsyncEngine

from storage import finish_on_cancel
from telephony import AmiActionFailed, AmiError, AsteriskConsoleError

from .ports import AmiActions, AsteriskCli
from .queue_tables import AgentRow, AgentSkillRow

log = logging.getLogger(__name__)

PAUSE_REASONS = ("break", "training", "case_work", "meeting")
_NAME = re.compile(r"^[a-z][a-z0-9_]{1,31}$")
_SECRET = re.compile(r"^[\x21-\x7e]{16,128}$")
_RESERVED = {"global", "system", "trunk", "transport-udp"}


class AgentError(ValueError):
    """An agent operation was refused; the message is one line naming what was wrong."""


class AgentNotFound(AgentError, LookupError):
    """No agent with that name."""


class AgentNotApplied(AgentError):
    """The change is saved in the database but Asterisk did not take it now (re-applied on the next AMI connect)."""


@dataclass(frozen=True)
class Agent:
    """One agent's record: login/endpoint name, display name, skills {queue: penalty} and the wished state."""

    name: str
    display_name: str
    sip_secret: str = field(repr=False)  # the phone's digest secret; never shown after creation or rotation
    skills: dict[str, int]
    logged_in: bool
    paused: bool
    pause_reason: str | None

    @property
    def interface(self) -> str:
        """The app_queue member interface (the agent's PJSIP endpoint)."""
        return f"PJSIP/{self.name}"

    def to_dict(self) -> dict[str, Any]:
        """JSON-safe, without the SIP secret."""
        return {"name": self.name, "display_name": self.display_name, "skills": dict(self.skills),
                "logged_in": self.logged_in, "paused": self.paused, "pause_reason": self.pause_reason}


def new_sip_secret() -> str:
    """A fresh SIP digest secret (URL-safe: never needs quoting in pjsip.conf)."""
    return secrets.token_urlsafe(24)


def check_sip_secret(secret: Any) -> str:
    """The SIP secret if it can be written to pjsip.conf (16-128 printable, no spaces or ';')."""
    if not isinstance(secret, str) or not _SECRET.match(secret) or ";" in secret:
        raise AgentError("SIP secret must be 16-128 printable characters without spaces or ';'")
    return secret


def check_agent_name(name: Any) -> str:
    """The agent name if valid (it becomes a PJSIP section and a queue member name)."""
    if not isinstance(name, str) or not _NAME.match(name) or name in _RESERVED:
        raise AgentError(f"agent name {name!r} must be 2-32 of a-z, 0-9, _ starting with a letter (not reserved)")
    return name


def check_pause_reason(reason: Any) -> str:
    """The pause reason if it is one of PAUSE_REASONS."""
    if reason not in PAUSE_REASONS:
        raise AgentError(f"pause reason {reason!r} is not one of {', '.join(PAUSE_REASONS)}")
    return str(reason)


def _utcnow() -> datetime:
    return datetime.now(UTC)


@finish_on_cancel
class AgentStore:
    """Agents and their skills in the database."""

    def __init__(self, engine: AsyncEngine, queues: Iterable[str]) -> None:
        self._engine = engine
        self._queues = frozenset(queues)

    def _check_skills(self, skills: dict[str, int]) -> dict[str, int]:
        if not skills:
            raise AgentError("an agent needs at least one queue (skill)")
        out = {}
        for queue, penalty in skills.items():
            if queue not in self._queues:
                raise AgentError(f"unknown queue {queue!r}; queues are {', '.join(sorted(self._queues))}")
            if isinstance(penalty, bool) or not isinstance(penalty, int) or not 0 <= penalty <= 100:
                raise AgentError(f"penalty for queue {queue!r} must be an integer 0-100, got {penalty!r}")
            out[queue] = penalty
        return out

    async def add(self, name: str, skills: dict[str, int], *, display_name: str = "", logged_in: bool = False,
                  sip_secret: str | None = None) -> Agent:
        """Create an agent with a SIP secret (generated unless given; AgentError if the name is taken or anything
        is invalid). The returned record carries the secret: the caller shows it once."""
        check_agent_name(name)
        secret = check_sip_secret(sip_secret) if sip_secret is not None else new_sip_secret()
        skills = self._check_skills(skills)
        now = _utcnow()
        try:
            async with self._engine.begin() as conn:
                await conn.execute(AgentRow.__table__.insert().values(
                    name=name, display_name=display_name or name, sip_secret=secret, logged_in=logged_in,
                    paused=False, pause_reason=None, created_at=now, updated_at=now))
                await conn.execute(AgentSkillRow.__table__.insert(), [
                    {"agent_name": name, "queue": q, "penalty": p} for q, p in skills.items()])
        except IntegrityError:
            raise AgentError(f"agent {name!r} already exists") from None
        return await self.get(name)

    async def remove(self, name: str) -> None:
        """Delete an agent and its skills (AgentNotFound if unknown)."""
        check_agent_name(name)
        async with self._engine.begin() as conn:
            await conn.execute(delete(AgentSkillRow.__table__).where(AgentSkillRow.agent_name == name))
            result = await conn.execute(delete(AgentRow.__table__).where(AgentRow.name == name))
        if result.rowcount == 0:
            raise AgentNotFound(f"no agent named {name!r}")

    async def get(self, name: str) -> Agent:
        """The agent (AgentNotFound if unknown)."""
        check_agent_name(name)
        found = await self._load(AgentRow.name == name)
        if not found:
            raise AgentNotFound(f"no agent named {name!r}")
        return found[0]

    async def list(self) -> builtins.list[Agent]:
        """Every agent, by name."""
        return await self._load(None)

    async def _load(self, where: Any) -> builtins.list[Agent]:
        agents_q = select(AgentRow.__table__).order_by(AgentRow.name)
        skills_q = select(AgentSkillRow.__table__)
        if where is not None:
            agents_q = agents_q.where(where)
        async with self._engine.connect() as conn:
            rows = (await conn.execute(agents_q)).all()
            skills_rows = (await conn.execute(skills_q)).all()
        skills: dict[str, dict[str, int]] = {}
        for s in skills_rows:
            skills.setdefault(s.agent_name, {})[s.queue] = s.penalty
        return [Agent(r.name, r.display_name, r.sip_secret, skills.get(r.name, {}), bool(r.logged_in),
                      bool(r.paused), r.pause_reason) for r in rows]

    async def set_state(self, name: str, *, logged_in: bool, paused: bool, pause_reason: str | None) -> Agent:
        """Store the wished state of an agent."""
        check_agent_name(name)
        async with self._engine.begin() as conn:
            result = await conn.execute(update(AgentRow.__table__).where(AgentRow.name == name).values(
                logged_in=logged_in, paused=paused, pause_reason=pause_reason, updated_at=_utcnow()))
        if result.rowcount == 0:
            raise AgentNotFound(f"no agent named {name!r}")
        return await self.get(name)

    async def rotate_sip_secret(self, name: str) -> Agent:
        """Replace the agent's SIP secret with a new one (the returned record carries it: show it once)."""
        check_agent_name(name)
        async with self._engine.begin() as conn:
            result = await conn.execute(update(AgentRow).where(AgentRow.name == name).values(
                sip_secret=new_sip_secret(), updated_at=_utcnow()))
        if result.rowcount == 0:
            raise AgentNotFound(f"no agent named {name!r}")
        return await self.get(name)

    async def seed(self, agents: Sequence[tuple[str, str | None, Sequence[str]]]) -> builtins.list[str]:
        """Create configured agents (name, SIP secret or None to generate, queues) that are not in the database
        yet, logged in (as the static members of earlier versions were); return the names created."""
        existing = {a.name for a in await self.list()}
        created = []
        for name, sip_secret, queues in agents:
            if name not in existing:
                await self.add(name, {q: 0 for q in queues}, logged_in=True, sip_secret=sip_secret)
                created.append(name)
        return created


# ---------------------------------------------------------------------------------------------- Asterisk side


def render_pjsip_agents(agents: Iterable[Agent], template: str, sip_host: str) -> str:
    """pjsip_agents.conf: one endpoint/auth/aor per agent from the pjsip_agent.conf.part template."""
    parts = ["; Rendered by queueing.agents from the agents table; reloaded on Asterisk's console, no restart.\n"]
    for agent in agents:
        if not _SECRET.match(agent.sip_secret) or ";" in agent.sip_secret:
            raise AgentError(f"agent {agent.name!r}: SIP secret cannot be written to pjsip.conf")
        parts.append(template.replace("{{name}}", agent.name).replace("{{password}}", agent.sip_secret)
                     .replace("{{sip_host}}", sip_host))
    return "".join(parts)


class PjsipAgentProvisioner:
    """Writes the agents' PJSIP endpoints into an included file and has Asterisk reload res_pjsip.

    The reload goes through Asterisk's control socket (console), not AMI: the AMI account holds no `command` class."""

    FILE_NAME = "pjsip_agents.conf"

    def __init__(self, etc_dir: Path, template_file: Path, sip_host: str, console: AsteriskCli | None = None) -> None:
        self._path = Path(etc_dir) / self.FILE_NAME
        self._template_file = Path(template_file)
        self._sip_host = sip_host
        self._console = console
        self._reload_pending = False  # the file changed and Asterisk has not re-read it yet

    @property
    def path(self) -> Path:
        """The rendered file (included by pjsip.conf)."""
        return self._path

    def write(self, agents: Iterable[Agent]) -> bool:
        """Render the file; True if it changed (blocking: run in an executor from async code)."""
        text = render_pjsip_agents(agents, self._template_file.read_text(encoding="utf-8"), self._sip_host)
        try:
            if self._path.read_text(encoding="utf-8") == text:
                return False
        except OSError:
            pass
        self._path.parent.mkdir(parents=True, exist_ok=True)
        tmp = self._path.with_name(self._path.name + ".tmp")
        fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)  # holds SIP secrets
        with os.fdopen(fd, "w", encoding="utf-8") as fh:
            fh.write(text)
        os.replace(tmp, self._path)
        return True

    async def apply(self, agents: Iterable[Agent], *, reload: bool) -> None:
        """Write the file and, if it changed (or an earlier reload failed) and reload is asked (Asterisk is up),
        have res_pjsip re-read it without a restart; a failed reload is retried on the next apply."""
        if await asyncio.get_running_loop().run_in_executor(None, self.write, list(agents)):
            self._reload_pending = True
        if not (reload and self._reload_pending and self._console is not None):
            return
        try:
            await self._console.command("module reload res_pjsip.so")
        except AsteriskConsoleError as exc:
            log.warning("agents: Asterisk did not reload the SIP endpoints now (%s); retried on the next change "
                        "or reconnect", exc)
            return
        self._reload_pending = False


def _already(exc: Exception, *words: str) -> bool:
    text = str(exc).lower()
    return any(w in text for w in words)


class AgentService:
    """Log agents in and out, pause and resume them: database first, then app_queue through AMI."""

    def __init__(self, store: AgentStore, ami: AmiActions | None, provisioner: PjsipAgentProvisioner | None = None,
                 ) -> None:
        self._store = store
        self._ami = ami
        self._provisioner = provisioner
        # Any AMI failure (telephony.AmiError: refused, timed out, not connected) that login/pause/resume/logout
        # turn into AgentNotApplied, so callers can say "saved, not applied yet" in one line; () leaves them as is.
        self.syncs = 0

    @property
    def store(self) -> AgentStore:
        """The agent records."""
        return self._store

    async def list(self) -> builtins.list[Agent]:
        """Every agent record."""
        return await self._store.list()

    async def add(self, name: str, skills: dict[str, int], display_name: str = "") -> Agent:
        """Create an agent with a generated SIP secret and provision its endpoint in Asterisk (logged out until it
        logs in); the returned record carries the secret, to be shown once."""
        agent = await self._store.add(name, skills, display_name=display_name)
        await self.provision()
        return agent

    async def rotate_sip_secret(self, name: str) -> Agent:
        """Give the agent a new SIP secret and have Asterisk use it (the old one stops working at once); the
        returned record carries it, to be shown once."""
        agent = await self._store.rotate_sip_secret(name)
        await self.provision()
        return agent

    async def remove(self, name: str) -> None:
        """Log the agent out, delete it and remove its SIP endpoint."""
        agent = await self._store.get(name)
        if agent.logged_in:
            await self.logout(name)
        await self._store.remove(name)
        await self.provision()

    async def provision(self) -> None:
        """Make Asterisk's PJSIP agent endpoints match the database."""
        if self._provisioner is not None:
            await self._provisioner.apply(await self._store.list(), reload=self._ami is not None)

    async def _applied(self, agent: Agent, step: Awaitable[None]) -> Agent:
        """Run the AMI step of a command whose new state is already saved; AgentNotApplied if Asterisk fails."""
        try:
            await step
        except AmiError as exc:
            first = (str(exc).splitlines() or [type(exc).__name__])[0]
            # No agent/verb prefix: the caller names the command it ran (the console shows "Pause agent1: ...").
            raise AgentNotApplied(f"saved, but Asterisk did not apply it ({first}); it is applied again when "
                                  "the hotline reconnects to Asterisk") from exc
        return agent

    async def login(self, name: str) -> Agent:
        """Add the agent to each of its queues (unpaused)."""
        agent = await self._store.set_state(name, logged_in=True, paused=False, pause_reason=None)
        return await self._applied(agent, self._apply_login(agent))

    async def pause(self, name: str, reason: str) -> Agent:
        """Pause a logged-in agent in all its queues, saying why."""
        check_pause_reason(reason)
        current = await self._store.get(name)
        if not current.logged_in:
            raise AgentError(f"agent {name!r} is logged out; log in before pausing")
        agent = await self._store.set_state(name, logged_in=True, paused=True, pause_reason=reason)
        return await self._applied(agent, self._pause(agent, True, reason))

    async def resume(self, name: str) -> Agent:
        """Unpause a logged-in agent."""
        current = await self._store.get(name)
        if not current.logged_in:
            raise AgentError(f"agent {name!r} is logged out; log in instead")
        agent = await self._store.set_state(name, logged_in=True, paused=False, pause_reason=None)
        return await self._applied(agent, self._pause(agent, False, None))

    async def logout(self, name: str) -> Agent:
        """Remove the agent from every queue."""
        agent = await self._store.set_state(name, logged_in=False, paused=False, pause_reason=None)
        return await self._applied(agent, self._leave_queues(agent))

    async def _leave_queues(self, agent: Agent) -> None:
        if self._ami is not None:
            for queue in agent.skills:
                await self._remove_member(queue, agent.interface)

    async def _apply_login(self, agent: Agent) -> None:
        if self._ami is None:
            return
        for queue, penalty in agent.skills.items():
            await self._add_member(queue, agent, penalty)
        await self._pause(agent, agent.paused, agent.pause_reason)

    async def _add_member(self, queue: str, agent: Agent, penalty: int) -> None:
        assert self._ami is not None
        try:
            await self._ami.action({"Action": "QueueAdd", "Queue": queue, "Interface": agent.interface,
                                    "Penalty": str(penalty), "Paused": "true" if agent.paused else "false",
                                    "MemberName": agent.name, "StateInterface": agent.interface,
                                    **({"Reason": agent.pause_reason} if agent.paused and agent.pause_reason else {})},
                                   as_list=False)  # panoramisk would wait for an event list after "Added ... to queue"
        except AmiActionFailed as exc:
            if not _already(exc, "already there"):
                raise
            # Already a member (the bridge restarted while Asterisk ran): the penalty may be stale.
            await self._ami.action({"Action": "QueuePenalty", "Interface": agent.interface,
                                    "Penalty": str(penalty), "Queue": queue}, as_list=False)

    async def _remove_member(self, queue: str, interface: str) -> None:
        assert self._ami is not None
        try:
            await self._ami.action({"Action": "QueueRemove", "Queue": queue, "Interface": interface}, as_list=False)
        except AmiActionFailed as exc:
            if not _already(exc, "not there", "no such queue"):
                raise

    async def _pause(self, agent: Agent, paused: bool, reason: str | None) -> None:
        if self._ami is None:
            return
        fields = {"Action": "QueuePause", "Interface": agent.interface, "Paused": "true" if paused else "false"}
        if paused and reason:
            fields["Reason"] = reason
        await self._ami.action(fields, as_list=False)

    async def sync(self) -> None:
        """Make app_queue's dynamic members match the database (after every AMI (re)connect)."""
        if self._ami is None:
            return
        self.syncs += 1
        await self.provision()
        entries = await self._ami.event_list({"Action": "QueueStatus"}, timeout=10)
        present: dict[tuple[str, str], Any] = {}
        for e in entries:
            if e.get("Event") == "QueueMember":
                interface = str(e.get("StateInterface") or e.get("Location") or "")
                present[(str(e.get("Queue")), str(e.get("Location") or interface))] = e
        agents = await self._store.list()
        wanted: set[tuple[str, str]] = set()
        for agent in agents:
            if agent.logged_in:
                for queue in agent.skills:
                    wanted.add((queue, agent.interface))
                await self._apply_login(agent)
        for (queue, interface), entry in present.items():
            if (queue, interface) not in wanted and str(entry.get("Membership")) == "dynamic":
                await self._remove_member(queue, interface)
        log.info("agents synced to Asterisk: %d logged in", sum(a.logged_in for a in agents))


def parse_skills(items: Iterable[str], default_penalty: int = 0) -> dict[str, int]:
    """'queue' or 'queue:penalty' items (CLI/API input) as {queue: penalty}; AgentError on a bad one."""
    skills: dict[str, int] = {}
    for item in items:
        queue, _, penalty = str(item).partition(":")
        try:
            skills[queue] = int(penalty) if penalty else default_penalty
        except ValueError:
            raise AgentError(f"skill {item!r}: penalty must be an integer (queue:penalty)") from None
    return skills

