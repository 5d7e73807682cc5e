"""The queueing domain's builder: its stores, live state, and the services that follow calls through AMI.

Nothing here connects or subscribes on construction: `QueueingServices.subscribe(ami)` registers every AMI
handler in one explicit order, `first_sync()` applies the database to Asterisk once, `start(tasks)` starts the
background loops (owned by the services, cancelled and awaited by `aclose()`)."""
from __future__ import annotations

import logging
from collections.abc import Awaitable, Callable, MutableSequence
from dataclasses import dataclass, field
from pathlib import Path

from sqlalchemy.ext.asyncio import AsyncEngine

from config import Settings
from lifecycle import TaskOwner
from telephony import AmiError
from telephony.builder import build_asterisk_config, build_asterisk_console

from .agents import AgentService, AgentStore, PjsipAgentProvisioner
from .call_tracker import CallEndHook, CallTracker, CaseProgress
from .callbacks import CallbackDispatcher, CallbackStore
from .live_state import LiveCallState, connect_redis
from .metrics import QueueMetricsStore
from .ports import AmiEvents, AmiPort
from .queue_console import QueueConsole
from .queue_live import QueueEventTracker, QueueLiveState
from .records import CallRecordStore
from .wait_announcements import QueueWaitAnnouncer, SpokenPrompts, WaitEstimator

log = logging.getLogger(__name__)

Synthesize = Callable[[str, str, Path], object]


@dataclass(frozen=True)
class QueueingStores:
    """The queueing domain's tables: agents, interval metrics, callback requests, call detail records."""

    agents: AgentStore
    metrics: QueueMetricsStore
    callbacks: CallbackStore
    records: CallRecordStore


@dataclass(frozen=True)
class QueuePrompts:
    """What the bridge whispers to waiting callers: the language's voice and sentence texts, and the synthesizer."""

    directory: Path
    voice: str
    texts: dict[str, str]
    synthesize: Synthesize


def build_queueing_stores(engine: AsyncEngine, settings: Settings) -> QueueingStores:
    """The queueing stores on the shared engine (no I/O)."""
    queues = [q.name for q in settings.queues]
    return QueueingStores(
        agents=AgentStore(engine, queues),
        metrics=QueueMetricsStore(engine, interval_minutes=settings.metrics_interval_minutes,
                                  service_level_seconds=settings.service_level_seconds),
        callbacks=CallbackStore(engine),
        records=CallRecordStore(engine))


def build_live_calls(settings: Settings) -> LiveCallState:
    """The live state of calls in Redis (a client of its own; nothing connects until first use)."""
    return LiveCallState(connect_redis(settings.redis_url, timeout=settings.connect_timeout),
                         prefix=settings.redis_key_prefix)


def build_queue_live(settings: Settings) -> QueueLiveState:
    """The live state of queues and agents in Redis (a client of its own)."""
    return QueueLiveState(connect_redis(settings.redis_url, timeout=settings.connect_timeout),
                          prefix=settings.redis_key_prefix)


def build_agent_provisioner(settings: Settings) -> PjsipAgentProvisioner:
    """Renders agents' PJSIP endpoints into the Asterisk configuration the hotline runs."""
    config = build_asterisk_config(settings)
    return PjsipAgentProvisioner(config.etc_dir, config.templates_dir / "pjsip_agent.conf.part", settings.sip_host,
                                 build_asterisk_console(settings))


def build_agent_service(stores: QueueingStores, ami: AmiPort | None, settings: Settings) -> AgentService:
    """Agent commands: the database first, then Asterisk (None: Asterisk away, applied at the next connect)."""
    return AgentService(stores.agents, ami, build_agent_provisioner(settings))


