"""The `hotline` command: run the server, migrate, list cases, transcribe audio, place demo calls."""
from __future__ import annotations

import argparse
import asyncio
import json
import logging
import secrets
import signal
import socket
import sys
import uuid
from collections.abc import Coroutine
from pathlib import Path
from typing import Any

from config import Settings, SettingsError, load_settings, resolve_secrets

log = logging.getLogger("hotline")


def _settings_from_args(args: argparse.Namespace) -> Settings:
    overrides: dict[str, Any] = {
        "http_port": getattr(args, "http_port", None),
        "sip_port": getattr(args, "sip_port", None),
        "ami_port": getattr(args, "ami_port", None),
        "agi_port": getattr(args, "agi_port", None),
        "run_dir": getattr(args, "run_dir", None),
        "database_url": getattr(args, "database_url", None),
        "redis_url": getattr(args, "redis_url", None),
        "log_level": getattr(args, "log_level", None),
    }
    if getattr(args, "no_asterisk", False):
        overrides["manage_asterisk"] = False
    settings = load_settings(args.config, overrides)
    return resolve_secrets(settings)


def _add_common(p: argparse.ArgumentParser) -> None:
    p.add_argument("--config", type=Path, help="YAML settings file (default: config/hotline.yaml)")
    p.add_argument("--run-dir", type=Path, help="where the database, recordings and Asterisk run files go")
    p.add_argument("--database-url", help="SQLAlchemy URL (default: SQLite in the run dir)")
    p.add_argument("--redis-url", help="Redis URL (default: redis://127.0.0.1:6379/0)")
    p.add_argument("--log-level", choices=["DEBUG", "INFO", "WARNING", "ERROR"])


def build_parser() -> argparse.ArgumentParser:
    """The argument parser of the hotline command."""
    parser = argparse.ArgumentParser(prog="hotline", description="12345 citizen hotline server")
    sub = parser.add_subparsers(dest="command", required=True)

    run = sub.add_parser("run", help="start Asterisk, the bridge and the console")
    _add_common(run)
    run.add_argument("--no-asterisk", action="store_true", help="connect to an external Asterisk instead")
    run.add_argument("--http-port", type=int)
    run.add_argument("--sip-port", type=int)
    run.add_argument("--ami-port", type=int)
    run.add_argument("--agi-port", type=int)

    db = sub.add_parser("db", help="database schema")
    db_sub = db.add_subparsers(dest="db_command", required=True)
    up = db_sub.add_parser("upgrade", help="apply migrations")
    _add_common(up)

    cases = sub.add_parser("cases", help="citizens' cases")
    cases_sub = cases.add_subparsers(dest="cases_command", required=True)
    ls = cases_sub.add_parser("list", help="most recent first")
    _add_common(ls)
    ls.add_argument("--json", action="store_true")
    ls.add_argument("--limit", type=int, default=20)

    asr = sub.add_parser("asr", help="speech recognition")
    asr_sub = asr.add_subparsers(dest="asr_command", required=True)
    tr = asr_sub.add_parser("transcribe", help="transcribe a WAV file")
    _add_common(tr)
    tr.add_argument("file", type=Path)
    tr.add_argument("--grammar", nargs="+", metavar="WORD", help="recognize only these words")
    tr.add_argument("--json", action="store_true")
    bench = asr_sub.add_parser("bench", help="throughput, memory, keyword accuracy and latency tables")
    _add_common(bench)
    bench.add_argument("files", nargs="*", type=Path, help="WAV files to measure (default: synthesized speech)")

    agents = sub.add_parser("agents", help="call-center agents: records, log-in and pause (through AMI)")
    agents_sub = agents.add_subparsers(dest="agents_command", required=True)
    for verb, helptext in (("list", "agents with their live state"), ("add", "create an agent and its SIP endpoint"),
                           ("remove", "delete an agent"), ("login", "join the agent's queues"),
                           ("pause", "pause in all queues"), ("resume", "end a pause"), ("logout", "leave all queues"),
                           ("rotate-sip-secret", "give the agent's phone a new SIP secret (shown once)")):
        cmd = agents_sub.add_parser(verb, help=helptext)
        _add_common(cmd)
        if verb == "list":
            cmd.add_argument("--json", action="store_true")
        else:
            cmd.add_argument("name")
        if verb == "add":
            cmd.add_argument("--password", help="console password, 8+ characters (default: generated, shown once); "
                             "the phone gets a generated SIP secret of its own, shown once")
            cmd.add_argument("--queue", action="append", required=True, metavar="QUEUE[:PENALTY]",
                             help="a queue the agent serves (repeat for more)")
            cmd.add_argument("--display-name", default="")
        if verb == "pause":
            cmd.add_argument("--reason", required=True, help="break, training, case_work or meeting")

    call = sub.add_parser("call", help="place a demo call into the running hotline")
    _add_common(call)
    call.add_argument("number", help="the number to call, e.g. 12345")
    call.add_argument("--digits", default="", help="DTMF keys the caller presses at the menu")
    what = call.add_mutually_exclusive_group()
    what.add_argument("--say", help="text the caller says (synthesized with espeak-ng)")
    what.add_argument("--audio", type=Path, help="a WAV file the caller plays")
    call.add_argument("--caller", default="01012345678", help="the caller's number")
    call.add_argument("--wait", type=float, default=90.0, help="seconds to wait for the case (0: do not wait)")

    from ivr.flow_cli import add_flows_parser

    add_flows_parser(sub, _add_common)
    return parser


