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

from cases import DurableCases
from config import Settings
from lifecycle import TaskOwner
from telephony import AgiHandler, AmiError
from telephony.builder import build_asterisk_config, build_asterisk_console
from transcripts import DescriptionTranscripts

from .agents import AgentService, AgentStore, PjsipAgentProvisioner
from .call_tracker import CallEndHook, CallTracker, CaseProgress
from .callbacks import CallbackDispatcher, CallbackRoute, CallbackStore
from .event_guard import AmiEventGuard
from .live_state import LiveCallState, connect_redis
from .max_wait import QueueTimeoutRoute
from .max_wait_recording import MaxWaitRecordingRoute
from .metrics import QueueMetricsStore
from .ports import AmiEvents, AmiPort, CallRecordWriter
from .priority import PriorityPolicy, QueueEntryRoute
from .queue_console import QueueConsole
from .queue_live import QueueEventTracker, QueueLiveState
from .records import CallRecordStore
from .redis_guard import RedisGuard
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
    """The live state of calls in Redis (a client of its own; nothing connects until first use), each operation
    bounded by redis_op_timeout; its background writer is started by the caller (LiveCallState.run)."""
    return LiveCallState(connect_redis(settings.redis_url, timeout=settings.connect_timeout),
                         prefix=settings.redis_key_prefix, guard=RedisGuard(settings.redis_op_timeout))


def build_queue_live(settings: Settings, guard: RedisGuard | None = None) -> QueueLiveState:
    """The live state of queues and agents in Redis (a client of its own); in the hotline it shares the calls'
    guard, so both have one view of whether Redis answers."""
    return QueueLiveState(connect_redis(settings.redis_url, timeout=settings.connect_timeout),
                          prefix=settings.redis_key_prefix, guard=guard or RedisGuard(settings.redis_op_timeout))


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
    events: AmiEventGuard = field(default_factory=AmiEventGuard)
    tasks: TaskOwner = field(default_factory=lambda: TaskOwner("queueing"))

    def subscribe(self, ami: AmiEvents) -> None:
        """Register every AMI handler, in this order on each (re)connect: agents' membership is re-applied from
        the database first, then the queue state is rebuilt from Asterisk (it then sees the members), then the
        calls in progress and the callbacks are reconciled. The same rebuilds run when Redis answers again after
        an outage (what was written meanwhile was lost).

        Every handler goes through the event guard: one that fails is retried, then parked, and the same
        rebuilds run again as a resync (also when the AMI client dropped events from its full queue)."""
        guarded = self.events.attach(ami)
        guarded.on_connected(self.agents.sync)
        self.queue_tracker.subscribe(guarded)
        self.call_tracker.subscribe(guarded)
        self.callbacks.subscribe(guarded)
        self.live_calls.on_back(self.queue_tracker.rebuild)
        self.live_calls.on_back(self.call_tracker.rebuild)

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
        self.tasks.spawn(self.events.run(), "ami-event-resync")

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
                   cases: CaseProgress, records: CallRecordWriter, call_end_hooks: MutableSequence[CallEndHook],
                   prompts: QueuePrompts) -> QueueingServices:
    """The queueing services of a running hotline (no I/O, no subscription: the root calls subscribe(ami)).

    call_end_hooks is read at each call's end; ValueError (one line) if the announcement texts lack a sentence."""
    queues = [q.name for q in settings.queues]
    wrapup = {q.name: float(q.wrapup_seconds) for q in settings.queues}
    queue_live = build_queue_live(settings, live_calls.guard)
    agents = build_agent_service(stores, ami, settings)

    async def known_agents() -> list[str]:
        return [a.name for a in await stores.agents.list()]

    queue_tracker = QueueEventTracker(ami, queue_live, stores.metrics, live_calls, queues=queues,
                                      wrapup_seconds=wrapup, known_agents=known_agents)
    call_tracker = CallTracker(ami, live_calls, records, cases, call_end_hooks=call_end_hooks)
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


def build_queue_routes(settings: Settings, stores: QueueingStores, cases: DurableCases, live_calls: LiveCallState,
                       descriptions: DescriptionTranscripts, prompts: QueuePrompts) -> dict[str, AgiHandler]:
    """The dialplan's AGI hooks around Queue(), by script name: priority on entry, the maximum wait's action,
    the caller's callback key and the message left at the maximum wait.

    ValueError (one line) if the language's prompt texts lack a sentence a route speaks."""
    max_wait = {q.name: q.max_wait_seconds for q in settings.queues}
    entry = QueueEntryRoute(PriorityPolicy(urgent_categories=frozenset(settings.urgent_categories)),
                            cases.has_open_case, live_calls, max_wait=max_wait)
    timeout = QueueTimeoutRoute({q.name: q.on_max_wait for q in settings.queues}, stores.callbacks, live_calls,
                                max_wait)
    callback = CallbackRoute(stores.callbacks, live_calls, after_seconds=settings.callback_after_seconds,
                             too_early_prompt=too_early_prompt(prompts))
    maxwait_record = MaxWaitRecordingRoute(
        cases, descriptions, live_calls, recordings_dir=settings.recordings_dir, prompts_dir=prompts.directory,
        voice=prompts.voice, texts=prompts.texts, synthesize=prompts.synthesize,
        record_max_ms=settings.record_max_seconds * 1000, silence_s=settings.record_silence_seconds)
    return {"queue-entry": entry.handle, "queue-timeout": timeout.handle, "callback-request": callback.handle,
            "queue-maxwait-record": maxwait_record.handle}
