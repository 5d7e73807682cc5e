"""The composition root: builds every domain's services with its builder and starts them in one ordered list.

`build_app` does no I/O: it calls each domain's builder, makes the explicit subscriptions (AMI handlers) and
returns the aiohttp application. Everything that connects, listens or spawns is a ``cleanup_ctx`` entry of
`START_ORDER`, started in that order and stopped in reverse; each owns its background tasks (a TaskOwner).
"""
from __future__ import annotations

import asyncio
import hashlib
import logging
import sys
from collections.abc import AsyncIterator
from typing import Any

from aiohttp import web
from redis.asyncio import Redis
from sqlalchemy import text
from sqlalchemy.engine import make_url
from sqlalchemy.ext.asyncio import AsyncEngine

from agent_console import create_console_app
from agent_console.flow_views import FLOW_ADMIN
from agent_console.queue_views import METRICS_TOKEN, QUEUE_CONSOLE
from agent_console.sessions import RedisSessionBackend
from agent_console.throttle import RedisFailureCounters, ThrottleLimits
from agent_console.transcript_views import TRANSCRIPT_JOBS
from asr import ASR_TOKEN_ENV, AsrError, SpeechRecognizer, VoskWebsocketServer
from cases import CaseStore, CaseStoreError, DurableCases
from config import Settings
from identity import AccountStore
from ivr import FlowRejected, HotlineCallFlow, PromptError, load_prompt_sets
from ivr.builder import build_call_flow, build_flows
from ivr.flow_service import FlowServices
from ivr.live_transcript import REDIS_URL_ENV as LIVE_TRANSCRIPT_REDIS_ENV
from ivr.prompts import synthesize_speech
from lifecycle import TaskOwner
from queueing import (
    CallEndHook,
    CallRecordStore,
    DurableCallRecords,
    LiveCallState,
    connect_redis,
)
from queueing.builder import (
    QueueingServices,
    QueueingStores,
    QueuePrompts,
    build_agent_provisioner,
    build_live_calls,
    build_queue_routes,
    build_queueing,
    build_queueing_stores,
)
from storage import Outbox, create_engine_from_url, migrate_database
from telephony import (
    AGI_SECRET_ENV,
    AgiError,
    AmiClient,
    AmiError,
    AsteriskStartError,
    AsteriskSupervisor,
    FastAgiServer,
    render_asterisk_config,
)
from telephony.builder import build_ami, build_asterisk_config, build_asterisk_supervisor, build_fastagi
from transcripts import DescriptionTranscripts, TranscriptionJobStore, TranscriptionWorker

from .transcription_wiring import CallTranscriptIntake, CaseTranscriptObserver, queue_pending_descriptions

log = logging.getLogger("hotline")


class HotlineStartError(Exception):
    """The hotline cannot start; the message is one line naming the part that failed."""


SETTINGS = web.AppKey("settings", Settings)
DB_ENGINE = web.AppKey("db_engine", AsyncEngine)
CASES = web.AppKey("cases", CaseStore)
CALL_RECORDS = web.AppKey("call_records", CallRecordStore)
ACCOUNTS = web.AppKey("accounts", AccountStore)
LIVE_STATE = web.AppKey("live_state", LiveCallState)
ASTERISK = web.AppKey("asterisk", AsteriskSupervisor)
AMI = web.AppKey("ami", AmiClient)
ASR = web.AppKey("asr", SpeechRecognizer)
FASTAGI = web.AppKey("fastagi", FastAgiServer)
CALL_FLOW = web.AppKey("call_flow", HotlineCallFlow)
DESCRIPTIONS = web.AppKey("descriptions", DescriptionTranscripts)
ASR_WS = web.AppKey("asr_ws", VoskWebsocketServer)
TRANSCRIPT_JOB_STORE = web.AppKey("transcript_job_store", TranscriptionJobStore)
TRANSCRIPTION_WORKER = web.AppKey("transcription_worker", TranscriptionWorker)
CALL_END_HOOKS = web.AppKey("call_end_hooks", list[CallEndHook])
FLOWS = web.AppKey("flows", FlowServices)
OUTBOX = web.AppKey("outbox", Outbox)
DURABLE_CASES = web.AppKey("durable_cases", DurableCases)
DURABLE_RECORDS = web.AppKey("durable_records", DurableCallRecords)
QUEUEING_STORES = web.AppKey("queueing_stores", QueueingStores)
QUEUEING = web.AppKey("queueing", QueueingServices)
CONSOLE_REDIS = web.AppKey("console_redis", Redis)