def run_event_loop(main: Coroutine[Any, Any, int], kind: str = "uvloop") -> int:
    """Run the hotline's main coroutine on the configured event loop (uvloop or asyncio's own)."""
    if kind == "uvloop":
        import uvloop

        with asyncio.Runner(loop_factory=uvloop.new_event_loop) as runner:
            return runner.run(main)
    return asyncio.run(main)


def main(argv: list[str] | None = None) -> int:
    """Entry point of the `hotline` console script."""
    from .private_files import use_private_umask

    # Before anything is created: the database, recordings, secrets and rendered configuration are for the
    # hotline's own user only, and Asterisk (a child) inherits the umask for the recordings it writes.
    use_private_umask()
    args = build_parser().parse_args(argv)
    try:
        settings = _settings_from_args(args)
    except SettingsError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    from .log_redaction import configure_logging

    configure_logging(settings)
    # aiosqlite logs every statement with its parameters at DEBUG: SIP secrets, citizens' data. Never below INFO.
    logging.getLogger("aiosqlite").setLevel(max(logging.INFO, logging.getLogger().getEffectiveLevel()))
    if args.command == "run":
        return run_event_loop(_run(settings), settings.event_loop)
    if args.command == "db":
        return _db_upgrade(settings)
    if args.command == "cases":
        return asyncio.run(_cases_list(settings, args.json, args.limit))
    if args.command == "asr":
        if args.asr_command == "bench":
            return _asr_bench(args.files)
        from asr.cli import transcribe_command

        return transcribe_command(args.file, args.grammar, args.json, settings.vosk_model_path)
    if args.command == "call":
        return asyncio.run(_call(settings, args))
    if args.command == "flows":
        from ivr.flow_cli import flows_command

        return flows_command(args, settings)
    if args.command == "agents":
        return asyncio.run(_agents(settings, args))
    return 2


def _asr_bench(files: list[Path]) -> int:
    """Run the ASR benchmark scripts (they print their tables with the bare-Vosk baseline beside)."""
    import subprocess

    bench_dir = Path(__file__).resolve().parent.parent / "benchmarks"
    if not bench_dir.is_dir():
        print(f"error: benchmarks directory {bench_dir} is missing (installed without the source tree?)",
              file=sys.stderr)
        return 2
    code = subprocess.call([sys.executable, str(bench_dir / "asr_throughput.py"), *map(str, files)])
    return code or subprocess.call([sys.executable, str(bench_dir / "asr_latency.py")])