@dataclass
class QueueingServices:
    """Everything queueing offers a running hotline."""

    stores: QueueingStores
    live_calls: LiveCallState
    queue_live: QueueLiveState
    agents: AgentService
    queue_tracker: QueueEventTracker
    call_tracker: CallTracker
    callbacks: CallbackDispatcher
    announcer: QueueWaitAnnouncer
    console: QueueConsole
    tasks: TaskOwner = field(default_factory=lambda: TaskOwner("queueing"))

    def subscribe(self, ami: AmiEvents) -> None:
        """Register every AMI handler, in this order on each (re)connect: agents' membership is re-applied from
        the database first, then the queue state is rebuilt from Asterisk (it then sees the members), then the
        calls in progress and the callbacks are reconciled."""
        ami.on_connected(self.agents.sync)
        self.queue_tracker.subscribe(ami)
        self.call_tracker.subscribe(ami)
        self.callbacks.subscribe(ami)

    async def first_sync(self) -> None:
        """Apply the database to Asterisk and rebuild the live state once at start (a failure is retried by the
        on-connect handlers after the AMI supervisor reconnects)."""
        try:
            await self.agents.sync()
            await self.queue_tracker.rebuild()
        except AmiError as exc:
            log.warning("queueing: first sync with Asterisk failed: %s", exc)
        try:
            await self.callbacks.recover()
        except AmiError as exc:
            log.warning("queueing: callback recovery failed (retried on reconnect): %s", exc)

    def start(self) -> None:
        """Start the background loops: Redis state watch, callback dialing, wait announcements, metrics flush."""
        self.tasks.spawn(self.queue_tracker.watch_redis(), "queue-state-redis-watch")
        self.tasks.spawn(self.callbacks.run(), "callback-dispatcher")
        self.tasks.spawn(self.announcer.run(), "queue-wait-announcer")
        self.tasks.spawn(self.stores.metrics.run_flusher(), "queue-metrics-flusher")

    async def aclose(self) -> None:
        """Stop the loops and what the services own, and keep the last second of metrics."""
        await self.tasks.aclose()
        await self.callbacks.aclose()
        await self.announcer.aclose()
        await self.queue_tracker.aclose()
        try:
            await self.stores.metrics.flush()
        except Exception as exc:  # the database is going away too; say what was not kept
            log.warning("queue metrics: final flush failed: %s", exc)
        await self.queue_live.aclose()


def build_queueing(settings: Settings, stores: QueueingStores, live_calls: LiveCallState, ami: AmiPort,
                   cases: CaseProgress, call_end_hooks: MutableSequence[CallEndHook],
                   prompts: QueuePrompts) -> QueueingServices:
    """The queueing services of a running hotline (no I/O, no subscription: the root calls subscribe(ami)).

    call_end_hooks is read at each call's end; ValueError (one line) if the announcement texts lack a sentence."""
    queues = [q.name for q in settings.queues]
    wrapup = {q.name: float(q.wrapup_seconds) for q in settings.queues}
    queue_live = build_queue_live(settings)
    agents = build_agent_service(stores, ami, settings)

    async def known_agents() -> list[str]:
        return [a.name for a in await stores.agents.list()]

    queue_tracker = QueueEventTracker(ami, queue_live, stores.metrics, live_calls, queues=queues,
                                      wrapup_seconds=wrapup, known_agents=known_agents)
    call_tracker = CallTracker(ami, live_calls, stores.records, cases, call_end_hooks=call_end_hooks)
    callbacks = CallbackDispatcher(stores.callbacks, ami, queue_live, live_calls,
                                   console=build_asterisk_console(settings),
                                   dial_template=settings.callback_dial_template,
                                   max_attempts=settings.callback_max_attempts,
                                   retry_seconds=settings.callback_retry_seconds)
    announcer = QueueWaitAnnouncer(
        WaitEstimator(stores.metrics, queue_live.agents, wrapup_seconds=wrapup),
        queue_live, ami, SpokenPrompts(prompts.directory, prompts.voice, prompts.synthesize),
        frequency={q.name: q.announce_frequency_seconds for q in settings.queues},
        callback_after=settings.callback_after_seconds, texts=prompts.texts)
    return QueueingServices(stores=stores, live_calls=live_calls, queue_live=queue_live, agents=agents,
                            queue_tracker=queue_tracker, call_tracker=call_tracker, callbacks=callbacks,
                            announcer=announcer, console=QueueConsole(agents, queue_live, stores.metrics, queues))


def too_early_prompt(prompts: QueuePrompts) -> Callable[[], Awaitable[str]] | None:
    """"Not yet; you keep your place", synthesized on first use (None when the language has no such text)."""
    text = prompts.texts.get("queue_callback_too_early")
    if not text:
        return None
    spoken = SpokenPrompts(prompts.directory, prompts.voice, prompts.synthesize)
    return lambda: spoken.path(text)