def safe_url(url: str) -> str:
    """The URL with any password hidden, for messages."""
    try:
        return make_url(url).render_as_string(hide_password=True)
    except Exception:  # an unparsable URL is reported as it was given
        return url


class HealthMonitor:
    """Answers /healthz from every component's own report plus live pings with timeouts."""

    def __init__(self, app: web.Application) -> None:
        self._app = app

    async def report(self) -> dict[str, Any]:
        """{'ok': all components ok, 'components': {...}}."""
        app = self._app
        components: dict[str, Any] = {}
        components["database"] = await self._probe(self._db_ping)
        components["redis"] = await self._probe(app[LIVE_STATE].ping)
        components["redis"].update(app[LIVE_STATE].health_report())
        if AMI in app:
            components["ami"] = app[AMI].health_report()
        if QUEUEING in app:
            # AMI events whose handlers failed (retried, parked, resynced) and calls lost by a system failure.
            components["ami_events"] = app[QUEUEING].events.health_report()
            components["calls"] = {"ok": True, "interrupted": app[QUEUEING].call_tracker.interrupted}
        if FASTAGI in app:
            components["fastagi"] = app[FASTAGI].health_report()
        if OUTBOX in app:
            components["outbox"] = app[OUTBOX].health_report()
        if ASTERISK in app:
            components["asterisk"] = app[ASTERISK].health_report()
        components["asr"] = {"ok": ASR in app, "model": str(app[ASR].model_path) if ASR in app else None}
        return {"ok": all(c.get("ok") for c in components.values()), "components": components}

    async def _db_ping(self) -> None:
        async with self._app[DB_ENGINE].connect() as conn:
            await conn.execute(text("SELECT 1"))

    @staticmethod
    async def _probe(check: Any) -> dict[str, Any]:
        try:
            await asyncio.wait_for(check(), 2.0)
        except TimeoutError:
            return {"ok": False, "error": "no answer within 2 s"}
        except Exception as exc:  # any failure is a health fact, not an error of /healthz itself
            return {"ok": False, "error": str(exc).splitlines()[0] if str(exc) else type(exc).__name__}
        return {"ok": True}


def _session_key(secret: str) -> bytes:
    # The console keys its session ids with exactly 32 bytes; derive them from the configured secret.
    return hashlib.sha256(secret.encode()).digest()


def queue_prompts(settings: Settings) -> QueuePrompts:
    """The sentences the bridge whispers to waiting callers, in the hotline's language."""
    prompt_set = load_prompt_sets(settings.prompts_file, settings.hotline_number).get(settings.language)
    return QueuePrompts(settings.prompts_dir, prompt_set.voice if prompt_set else "",
                        dict(prompt_set.texts) if prompt_set else {}, synthesize_speech)


