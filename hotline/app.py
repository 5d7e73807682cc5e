"""The composition root: builds every service from Settings and wires them into one aiohttp application.

Services that do no I/O when built (stores, clients) are made up front; everything that connects,
listens or spawns is started and stopped by a ``cleanup_ctx`` entry, each under a typed ``web.AppKey``.
"""
from __future__ import annotations

import asyncio
import hashlib
import logging
from collections.abc import AsyncIterator
from typing import Any

from aiohttp import web
from sqlalchemy import text
from sqlalchemy.engine import make_url
from sqlalchemy.ext.asyncio import AsyncEngine

from agent_console import AccountStore, create_console_app
from asr import AsrError, SpeechRecognizer
from cases import CaseStatus, CaseStore, CaseStoreError, create_engine_from_url, migrate_database
from config import Settings
from ivr import HotlineCallFlow, IvrOptions, PromptError, PromptLibrary, TranscriptionService, load_prompt_sets
from queueing import CallRecordStore, CallTracker, LiveCallState, connect_redis
from telephony import (AgiError, AmiClient, AmiError, AsteriskConfig, AsteriskProcess, AsteriskStartError,
                       FastAgiServer, render_asterisk_config)

log = logging.getLogger("hotline")


class HotlineStartError(Exception):
    """The hotline cannot start; the message is one line naming the part that failed."""


SETTINGS = web.AppKey("settings", Settings)
DB_ENGINE = web.AppKey("db_engine", AsyncEngine)
CASES = web.AppKey("cases", CaseStore)
CALL_RECORDS = web.AppKey("call_records", CallRecordStore)
ACCOUNTS = web.AppKey("accounts", AccountStore)
LIVE_STATE = web.AppKey("live_state", LiveCallState)
ASTERISK = web.AppKey("asterisk", AsteriskProcess)
AMI = web.AppKey("ami", AmiClient)
ASR = web.AppKey("asr", SpeechRecognizer)
FASTAGI = web.AppKey("fastagi", FastAgiServer)
CALL_FLOW = web.AppKey("call_flow", HotlineCallFlow)
TRANSCRIPTION = web.AppKey("transcription", TranscriptionService)


def safe_url(url: str) -> str:
    """The URL with any password hidden, for messages."""
    try:
        return make_url(url).render_as_string(hide_password=True)
    except Exception:  # an unparsable URL is reported as it was given
        return url


class CaseCallObserver:
    """Moves a case along as its call goes through the queue (queueing → cases, wired here)."""

    def __init__(self, cases: CaseStore) -> None:
        self._cases = cases

    async def call_queued(self, case_number: str, queue: str) -> None:
        """The caller joined a queue."""
        await self._cases.update(case_number, status=CaseStatus.QUEUED)

    async def call_answered(self, case_number: str, agent: str) -> None:
        """An agent answered: the case is theirs."""
        await self._cases.update(case_number, status=CaseStatus.IN_PROGRESS, agent=agent)

    async def call_ended(self, case_number: str, outcome: str) -> None:
        """The call ended: answered calls leave an open case; abandoned ones say where."""
        case = await self._cases.get(case_number)
        if outcome == "abandoned_in_queue":
            await self._cases.update(case_number, status=CaseStatus.ABANDONED_IN_QUEUE)
        elif outcome == "abandoned_in_ivr":
            if case.status == CaseStatus.NEW:
                await self._cases.update(case_number, status=CaseStatus.ABANDONED_IN_IVR)
        elif case.status in (CaseStatus.IN_PROGRESS, CaseStatus.QUEUED, CaseStatus.NEW):
            await self._cases.update(case_number, status=CaseStatus.OPEN)


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
        if FASTAGI in app:
            components["fastagi"] = app[FASTAGI].health_report()
        if ASTERISK in app:
            components["asterisk"] = {"ok": app[ASTERISK].running, "pid": app[ASTERISK].pid}
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
    # The console's cookie encryption wants exactly 32 bytes; derive them from the configured secret.
    return hashlib.sha256(secret.encode()).digest()


def build_app(settings: Settings) -> web.Application:
    """Build the whole hotline as one aiohttp application (nothing connects until it starts)."""
    engine = create_engine_from_url(settings.database_url)
    cases = CaseStore(engine)
    records = CallRecordStore(engine)
    accounts = AccountStore(engine)
    live = LiveCallState(connect_redis(settings.redis_url, timeout=settings.connect_timeout),
                         prefix=settings.redis_key_prefix)
    holder: dict[str, HealthMonitor] = {}

    async def health() -> dict[str, Any]:
        return await holder["monitor"].report()

    assert settings.session_secret is not None, "resolve_secrets() must run before build_app()"
    app = create_console_app(cases=cases, live_calls=live, call_records=records, accounts=accounts,
                             health=health, session_key=_session_key(settings.session_secret),
                             bad_input_errors=(CaseStoreError,))
    holder["monitor"] = HealthMonitor(app)
    app[SETTINGS] = settings
    app[DB_ENGINE] = engine
    app[CASES] = cases
    app[CALL_RECORDS] = records
    app[ACCOUNTS] = accounts
    app[LIVE_STATE] = live
    app.cleanup_ctx.extend([database_ctx, redis_ctx, asr_ctx, asterisk_ctx, ami_ctx, fastagi_ctx])
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


