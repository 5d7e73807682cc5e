"""Fault campaign: SIPp citizen calls through a real `hotline run` while one part at a time fails.

Per fault: the calls offered, answered, reaching an agent, the cases written for them, lost (an answered call with
no case afterwards) or duplicated (two cases for one call), callbacks dialed twice, and how soon the public
/healthz said ok again after the part was back. Everything is started here on loopback: its own redis-server,
its own PostgreSQL (initdb/pg_ctl) when asked, SIPp agents' phones registered to the hotline and a SIPp "carrier"
taking the callbacks to citizens. Used by benchmarks/fault_campaign.py and by a reduced test.
"""
from __future__ import annotations

import asyncio
import contextlib
import glob
import json
import os
import re
import shutil
import signal
import sqlite3
import threading
import time
from collections import Counter
from collections.abc import AsyncIterator, Awaitable, Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import redis.asyncio as aioredis
from sqlalchemy import text

from storage import create_engine_from_url
from tests.support.hotline_process import HotlineUnderTest
from tests.support.ports import PortBlock
from tests.support.rtp_pcap import wav_to_rtp_pcap
from tests.support.sipp import CitizenCall, _uas_xml, free_port, register_agent, sipp_binary
from tests.support.speech import synthesize

FAULTS = ("bridge", "asterisk", "redis", "sqlite-lock", "postgres-stop")
DESCRIPTION = "도로에 쓰레기가 많이 쌓여 있어요. 빨리 치워 주세요."


@dataclass
class Ports:
    """Every fixed port of a campaign: a block of ports (tests.support.ports; the hotline's listeners and the
    campaign's own servers sit in it) and an RTP range (by default the block's own)."""

    block: PortBlock
    rtp_ports: tuple[int, int] | None = None

    @property
    def rtp(self) -> tuple[int, int]:
        """The RTP port range Asterisk gets."""
        return self.rtp_ports or self.block.rtp_range()

    @property
    def redis(self) -> int:
        """The campaign's own redis-server."""
        return self.block.spare(0)

    @property
    def postgres(self) -> int:
        """The campaign's own PostgreSQL."""
        return self.block.spare(1)

    @property
    def carrier(self) -> int:
        """The SIPp UAS standing in for the carrier: callbacks to citizens are dialed to it."""
        return self.block.spare(2)


@dataclass
class FaultRow:
    """What one fault did to the calls made around it."""

    fault: str
    database: str
    offered: int = 0
    answered: int = 0
    reached_agent: int = 0
    cases_written: int = 0
    lost: list[str] = field(default_factory=list)  # caller numbers
    duplicated: list[str] = field(default_factory=list)
    callbacks_requested: int = 0
    callbacks_dialed: int = 0
    callbacks_twice: list[str] = field(default_factory=list)
    healthy_after_s: float | None = None  # from the part being back to /healthz ok; None: never within the bound
    unhealthy_s: float = 0.0  # how long /healthz said not ok (or did not answer) during the round
    statuses: dict[str, int] = field(default_factory=dict)
    unfinished: list[str] = field(default_factory=list)  # calls ended, their case still says the call is on
    notes: list[str] = field(default_factory=list)

    @property
    def meets_target(self) -> bool:
        """0 lost, 0 duplicated, no callback dialed twice, healthy within 10 s of the part being back."""
        return (not self.lost and not self.duplicated and not self.callbacks_twice
                and self.healthy_after_s is not None and self.healthy_after_s <= 10.0)