def build_app(settings: Settings) -> web.Application:
    """Build the whole hotline as one aiohttp application (nothing connects until it starts).

    HotlineStartError (one line) if a part's configuration cannot be built."""
    assert settings.session_secret is not None, "resolve_secrets() must run before build_app()"
    engine = create_engine_from_url(settings.database_url, connect_timeout=settings.connect_timeout)
    cases = CaseStore(engine)
    accounts = AccountStore(engine)
    stores = build_queueing_stores(engine, settings)
    # The call side writes cases and call records through the outbox, so a database outage never drops a call.
    outbox = Outbox(settings.outbox_dir, write_timeout=settings.db_write_timeout)
    durable_cases = DurableCases(cases, outbox, read_timeout=settings.db_write_timeout)
    durable_records = DurableCallRecords(stores.records, outbox, read_timeout=settings.db_write_timeout)
    durable_cases.register()
    durable_records.register()
    live = build_live_calls(settings)
    ami = build_ami(settings)
    # Read at each call's end: the whole-call transcription intake is added before AMI starts (START_ORDER).
    call_end_hooks: list[CallEndHook] = []
    try:
        queueing = build_queueing(settings, stores, live, ami, durable_cases, durable_records, call_end_hooks,
                                  queue_prompts(settings))
    except ValueError as exc:
        raise HotlineStartError(f"queue announcements ({settings.language}): {exc}") from None
    queueing.subscribe(ami)  # the one place AMI handlers are registered, before AMI connects
    holder: dict[str, HealthMonitor] = {}

    async def health() -> dict[str, Any]:
        return await holder["monitor"].report()

    # Console sessions and failed-login counts in Redis: logout and password changes end a session for every
    # process at once, and the login throttle counts across them.
    console_redis = connect_redis(settings.redis_url, timeout=settings.connect_timeout)
    app = create_console_app(
        cases=cases, live_calls=live, call_records=stores.records, accounts=accounts, health=health,
        session_key=_session_key(settings.session_secret),
        sessions=RedisSessionBackend(console_redis, prefix=settings.redis_key_prefix),
        login_failures=RedisFailureCounters(console_redis, prefix=settings.redis_key_prefix),
        login_limits=ThrottleLimits(max_failures=settings.login_max_failures,
                                    address_max_failures=settings.login_address_max_failures,
                                    window_seconds=settings.login_failure_window_seconds),
        secure_cookies=settings.console_secure_cookies, cookie_samesite=settings.console_cookie_samesite,
        session_max_age=int(settings.console_session_hours * 3600), bad_input_errors=(CaseStoreError,))
    app[CONSOLE_REDIS] = console_redis
    holder["monitor"] = HealthMonitor(app)
    app[SETTINGS] = settings
    app[DB_ENGINE] = engine
    app[CASES] = cases
    app[OUTBOX] = outbox
    app[DURABLE_CASES] = durable_cases
    app[DURABLE_RECORDS] = durable_records
    app[CALL_RECORDS] = stores.records
    app[ACCOUNTS] = accounts
    app[LIVE_STATE] = live
    app[AMI] = ami
    app[QUEUEING_STORES] = stores
    app[QUEUEING] = queueing
    app[QUEUE_CONSOLE] = queueing.console
    app[METRICS_TOKEN] = settings.metrics_token
    app[CALL_END_HOOKS] = call_end_hooks
    app[FLOWS] = build_flows(engine, settings)
    app[FLOW_ADMIN] = app[FLOWS].admin
    app[TRANSCRIPT_JOB_STORE] = TranscriptionJobStore(engine)
    app[TRANSCRIPT_JOBS] = app[TRANSCRIPT_JOB_STORE]
    app.cleanup_ctx.extend(START_ORDER)
    return app


async def database_ctx(app: web.Application) -> AsyncIterator[None]:
    """Migrate the schema, check the connection, bootstrap console accounts; dispose the engine at the end."""
    settings = app[SETTINGS]
    loop = asyncio.get_running_loop()
    try:
        await loop.run_in_executor(None, migrate_database, settings.database_url)
        async with asyncio.timeout(settings.connect_timeout):
            async with app[DB_ENGINE].connect() as conn:
                await conn.execute(text("SELECT 1"))
    except (TimeoutError, Exception) as exc:
        await app[DB_ENGINE].dispose()
        raise HotlineStartError(f"database {safe_url(settings.database_url)}: {_first_line(exc)}") from None
    await bootstrap_accounts(app[ACCOUNTS], settings)
    try:
        yield
    finally:
        await app[DB_ENGINE].dispose()