def _db_upgrade(settings: Settings) -> int:
    from storage import migrate_database

    from .app import safe_url

    try:
        migrate_database(settings.database_url)
    except Exception as exc:  # report any driver/migration failure as one line
        print(f"error: database {safe_url(settings.database_url)}: {str(exc).splitlines()[0]}", file=sys.stderr)
        return 1
    print(f"database {safe_url(settings.database_url)} is up to date")
    return 0


def _check_port_free(host: str, port: int, what: str) -> None:
    from .app import HotlineStartError

    with socket.socket(socket.AF_INET6 if ":" in host else socket.AF_INET, socket.SOCK_STREAM) as s:
        s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        try:
            s.bind((host, port))
        except OSError:
            raise HotlineStartError(f"port {port}/tcp ({what}) on {host} is already in use") from None


async def _run(settings: Settings) -> int:
    from aiohttp import web

    from .app import HotlineStartError, build_app

    try:
        await asyncio.get_running_loop().run_in_executor(None, _make_run_dir_private, settings)
        _check_port_free(settings.http_host, settings.http_port, "HTTP console")
        _check_port_free(settings.agi_host, settings.agi_port, "FastAGI")
        app = build_app(settings)
    except HotlineStartError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 1
    runner = web.AppRunner(app, handle_signals=False, access_log=None)
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGINT, signal.SIGTERM):
        loop.add_signal_handler(sig, stop.set)
    try:
        try:
            await runner.setup()
            site = web.TCPSite(runner, settings.http_host, settings.http_port)
            await site.start()
        except HotlineStartError as exc:
            print(f"error: {exc}", file=sys.stderr)
            return 1
        except OSError as exc:
            print(f"error: HTTP console cannot listen on {settings.http_host}:{settings.http_port}: "
                  f"{exc.strerror or exc}", file=sys.stderr)
            return 1
        _print_banner(settings)
        await stop.wait()
        print("stopping…", file=sys.stderr)
        return 0
    finally:
        await runner.cleanup()


def _make_run_dir_private(settings: Settings) -> None:
    """Tighten what an older version (or another umask) left readable: the run folder and a database outside it."""
    from storage import sqlite_database_files

    from .private_files import make_private

    make_private(settings.run_dir, sqlite_database_files(settings.database_url))


def _print_banner(settings: Settings) -> None:
    # No secret in the banner: standard output ends up in service logs. They are in the secrets file (0600).
    agent = settings.agents[0] if settings.agents else None
    lines = [
        "",
        f"12345 hotline is running (number {settings.hotline_number}).",
        f"  Console:   http://{settings.http_host}:{settings.http_port}/   (user admin; password: admin_password in "
        f"{settings.secrets_file} unless set in the environment)",
        f"  Health:    http://{settings.http_host}:{settings.http_port}/healthz",
    ]
    if agent is not None:
        lines.append(f"  Softphone: SIP account {agent.name} at {settings.sip_host}:{settings.sip_port} (UDP), "
                     f"secret: agent_sip_secrets.{agent.name} in the secrets file (`hotline agents rotate-sip-secret "
                     f"{agent.name}` replaces it)")
    lines += [
        f"  Demo call: .venv/bin/hotline call {settings.hotline_number} --digits 1 --say \"도로에 쓰레기가 많아요\"",
        "  Cases:     .venv/bin/hotline cases list",
        "  Stop with Ctrl-C.",
        "",
    ]
    print("\n".join(lines), flush=True)