def format_table(rows: list[FaultRow]) -> str:
    """The campaign's table, one row per fault, plus each row's case statuses and notes below."""
    head = ("fault", "db", "offered", "answered", "to agent", "cases", "lost", "dup", "stale", "cb req",
            "cb dialed", "cb twice", "healthy s", "down s")
    lines = []
    body = []
    for r in rows:
        healthy = f"{r.healthy_after_s:.1f}" if r.healthy_after_s is not None else "never"
        body.append((r.fault, r.database, str(r.offered), str(r.answered), str(r.reached_agent), str(r.cases_written),
                     str(len(r.lost)), str(len(r.duplicated)), str(len(r.unfinished)), str(r.callbacks_requested),
                     str(r.callbacks_dialed), str(len(r.callbacks_twice)), healthy, f"{r.unhealthy_s:.1f}"))
    widths = [max(len(h), *(len(b[i]) for b in body)) if body else len(h) for i, h in enumerate(head)]
    lines.append(" | ".join(h.ljust(w) for h, w in zip(head, widths, strict=True)))
    lines.append("-+-".join("-" * w for w in widths))
    for b in body:
        lines.append(" | ".join(c.ljust(w) for c, w in zip(b, widths, strict=True)))
    for r in rows:
        statuses = ", ".join(f"{k} {v}" for k, v in sorted(r.statuses.items()))
        lines.append(f"{r.fault}: case statuses: {statuses or 'none'}")
        if r.lost:
            lines.append(f"  lost (answered, no case): {', '.join(r.lost)}")
        if r.duplicated:
            lines.append(f"  duplicated: {', '.join(r.duplicated)}")
        if r.unfinished:
            lines.append(f"  stale (call over, case still new/queued/in progress): {', '.join(r.unfinished)}")
        if r.callbacks_twice:
            lines.append(f"  callbacks dialed twice: {', '.join(r.callbacks_twice)}")
        lines.extend(f"  {note}" for note in r.notes)
    return "\n".join(lines)


# ---------------------------------------------------------------------------------------------- own servers


class OwnRedis:
    """A redis-server child on its own port, without persistence (a kill -9 and restart comes back empty)."""

    def __init__(self, port: int, work_dir: Path) -> None:
        self.port = port
        self.work_dir = work_dir
        self.proc: asyncio.subprocess.Process | None = None

    @property
    def url(self) -> str:
        """redis:// URL of this server."""
        return f"redis://127.0.0.1:{self.port}/0"

    async def start(self) -> None:
        """Start it and wait until it answers PING."""
        if shutil.which("redis-server") is None:
            raise RuntimeError("redis-server is not installed")
        self.work_dir.mkdir(parents=True, exist_ok=True)
        self.proc = await asyncio.create_subprocess_exec(
            "redis-server", "--port", str(self.port), "--bind", "127.0.0.1", "--save", "", "--appendonly", "no",
            "--dir", str(self.work_dir), stdout=asyncio.subprocess.DEVNULL, stderr=asyncio.subprocess.DEVNULL)
        client = aioredis.Redis(port=self.port, socket_timeout=1, socket_connect_timeout=1)
        try:
            for _ in range(100):
                with contextlib.suppress(OSError, aioredis.RedisError):
                    if await client.ping():
                        return
                await asyncio.sleep(0.1)
        finally:
            await client.aclose()
        raise RuntimeError(f"redis-server on port {self.port} did not answer")

    async def kill(self) -> None:
        """kill -9 and reap."""
        if self.proc is not None and self.proc.returncode is None:
            self.proc.send_signal(signal.SIGKILL)
            await self.proc.wait()