async def bootstrap_accounts(accounts: AccountStore, settings: Settings) -> None:
    """Make sure the admin and one console account per configured agent exist (idempotent)."""
    assert settings.admin_password is not None
    await accounts.ensure_admin("admin", settings.admin_password)
    for agent in settings.agents:
        if await accounts.get(agent.name) is None:
            assert agent.password is not None
            await accounts.create(agent.name, agent.password, "agent", display_name=agent.name,
                                  sip_endpoint=agent.name)


async def outbox_ctx(app: web.Application) -> AsyncIterator[None]:
    """Replay writes an earlier run left in the outbox, reserve case numbers; stop replaying at the end (what is
    still pending stays on disk for the next start)."""
    outbox = app[OUTBOX]
    try:
        await outbox.start()
    except OSError as exc:
        raise HotlineStartError(f"outbox {app[SETTINGS].outbox_dir}: {exc.strerror or exc}") from None
    await app[DURABLE_CASES].refill()
    try:
        yield
    finally:
        await app[DURABLE_CASES].aclose()
        if not await outbox.wait_drained(app[SETTINGS].db_write_timeout):
            log.warning("outbox: %d write(s) not yet in the database; kept for the next start", outbox.pending)
        await outbox.aclose()


async def redis_ctx(app: web.Application) -> AsyncIterator[None]:
    """Check Redis answers, then run the live state's background writer (calls never wait on Redis; it also
    notices outages and rebuilds after them); send what is left and close the client at the end."""
    settings = app[SETTINGS]
    live = app[LIVE_STATE]
    try:
        await live.ping(timeout=settings.connect_timeout)
    except Exception as exc:
        raise HotlineStartError(f"Redis at {safe_url(settings.redis_url)}: {_first_line(exc)}") from None
    tasks = TaskOwner("live state")
    live.start(tasks)
    try:
        yield
    finally:
        await tasks.aclose()
        await live.aclose()


async def console_sessions_ctx(app: web.Application) -> AsyncIterator[None]:
    """The console's Redis client (sessions, login throttle) connects on first use; closed at the end."""
    try:
        yield
    finally:
        await app[CONSOLE_REDIS].aclose()


async def asr_ctx(app: web.Application) -> AsyncIterator[None]:
    """Load the Vosk model once for the process (in an executor); shut its pool down at the end."""
    settings = app[SETTINGS]
    try:
        recognizer = await SpeechRecognizer.load(settings.vosk_model_path, workers=settings.asr_workers)
    except AsrError as exc:
        raise HotlineStartError(str(exc)) from None
    app[ASR] = recognizer
    try:
        yield
    finally:
        await recognizer.aclose()


async def asterisk_ctx(app: web.Application) -> AsyncIterator[None]:
    """Render the Asterisk configuration and run Asterisk as a supervised child process, restarted when it dies
    (unless --no-asterisk); an Asterisk left running from the same run dir is stopped first."""
    settings = app[SETTINGS]
    settings.recordings_dir.mkdir(parents=True, exist_ok=True)
    if not settings.manage_asterisk:
        # An external Asterisk (compose, production) reads the configuration rendered here.
        render_asterisk_config(build_asterisk_config(settings))
        yield
        return
    # The EAGI live transcriber (ivr.live_transcript) reads the Redis URL, which may hold a password, from the
    # environment it inherits from Asterisk, not from its command line.
    # So does its ASR websocket token. The AGI secret goes the same way: the dialplan reads it with ENV() to make
    # each channel's AGI token.
    assert settings.agi_secret is not None and settings.asr_ws_token is not None, "resolve_secrets() must run first"
    supervisor = build_asterisk_supervisor(settings, {LIVE_TRANSCRIPT_REDIS_ENV: settings.redis_url,
                                                      ASR_TOKEN_ENV: settings.asr_ws_token,
                                                      AGI_SECRET_ENV: settings.agi_secret})
    try:
        await supervisor.start()
    except AsteriskStartError as exc:
        await supervisor.stop()
        raise HotlineStartError(str(exc)) from None
    # Once Asterisk is back, AMI logs in at once instead of after the rest of its backoff; its on-connect
    # handlers then re-apply agents' queue membership and rebuild the live state.
    supervisor.on_restarted(app[AMI].reconnect_now)
    app[ASTERISK] = supervisor
    try:
        yield
    finally:
        await supervisor.stop()