async def _cases_list(settings: Settings, as_json: bool, limit: int) -> int:
    from cases import CaseStore
    from storage import create_engine_from_url

    from .app import safe_url

    engine = create_engine_from_url(settings.database_url, connect_timeout=settings.connect_timeout)
    try:
        cases = await CaseStore(engine).list_recent(limit=limit)
    except Exception as exc:  # any driver failure is reported as one line
        print(f"error: database {safe_url(settings.database_url)}: {str(exc).splitlines()[0]}", file=sys.stderr)
        return 1
    finally:
        await engine.dispose()
    if as_json:
        print(json.dumps([c.to_dict() for c in cases], ensure_ascii=False, indent=2))
        return 0
    if not cases:
        print("no cases yet")
    for c in cases:
        transcript = (c.transcript or f"({c.transcript_status})").replace("\n", " ")
        print(f"{c.case_number}  {c.created_at:%Y-%m-%d %H:%M:%S}  {c.caller_number:<14} {c.category:<12} "
              f"{c.status:<18} {transcript[:60]}")
    return 0


async def _call(settings: Settings, args: argparse.Namespace) -> int:
    from cases import CaseStore
    from ivr import load_prompt_sets
    from ivr.prompts import synthesize_speech
    from storage import create_engine_from_url
    from telephony import AmiError
    from telephony.builder import build_ami

    audio: Path | None = None
    if args.say:
        sets = load_prompt_sets(settings.prompts_file)
        voice = sets[settings.language].voice if settings.language in sets else "ko"
        audio = settings.run_dir / "demo" / f"say-{uuid.uuid4().hex[:8]}.wav"
        audio.parent.mkdir(parents=True, exist_ok=True)
        await asyncio.get_running_loop().run_in_executor(None, synthesize_speech, args.say, voice, audio, 130)
    elif args.audio:
        if not args.audio.exists():
            print(f"error: audio file {args.audio} does not exist", file=sys.stderr)
            return 2
        audio = settings.run_dir / "demo" / f"audio-{uuid.uuid4().hex[:8]}.wav"
        audio.parent.mkdir(parents=True, exist_ok=True)
        sox = await asyncio.create_subprocess_exec(
            "sox", str(args.audio), "-r", "8000", "-c", "1", "-b", "16", str(audio),
            stdout=asyncio.subprocess.DEVNULL, stderr=asyncio.subprocess.PIPE)
        _, sox_err = await asyncio.wait_for(sox.communicate(), 60)
        if sox.returncode != 0:
            print(f"error: audio file {args.audio}: {sox_err.decode(errors='replace').strip()}", file=sys.stderr)
            return 2
    if args.digits and not all(ch in "0123456789*#" for ch in args.digits):
        print(f"error: --digits {args.digits!r}: only 0-9, * and # can be pressed", file=sys.stderr)
        return 2
    ami = build_ami(settings, supervised=False)
    call_id = f"demo-{uuid.uuid4().hex[:12]}"
    variables = [f"DEMO_DIGITS={args.digits}"]
    if audio is not None:
        variables.append(f"DEMO_AUDIO={audio.with_suffix('')}")
    try:
        await ami.start()
        await ami.action({
            "Action": "Originate",
            "Channel": f"Local/{args.number}@hotline-inbound",
            "Context": "hotline-demo-caller", "Exten": "s", "Priority": "1",
            "CallerID": f"\"Demo caller\" <{args.caller}>",
            "ChannelId": call_id, "OtherChannelId": f"{call_id}-ivr",
            "Variable": variables, "Async": "true", "Timeout": "30000",
        })
    except AmiError as exc:
        print(f"error: {exc} (is `hotline run` running?)", file=sys.stderr)
        return 1
    finally:
        await ami.close()
    print(f"calling {args.number} from {args.caller} (call {call_id})")
    if args.wait <= 0:
        return 0
    engine = create_engine_from_url(settings.database_url, connect_timeout=settings.connect_timeout)
    store = CaseStore(engine)
    try:
        deadline = asyncio.get_running_loop().time() + args.wait
        case = None
        while asyncio.get_running_loop().time() < deadline:
            case = await store.find_by_source(call_id)
            if case is not None and case.transcript_status not in ("pending",) and case.status != "new":
                break
            await asyncio.sleep(1.0)
    finally:
        await engine.dispose()
    if case is None:
        print(f"error: no case was written for call {call_id} within {args.wait:g} s", file=sys.stderr)
        return 1
    print(json.dumps(case.to_dict(), ensure_ascii=False, indent=2))
    return 0