class OwnPostgres:
    """A PostgreSQL cluster made with initdb in work_dir, run with pg_ctl on its own port (as user postgres if root)."""

    def __init__(self, port: int, work_dir: Path) -> None:
        self.port = port
        self.data = work_dir / "pgdata"
        self.work_dir = work_dir

    @staticmethod
    def bin_dir() -> Path | None:
        """The newest /usr/lib/postgresql/*/bin with initdb and pg_ctl, or None."""
        found = sorted(glob.glob("/usr/lib/postgresql/*/bin/initdb"), key=lambda p: int(Path(p).parts[-3]))
        return Path(found[-1]).parent if found else None

    @property
    def url(self) -> str:
        """SQLAlchemy URL of the hotline's database."""
        return f"postgresql+asyncpg://postgres@127.0.0.1:{self.port}/hotline"

    async def _run(self, *argv: str, timeout: float = 60.0) -> str:
        bin_dir = self.bin_dir()
        assert bin_dir is not None
        command = [str(bin_dir / argv[0]), *argv[1:]]
        if os.geteuid() == 0:  # initdb and postgres refuse to run as root
            command = ["runuser", "-u", "postgres", "--", *command]
        proc = await asyncio.create_subprocess_exec(*command, stdout=asyncio.subprocess.PIPE,
                                                    stderr=asyncio.subprocess.STDOUT, cwd="/")
        try:
            out, _ = await asyncio.wait_for(proc.communicate(), timeout)
        except TimeoutError:
            proc.kill()
            await proc.wait()
            raise RuntimeError(f"{argv[0]} did not finish in {timeout} s") from None
        if proc.returncode != 0:
            raise RuntimeError(f"{argv[0]} failed: {out.decode(errors='replace').strip().splitlines()[-1:]}")
        return out.decode(errors="replace")

    async def create(self) -> None:
        """initdb (trust auth, loopback only), start, create the hotline database."""
        if self.data.exists():
            shutil.rmtree(self.data)
        self.work_dir.mkdir(parents=True, exist_ok=True)
        if os.geteuid() == 0:
            shutil.chown(self.work_dir, "postgres", "postgres")
        await self._run("initdb", "-D", str(self.data), "-U", "postgres", "-A", "trust", "-E", "UTF8", "--no-sync")
        await self.start()
        await self._run("createdb", "-h", "127.0.0.1", "-p", str(self.port), "-U", "postgres", "hotline")

    async def start(self) -> None:
        """pg_ctl start and wait until it accepts connections."""
        options = f"-p {self.port} -c listen_addresses=127.0.0.1 -k {self.data} -c fsync=off -c max_connections=200"
        await self._run("pg_ctl", "-D", str(self.data), "-l", str(self.data / "server.log"), "-o", options,
                        "-w", "-t", "60", "start")

    async def stop(self, mode: str = "immediate") -> None:
        """pg_ctl stop (immediate: the server goes away at once, as in a crash)."""
        await self._run("pg_ctl", "-D", str(self.data), "-m", mode, "-w", "-t", "60", "stop")

    async def destroy(self) -> None:
        """Stop (if running) and remove the cluster."""
        with contextlib.suppress(RuntimeError):
            await self.stop("fast")
        shutil.rmtree(self.data, ignore_errors=True)


# ---------------------------------------------------------------------------------------------- phones


class LongSipp:
    """A SIPp UAS taking call after call (-m large) until killed; its <log> lines are read as they come."""

    def __init__(self, name: str, scenario_xml: str, args: list[str], work_dir: Path) -> None:
        self.work_dir = work_dir
        work_dir.mkdir(parents=True, exist_ok=True)
        self.scenario = work_dir / f"{name}.xml"
        self.scenario.write_text(scenario_xml, encoding="utf-8")
        self.log_file = work_dir / f"{name}.marks.log"
        self.log_file.unlink(missing_ok=True)
        self.args = args
        self.proc: asyncio.subprocess.Process | None = None

    async def start(self) -> None:
        """Spawn sipp in its own process group."""
        argv = [sipp_binary(), *self.args, "-sf", str(self.scenario), "-m", "100000", "-nostdin", "-aa",
                "-trace_logs", "-log_file", str(self.log_file)]
        out = open(self.work_dir / f"{self.scenario.stem}.stdout.log", "wb")  # noqa: ASYNC230,SIM115 - a local file
        try:
            self.proc = await asyncio.create_subprocess_exec(
                *argv, cwd=self.work_dir, stdin=asyncio.subprocess.DEVNULL, stdout=out, stderr=out,
                start_new_session=True)
        finally:
            out.close()
        await asyncio.sleep(0.3)
        if self.proc.returncode is not None:
            raise RuntimeError(f"sipp {self.scenario.stem} ended at once (see {self.work_dir})")

    def marks(self) -> list[str]:
        """The <log> lines so far."""
        try:
            return [line.strip() for line in self.log_file.read_text(errors="replace").splitlines() if line.strip()]
        except OSError:
            return []

    async def kill(self) -> None:
        """SIGKILL its process group and reap it."""
        if self.proc is not None and self.proc.returncode is None:
            with contextlib.suppress(ProcessLookupError):
                os.killpg(self.proc.pid, signal.SIGKILL)
            await self.proc.wait()