async def ami_ctx(app: web.Application) -> AsyncIterator[None]:
    """Connect AMI (supervised: pings, reconnect with backoff); its handlers were registered by build_app."""
    ami = app[AMI]
    try:
        await ami.start()
    except AmiError as exc:
        await ami.close()
        raise HotlineStartError(str(exc)) from None
    try:
        yield
    finally:
        await ami.close()


async def fastagi_ctx(app: web.Application) -> AsyncIterator[None]:
    """Prepare prompts and start the FastAGI server running the call flow and the queue routes."""
    settings = app[SETTINGS]
    flows = app[FLOWS]
    stores = app[QUEUEING_STORES]
    flows.models.attach_default(app[ASR])
    try:
        live_flow = await flows.live.current()  # validates the live flow and synthesizes its prompts
    except (FlowRejected, PromptError, OSError, LookupError) as exc:
        raise HotlineStartError(f"IVR flow: {str(exc).splitlines()[0]}") from None
    if settings.language not in live_flow.document.languages:
        raise HotlineStartError(f"language {settings.language!r} is not one of the IVR flow's languages "
                                f"({', '.join(live_flow.document.languages)})")
    routes = {r.number: r.flow_name for r in await flows.store.routes()}
    for problem in await flows.router.check(routes):  # every number's flow, loaded now
        log.warning("IVR numbers: %s", problem)
    settings.recordings_dir.mkdir(parents=True, exist_ok=True)
    flow = build_call_flow(settings, flows, cases=app[DURABLE_CASES], records=app[DURABLE_RECORDS],
                           live=app[LIVE_STATE], descriptions=app[DESCRIPTIONS], callbacks=stores.callbacks,
                           live_transcript_command=live_transcript_command(settings))
    try:
        queue_routes = build_queue_routes(settings, stores, app[DURABLE_CASES], app[LIVE_STATE], app[DESCRIPTIONS],
                                          queue_prompts(settings))
    except ValueError as exc:
        raise HotlineStartError(f"on_max_wait record ({settings.language}): {exc}") from None
    server = build_fastagi(settings)
    server.add_route("ivr", flow.handle)
    for script, handler in queue_routes.items():
        server.add_route(script, handler)
    try:
        await server.start()
    except AgiError as exc:
        raise HotlineStartError(str(exc)) from None
    app[FASTAGI] = server
    app[CALL_FLOW] = flow
    try:
        yield
    finally:
        await server.close()
        await flow.aclose()
        flows.models.close()


async def agents_ctx(app: web.Application) -> AsyncIterator[None]:
    """Seed configured agents into the database and render their PJSIP endpoints before Asterisk starts."""
    settings = app[SETTINGS]
    store = app[QUEUEING_STORES].agents
    created = await store.seed([(a.name, a.sip_secret, a.queues) for a in settings.agents])
    if created:
        log.info("agents created from the configuration (logged in): %s", ", ".join(created))
    await build_agent_provisioner(settings).apply(await store.list(), reload=False)
    yield


async def queueing_ctx(app: web.Application) -> AsyncIterator[None]:
    """Agents' queue membership via AMI, live queue/agent state in Redis, callbacks, announcements, metrics."""
    queueing = app[QUEUEING]
    await queueing.first_sync()
    queueing.start()
    try:
        yield
    finally:
        await queueing.aclose()