async def redis_ctx(app: web.Application) -> AsyncIterator[None]:
    """Check Redis answers; close the client at the end."""
    settings = app[SETTINGS]
    live = app[LIVE_STATE]
    try:
        await asyncio.wait_for(live.ping(), settings.connect_timeout)
    except (TimeoutError, Exception) as exc:
        raise HotlineStartError(f"Redis at {safe_url(settings.redis_url)}: {_first_line(exc)}") from None
    try:
        yield
    finally:
        await live.aclose()


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
    """Render the Asterisk configuration and run Asterisk as a child process (unless --no-asterisk)."""
    settings = app[SETTINGS]
    settings.recordings_dir.mkdir(parents=True, exist_ok=True)
    config = AsteriskConfig.from_settings(settings)
    if not settings.manage_asterisk:
        # An external Asterisk (compose, production) reads the configuration rendered here.
        render_asterisk_config(config)
        yield
        return
    process = AsteriskProcess(config, binary=settings.asterisk_binary)
    try:
        await process.start()
    except AsteriskStartError as exc:
        await process.stop()
        raise HotlineStartError(str(exc)) from None
    app[ASTERISK] = process
    try:
        yield
    finally:
        await process.stop()


async def ami_ctx(app: web.Application) -> AsyncIterator[None]:
    """Connect AMI (supervised: pings, reconnect with backoff) and follow calls through the queues."""
    settings = app[SETTINGS]
    assert settings.ami_secret is not None
    ami = AmiClient(settings.ami_host, settings.ami_port, settings.ami_username, settings.ami_secret,
                    action_timeout=settings.ami_action_timeout, ping_interval=settings.ami_ping_interval,
                    connect_timeout=settings.connect_timeout)
    CallTracker(ami, app[LIVE_STATE], app[CALL_RECORDS], CaseCallObserver(app[CASES]))
    try:
        await ami.start()
    except AmiError as exc:
        await ami.close()
        raise HotlineStartError(str(exc)) from None
    app[AMI] = ami
    try:
        yield
    finally:
        await ami.close()


async def fastagi_ctx(app: web.Application) -> AsyncIterator[None]:
    """Prepare prompts, start the FastAGI server running the call flow, and the transcription retries."""
    settings = app[SETTINGS]
    sets = load_prompt_sets(settings.prompts_file)
    if settings.language not in sets:
        raise HotlineStartError(f"language {settings.language!r} has no prompts in {settings.prompts_file}")
    prompts = PromptLibrary(sets[settings.language], settings.prompts_dir, settings.prompts_override_dir)
    try:
        await prompts.prepare_all()
    except PromptError as exc:
        raise HotlineStartError(str(exc)) from None
    settings.recordings_dir.mkdir(parents=True, exist_ok=True)
    transcription = TranscriptionService(app[ASR], app[CASES], app[LIVE_STATE],
                                         grammar=settings.complaint_grammar or None)
    flow = HotlineCallFlow(
        options=IvrOptions(
            recordings_dir=settings.recordings_dir,
            menu_timeout_ms=int(settings.menu_timeout_seconds * 1000),
            menu_retries=settings.menu_retries,
            record_max_ms=settings.record_max_seconds * 1000,
            record_silence_s=settings.record_silence_seconds,
        ),
        prompts=prompts, cases=app[CASES], records=app[CALL_RECORDS], live=app[LIVE_STATE],
        transcription=transcription,
    )
    server = FastAgiServer(settings.agi_host, settings.agi_port, command_timeout=settings.agi_command_timeout)
    server.add_route("ivr", flow.handle)
    try:
        await server.start()
    except AgiError as exc:
        raise HotlineStartError(str(exc)) from None
    app[FASTAGI] = server
    app[CALL_FLOW] = flow
    app[TRANSCRIPTION] = transcription
    retries = asyncio.create_task(transcription.run_retries(), name="transcription-retries")
    try:
        yield
    finally:
        retries.cancel()
        await asyncio.gather(retries, return_exceptions=True)
        await server.close()
        await flow.aclose()


def _first_line(exc: BaseException) -> str:
    text_ = str(exc).strip().splitlines()
    if not text_:
        return "timed out" if isinstance(exc, TimeoutError) else type(exc).__name__
    line = text_[0]
    # SQLAlchemy wraps driver errors as "(driver.Error) message"; keep the message.
    if line.startswith("(") and ") " in line:
        line = line.split(") ", 1)[1]
    return line