def _caller_logging_uas(name: str, ring_ms: int, talk_ms: int, *, header: str) -> str:
    """The agent-phone scenario of tests.support.sipp, logging who called (From) or whom it was for (To)."""
    xml = _uas_xml(name, ring_ms, talk_ms)
    if header == "From":
        marked = xml.replace('<log message="ANSWERED"/>', '<log message="ANSWERED [$caller]"/>')
    else:
        marked = xml.replace('<log message="RINGING"/>',
                             '<ereg regexp=".*" search_in="hdr" header="To:" assign_to="callee"/>'
                             '<log message="DIALED [$callee]"/>')
    if marked == xml:
        raise RuntimeError("the agent-phone scenario changed: cannot mark who called")
    return marked


def _numbers(marks: list[str], word: str) -> list[str]:
    """The SIP user parts of the marks "WORD <sip:user@...>", in order."""
    found = []
    for mark in marks:
        if mark.startswith(word + " "):
            m = re.search(r"sip:([^@;>]+)@", mark)
            if m:
                found.append(m.group(1))
    return found


# ---------------------------------------------------------------------------------------------- campaign


@dataclass
class CampaignConfig:
    """How big and how long: calls per fault, their spread, when the fault hits and how long a part stays away."""

    calls: int = 10
    agents: int = 0  # 0: one agent per five calls, at least two
    spread_s: float = 30.0  # the calls start evenly over this many seconds: before, during and after the fault
    fault_after_s: float = 10.0  # after the first call starts
    hold_s: float = 15.0  # how long Redis / the database stay away
    callback_every: int = 4  # every n-th caller presses 5 in the queue (0: none)
    talk_ms: int = 3000
    settle_s: float = 90.0  # at most this long for the outbox, cases and callbacks to finish after the calls