# ---------------------------------------------------------------------------------------------- speech


def live_transcript_command(settings: Settings) -> tuple[str, ...] | None:
    """The EAGI program + arguments of live transcription (ivr.live_transcript), or None if the websocket is off."""
    if not settings.asr_ws_port:
        return None
    # No --redis-url: a password in it would show in `ps` and Asterisk's log; the program reads it from the
    # environment Asterisk was started with (asterisk_ctx).
    return (sys.executable, "-m", "ivr.live_transcript", "--ws-url",
            f"ws://{settings.asr_ws_host}:{settings.asr_ws_port}/", "--redis-prefix", settings.redis_key_prefix)


async def asr_ws_ctx(app: web.Application) -> AsyncIterator[None]:
    """Serve the loaded model over the vosk-server websocket protocol on its own listener (port 0: off)."""
    settings = app[SETTINGS]
    if not settings.asr_ws_port:
        yield
        return
    server = VoskWebsocketServer(app[ASR], token=settings.asr_ws_token)
    try:
        await server.start(settings.asr_ws_host, settings.asr_ws_port)
    except OSError as exc:
        raise HotlineStartError(f"ASR websocket cannot listen on {settings.asr_ws_host}:{settings.asr_ws_port}: "
                                f"{exc.strerror or exc}") from None
    app[ASR_WS] = server
    try:
        yield
    finally:
        await server.close()


async def transcription_jobs_ctx(app: web.Application) -> AsyncIterator[None]:
    """Run the durable transcription worker: callers' descriptions, and each ended call's MixMonitor recordings."""
    settings = app[SETTINGS]
    calls_dir = settings.recordings_dir / "calls"
    calls_dir.mkdir(parents=True, exist_ok=True)
    worker = TranscriptionWorker(app[TRANSCRIPT_JOB_STORE], app[ASR],
                                 CaseTranscriptObserver(app[CASES], app[LIVE_STATE]),
                                 concurrency=settings.asr_job_workers)
    intake = CallTranscriptIntake(app[TRANSCRIPT_JOB_STORE], worker, calls_dir)
    descriptions = DescriptionTranscripts(app[TRANSCRIPT_JOB_STORE], worker, grammar=settings.complaint_grammar)
    app[TRANSCRIPTION_WORKER] = worker
    app[DESCRIPTIONS] = descriptions
    app[CALL_END_HOOKS].append(intake.call_ended)
    try:
        await queue_pending_descriptions(app[CASES], descriptions)
    except Exception:  # the cases stay 'pending' and are queued at the next start; calls can still be taken
        log.exception("queueing pending descriptions for transcription failed")
    tasks = TaskOwner("transcription")
    tasks.spawn(worker.run(), "transcription-worker")
    try:
        yield
    finally:
        app[CALL_END_HOOKS].remove(intake.call_ended)
        await tasks.aclose()


def _first_line(exc: BaseException) -> str:
    text_ = str(exc).strip().splitlines()
    if not text_:
        return "timed out" if isinstance(exc, TimeoutError) else type(exc).__name__
    line = text_[0]
    # SQLAlchemy wraps driver errors as "(driver.Error) message"; keep the message.
    if line.startswith("(") and ") " in line:
        line = line.split(") ", 1)[1]
    return line


# Started in this order, stopped in reverse. The transcription intake joins the call-end hooks before AMI
# delivers the first hang-up; agents' endpoints are rendered before Asterisk reads them; the queueing services
# sync once AMI is up; FastAGI takes calls only when everything it hands them to is running. The outbox replays an
# earlier run's writes right after the database is known to answer, and drains last.
START_ORDER = (database_ctx, outbox_ctx, redis_ctx, console_sessions_ctx, agents_ctx, asr_ctx, transcription_jobs_ctx,
               asterisk_ctx, ami_ctx, queueing_ctx, fastagi_ctx, asr_ws_ctx)