async def _agents(settings: Settings, args: argparse.Namespace) -> int:
    """`hotline agents ...`: the database is changed first, then Asterisk through AMI (the running bridge
    re-applies the database on its next AMI connect if Asterisk cannot be reached now)."""
    from sqlalchemy.exc import SQLAlchemyError

    from identity import AccountStore, check_password_policy
    from queueing import AgentError, parse_skills
    from queueing.builder import build_agent_service, build_queue_live, build_queueing_stores
    from storage import create_engine_from_url
    from telephony import AmiError
    from telephony.builder import build_ami

    engine = create_engine_from_url(settings.database_url, connect_timeout=settings.connect_timeout)
    stores = build_queueing_stores(engine, settings)
    store = stores.agents
    ami = build_ami(settings, supervised=False)
    verb = args.agents_command
    try:
        if verb == "list":
            live = build_queue_live(settings)
            try:
                states = {a["name"]: a for a in await live.agents()}
            finally:
                await live.aclose()
            rows = [{**a.to_dict(), "state": (states.get(a.name) or {}).get("state") or "logged_out"}
                    for a in await store.list()]
            if args.json:
                print(json.dumps(rows, ensure_ascii=False, indent=2))
            for r in [] if args.json else rows:
                skills = ",".join(f"{q}:{p}" for q, p in r["skills"].items())
                print(f"{r['name']:<16} {r['state']:<12} {r['pause_reason'] or '':<10} {skills}")
            return 0
        try:
            await ami.start()
            service = build_agent_service(stores, ami, settings)
        except AmiError as exc:
            print(f"warning: {exc}; the change is stored and applied when the hotline reconnects", file=sys.stderr)
            service = build_agent_service(stores, None, settings)
        if verb == "add":
            console_password = args.password or secrets.token_urlsafe(12)
            check_password_policy(console_password)
            accounts = AccountStore(engine)
            existing = await accounts.get(args.name)
            agent = await service.add(args.name, parse_skills(args.queue), args.display_name)
            shown: dict[str, Any] = {**agent.to_dict(), "sip_secret": agent.sip_secret}
            if existing is None:
                await accounts.create(agent.name, console_password, "agent", display_name=agent.display_name,
                                      sip_endpoint=agent.name)
                if not args.password:
                    shown["console_password"] = console_password
            # The only time these are shown (the database keeps the SIP secret for Asterisk; the console password
            # only as a hash): on standard output, never in a log.
            print(json.dumps(shown, ensure_ascii=False))
            print("the SIP secret" + (" and the console password are" if "console_password" in shown else " is")
                  + " shown only now", file=sys.stderr)
            return 0
        elif verb == "rotate-sip-secret":
            agent = await service.rotate_sip_secret(args.name)
            print(json.dumps({"name": agent.name, "sip_secret": agent.sip_secret}, ensure_ascii=False))
            print(f"agent {agent.name}: the old SIP secret no longer registers; this one is shown only now",
                  file=sys.stderr)
            return 0
        elif verb == "remove":
            await service.remove(args.name)
            print(f"agent {args.name} removed")
            return 0
        elif verb == "pause":
            agent = await service.pause(args.name, args.reason)
        else:
            agent = await getattr(service, verb)(args.name)
        print(json.dumps(agent.to_dict(), ensure_ascii=False))
        return 0
    except (AgentError, ValueError) as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    except AmiError as exc:
        print(f"error: Asterisk refused the change: {exc}", file=sys.stderr)
        return 1
    except SQLAlchemyError as exc:
        print(f"error: database: {str(exc).splitlines()[0]} (run `hotline db upgrade`?)", file=sys.stderr)
        return 1
    finally:
        await ami.close()
        await engine.dispose()