class Campaign:
    """One `hotline run` on one database, its own Redis, agents' phones and a carrier; faults applied in turn."""

    def __init__(self, work_dir: Path, database: str, config: CampaignConfig, ports: Ports,
                 redis_server: OwnRedis, postgres: OwnPostgres | None = None) -> None:
        self.work_dir = work_dir
        self.database = database
        self.config = config
        self.ports = ports
        self.redis = redis_server
        self.postgres = postgres
        self.db_file = work_dir / "hotline.db"
        agents = config.agents or max(2, -(-config.calls // 5))
        db_url = postgres.url if postgres is not None else f"sqlite+aiosqlite:///{self.db_file}"
        self.hotline = HotlineUnderTest(work_dir / "run", ports=ports.block, env={
            "REDIS_URL": redis_server.url,
            "DATABASE_URL": db_url,
            "HOTLINE_REDIS_KEY_PREFIX": f"campaign-{database}",
            "HOTLINE_RTP_PORT_START": str(ports.rtp[0]),
            "HOTLINE_RTP_PORT_END": str(ports.rtp[1]),
            "HOTLINE_AGENTS": json.dumps([{"name": f"agent{i + 1}"} for i in range(agents)]),
            "HOTLINE_CALLBACK_AFTER_SECONDS": "2",
            "HOTLINE_CALLBACK_RETRY_SECONDS": "10",
            "HOTLINE_CALLBACK_DIAL_TEMPLATE": f"PJSIP/trunk/sip:{{number}}@127.0.0.1:{ports.carrier}",
        })
        self.phones: dict[str, tuple[LongSipp, int]] = {}
        self.carrier: LongSipp | None = None
        self.speech: Path | None = None
        self.rounds = 0
        self.restarts = 0

    # --- set-up ------------------------------------------------------------------------------------

    async def start(self) -> None:
        """Start the hotline (fresh run dir and database), the agents' phones and the carrier."""
        self.db_file.unlink(missing_ok=True)
        await self.hotline.start(timeout=180)
        self.speech = self.work_dir / "description.pcap"
        wav = synthesize(DESCRIPTION, self.work_dir / "description.wav", voice="ko", speed=130)
        wav_to_rtp_pcap(wav, self.speech, pad_seconds=4.0)
        settings = self.hotline.settings()
        for agent in settings.agents:
            contact = free_port()
            phone = LongSipp(f"{agent.name}-phone", _caller_logging_uas(agent.name, 200, self.config.talk_ms,
                                                                         header="From"),
                             [f"127.0.0.1:{settings.sip_port}", "-i", "127.0.0.1", "-p", str(contact),
                              "-mp", str(free_port(span=4)), "-rtp_echo"], self.work_dir / "phones")
            await phone.start()
            self.phones[agent.name] = (phone, contact)
        await self.register_agents()
        self.carrier = LongSipp("carrier", _caller_logging_uas("carrier", 300, 2000, header="To"),
                                [f"127.0.0.1:{settings.sip_port}", "-i", "127.0.0.1", "-p", str(self.ports.carrier),
                                 "-mp", str(free_port(span=4)), "-rtp_echo"], self.work_dir / "carrier")
        await self.carrier.start()

    async def register_agents(self) -> list[str]:
        """(Re-)register every agent's phone, as a softphone does on its next registration; names that failed."""
        settings = self.hotline.settings()
        failed = []
        for agent in settings.agents:
            _, contact = self.phones[agent.name]
            assert agent.sip_secret is not None
            result = await register_agent(agent.name, agent.sip_secret, settings.sip_port, contact,
                                          work_dir=self.work_dir / "phones")
            if not result.registered:
                failed.append(agent.name)
        return failed

    async def stop(self) -> int | None:
        """Stop the phones, the carrier and the hotline; the hotline's exit code."""
        for phone, _ in self.phones.values():
            await phone.kill()
        if self.carrier is not None:
            await self.carrier.kill()
        return await self.hotline.stop()

    # --- faults ------------------------------------------------------------------------------------

    async def _fault(self, name: str, row: FaultRow) -> float:
        """Break the part, bring it back (or wait for the hotline to); the monotonic time it was back."""
        hold = self.config.hold_s
        if name == "bridge":
            proc = self.hotline.process
            assert proc is not None
            proc.kill()
            await proc.wait()
            self.restarts += 1
            with contextlib.suppress(OSError):
                shutil.copy(self.hotline.log_path, self.hotline.run_dir / f"hotline-before-restart{self.restarts}.log")
            back = time.monotonic()
            try:
                await self.hotline.start(timeout=120, keep_run_dir=True)
            except RuntimeError as exc:
                row.notes.append(f"bridge restart failed: {str(exc).splitlines()[0]}")
            return back
        if name == "asterisk":
            pid_file = self.hotline.run_dir / "asterisk" / "run" / "asterisk.pid"
            old = int(pid_file.read_text())
            os.kill(old, signal.SIGKILL)
            killed = time.monotonic()
            while time.monotonic() - killed < 60:
                with contextlib.suppress(OSError, ValueError):
                    pid = int(pid_file.read_text())
                    if pid != old and Path(f"/proc/{pid}").exists():
                        row.notes.append(f"Asterisk restarted by the hotline {time.monotonic() - killed:.1f} s "
                                         "after kill -9")
                        return time.monotonic()
                await asyncio.sleep(0.1)
            row.notes.append("Asterisk not restarted within 60 s")
            return time.monotonic()
        if name == "redis":
            await self.redis.kill()
            await asyncio.sleep(hold)
            await self.redis.start()
            return time.monotonic()
        if name == "sqlite-lock":
            released = threading.Event()
            locked = threading.Event()

            def hold_lock() -> None:
                conn = sqlite3.connect(str(self.db_file), isolation_level=None, timeout=30)
                try:
                    conn.execute("BEGIN EXCLUSIVE")
                    locked.set()
                    released.wait(hold)
                    conn.execute("ROLLBACK")
                finally:
                    conn.close()

            worker = asyncio.get_running_loop().run_in_executor(None, hold_lock)
            await worker
            if not locked.is_set():
                row.notes.append("the exclusive lock was never taken")
            return time.monotonic()
        if name == "postgres-stop":
            assert self.postgres is not None
            await self.postgres.stop("immediate")
            await asyncio.sleep(hold)
            await self.postgres.start()
            return time.monotonic()
        raise ValueError(f"unknown fault {name!r}; known: {', '.join(FAULTS)}")

    # --- one round ---------------------------------------------------------------------------------

    def _steps(self, index: int) -> list[tuple[Any, ...]]:
        assert self.speech is not None
        # Key 1 (complaint) during the welcome, the description after the tone, then wait in the queue.
        steps: list[tuple[Any, ...]] = [("pause", 1500), ("dtmf", "1"), ("pause", 5500), ("audio", self.speech)]
        every = self.config.callback_every
        if every and index % every == every - 1:
            # The queue is reached ~12 s after the description (the case number is read digit by digit); from then
            # key 5 asks for a callback. The wait there is not known ahead, so 5 is pressed every few seconds (an
            # agent who already took the call just hears the tone).
            for pause in (13000, 3000, 3000, 4000, 5000):
                steps += [("pause", pause), ("dtmf", "5")]
            steps.append(("pause", 15000))
        return steps

    async def run_round(self, fault: str) -> FaultRow:
        """Offer the calls, apply the fault while they run, wait for everything to settle and count."""
        self.rounds += 1
        cfg = self.config
        row = FaultRow(fault=fault, database=self.database)
        settings = self.hotline.settings()
        callers = [f"0107{self.rounds}{i:05d}" for i in range(cfg.calls)]
        calls_dir = self.work_dir / f"round{self.rounds}-{fault}"
        start = time.monotonic()

        async def one(index: int, caller: str) -> Any:
            await asyncio.sleep(index * cfg.spread_s / max(1, cfg.calls))
            call = CitizenCall(sip_port=settings.sip_port, number=settings.hotline_number, from_user=caller,
                               steps=self._steps(index), hangup="wait", wait_bye_ms=90000, answer_timeout_ms=8000,
                               work_dir=calls_dir, name=f"c{index}", timeout=180)
            return await call.run()

        tasks = [asyncio.create_task(one(i, c)) for i, c in enumerate(callers)]
        health_log: list[tuple[float, bool]] = []
        stop_watch = asyncio.Event()

        async def watch_health() -> None:
            while not stop_watch.is_set():
                health = await self.hotline.public_health()
                health_log.append((time.monotonic(), bool(health and health.get("status") == "ok")))
                await asyncio.sleep(0.2)

        watcher = asyncio.create_task(watch_health())
        try:
            await asyncio.sleep(max(0.0, start + cfg.fault_after_s - time.monotonic()))
            back = await self._fault(fault, row)
            row.healthy_after_s = await self._healthy_after(back, health_log)
            failed = await self.register_agents()
            if failed:
                row.notes.append(f"agents that could not register again: {', '.join(failed)}")
            results = await asyncio.gather(*tasks, return_exceptions=True)
        finally:
            stop_watch.set()
            await watcher
            for task in tasks:
                task.cancel()
        row.unhealthy_s = _unhealthy_seconds(health_log)
        row.offered = len(callers)
        answered = {c for c, r in zip(callers, results, strict=True) if not isinstance(r, BaseException) and r.answered}
        errors = [r for r in results if isinstance(r, BaseException)]
        if errors:
            row.notes.append(f"{len(errors)} SIPp runs failed: {type(errors[0]).__name__}: {errors[0]}")
        row.answered = len(answered)
        await self._settle(callers, row)
        await self._count(callers, answered, row)
        outbox = await self._outbox_report()
        if outbox.get("journaled"):
            row.notes.append(f"outbox (since start): {outbox.get('journaled')} journaled, "
                             f"{outbox.get('replayed')} replayed, {outbox.get('parked')} parked")
        return row

    async def _healthy_after(self, back: float, health_log: list[tuple[float, bool]]) -> float | None:
        """Seconds from back until the public /healthz says ok (at most 120 s)."""
        while time.monotonic() - back < 120:
            health = await self.hotline.public_health()
            if health is not None and health.get("status") == "ok":
                ok_at = time.monotonic()
                # The watcher may have seen it earlier than this poll; take the first ok after back.
                seen = [t for t, ok in health_log if ok and t >= back]
                return round(min([ok_at, *seen]) - back, 2)
            await asyncio.sleep(0.2)
        return None

    async def _settle(self, callers: list[str], row: FaultRow) -> None:
        """Wait until the outbox is empty, no callback of these callers is pending, and the cases stop changing."""
        deadline = time.monotonic() + self.config.settle_s
        last: Any = None
        stable_since = time.monotonic()
        outbox: dict[str, Any] = {}
        while time.monotonic() < deadline:
            outbox = await self._outbox_report()
            try:
                snapshot = await self._snapshot(callers)
            except Exception as exc:  # the database may still be coming back; try again
                snapshot = ("error", str(exc))
            if snapshot != last:
                last, stable_since = snapshot, time.monotonic()
            callbacks_open = snapshot[0] != "error" and any(s in ("pending", "dialing") for _, s, _ in snapshot[1])
            if (not outbox.get("pending") and not callbacks_open
                    and time.monotonic() - stable_since >= 6 and snapshot[0] != "error"):
                return
            await asyncio.sleep(1.0)
        row.notes.append(f"not settled within {self.config.settle_s:.0f} s (outbox {outbox})")

    async def _outbox_report(self) -> dict[str, Any]:
        """The outbox's counts from /admin/health ({} when the staff answer is not there or not JSON)."""
        try:
            health = await self.hotline.health()
        except (ValueError, OSError):  # e.g. an error page while the console's session store is coming back
            return {}
        return dict(((health or {}).get("components") or {}).get("outbox") or {})

    async def _query(self, sql: str, callers: list[str]) -> list[Any]:
        engine = create_engine_from_url(self.hotline.settings().database_url)
        try:
            async with engine.connect() as conn:
                params = {f"c{i}": c for i, c in enumerate(callers)}
                names = ", ".join(f":c{i}" for i in range(len(callers)))
                result = await asyncio.wait_for(conn.execute(text(sql.format(callers=names)), params), 10)
                return list(result.all())
        finally:
            await engine.dispose()

    async def _snapshot(self, callers: list[str]) -> tuple[Any, ...]:
        cases = await self._query("SELECT caller_number, status, source_ref FROM cases "
                                  "WHERE caller_number IN ({callers}) ORDER BY id", callers)
        callbacks = await self._query("SELECT caller_number, status, attempts FROM callbacks "
                                      "WHERE caller_number IN ({callers}) ORDER BY id", callers)
        return (tuple(tuple(c) for c in cases), tuple(tuple(c) for c in callbacks))

    async def _count(self, callers: list[str], answered: set[str], row: FaultRow) -> None:
        cases, callbacks = await self._snapshot(callers)
        per_caller = Counter(c[0] for c in cases)
        row.cases_written = len(cases)
        row.lost = sorted(c for c in answered if per_caller[c] == 0)
        row.duplicated = sorted(c for c, n in per_caller.items() if n > 1)
        row.statuses = dict(Counter(c[1] for c in cases))
        row.unfinished = sorted({c[0] for c in cases if c[1] in ("new", "queued", "in_progress")})
        unanswered_with_case = sorted(c for c in callers if c not in answered and per_caller[c])
        if unanswered_with_case:
            row.notes.append(f"cases for calls SIPp saw unanswered: {', '.join(unanswered_with_case)}")
        wanted = set(callers)
        reached: set[str] = set()
        for phone, _ in self.phones.values():
            reached.update(n for n in _numbers(phone.marks(), "ANSWERED") if n in wanted)
        row.reached_agent = len(reached)
        row.callbacks_requested = len(callbacks)
        dialed = Counter(n for n in _numbers(self.carrier.marks() if self.carrier else [], "DIALED") if n in wanted)
        row.callbacks_dialed = sum(dialed.values())
        row.callbacks_twice = sorted(n for n, k in dialed.items() if k > 1)
        not_done = [f"{c[0]} {c[1]} after {c[2]} attempt(s)" for c in callbacks if c[1] != "completed"]
        if not_done:
            row.notes.append(f"callbacks not completed: {'; '.join(not_done)}")


def _unhealthy_seconds(health_log: list[tuple[float, bool]]) -> float:
    total = 0.0
    for (t0, ok), (t1, _) in zip(health_log, health_log[1:], strict=False):
        if not ok:
            total += t1 - t0
    return round(total, 1)


# ---------------------------------------------------------------------------------------------- whole campaign


@contextlib.asynccontextmanager
async def own_redis(ports: Ports, work_dir: Path) -> AsyncIterator[OwnRedis]:
    """The campaign's redis-server, killed at the end."""
    server = OwnRedis(ports.redis, work_dir / "redis")
    await server.start()
    try:
        yield server
    finally:
        await server.kill()


async def run_campaign(work_dir: Path, faults: list[str], config: CampaignConfig, ports: Ports | None = None,
                       progress: Callable[[str], Awaitable[None] | None] | None = None) -> list[FaultRow]:
    """Run each fault in turn (SQLite faults on one hotline, PostgreSQL on another); one row per fault."""
    ports = ports or Ports()
    work_dir = work_dir.resolve()  # SIPp runs in its own folders: every path handed to it is absolute
    unknown = [f for f in faults if f not in FAULTS]
    if unknown:
        raise ValueError(f"unknown fault(s) {', '.join(unknown)}; known: {', '.join(FAULTS)}")
    rows: list[FaultRow] = []

    async def say(message: str) -> None:
        if progress is not None:
            maybe = progress(message)
            if maybe is not None:
                await maybe

    sqlite_faults = [f for f in faults if f != "postgres-stop"]
    async with own_redis(ports, work_dir) as redis_server:
        if sqlite_faults:
            campaign = Campaign(work_dir / "sqlite", "sqlite", config, ports, redis_server)
            await say("starting hotline on SQLite")
            try:
                await campaign.start()
                for fault in sqlite_faults:
                    await say(f"fault {fault}: {config.calls} calls")
                    rows.append(await campaign.run_round(fault))
                    await say(format_table(rows[-1:]))
            finally:
                code = await campaign.stop()
                if code != 0 and rows:
                    rows[-1].notes.append(f"hotline run exited {code} at the end")
        if "postgres-stop" in faults:
            if OwnPostgres.bin_dir() is None:
                row = FaultRow(fault="postgres-stop", database="postgresql")
                row.notes.append("skipped: no /usr/lib/postgresql/*/bin/initdb")
                rows.append(row)
                return rows
            postgres = OwnPostgres(ports.postgres, work_dir / "postgres")
            await say("creating PostgreSQL")
            await postgres.create()
            try:
                campaign = Campaign(work_dir / "postgresql", "postgresql", config, ports, redis_server, postgres)
                await say("starting hotline on PostgreSQL")
                try:
                    await campaign.start()
                    await say(f"fault postgres-stop: {config.calls} calls")
                    rows.append(await campaign.run_round("postgres-stop"))
                finally:
                    code = await campaign.stop()
                    if code != 0 and rows:
                        rows[-1].notes.append(f"hotline run exited {code} at the end")
            finally:
                await postgres.destroy()
    return rows
