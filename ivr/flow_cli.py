"""`hotline flows validate|list|show|publish|rollback|audit|routes|route`: flows from the command line."""
from __future__ import annotations

import argparse
import asyncio
import getpass
import json
import sys
from pathlib import Path
from typing import Any

from .flow_source import FlowRejected
from .flow_validator import FlowReport
from .prompts import PromptError


def add_flows_parser(sub: Any, add_common: Any) -> None:
    """Register the `flows` subcommands on the hotline parser."""
    flows = sub.add_parser("flows", help="IVR call flows: validate, publish, roll back")
    flows_sub = flows.add_subparsers(dest="flows_command", required=True)
    v = flows_sub.add_parser("validate", help="check a flow file; exits non-zero on errors")
    add_common(v)
    v.add_argument("file", type=Path)
    v.add_argument("--json", action="store_true")
    ls = flows_sub.add_parser("list", help="flows and their live versions")
    add_common(ls)
    show = flows_sub.add_parser("show", help="print a version's YAML (the live one by default)")
    add_common(show)
    show.add_argument("--name", default="default")
    show.add_argument("--version", type=int)
    pub = flows_sub.add_parser("publish", help="validate and publish a flow file as a new version")
    add_common(pub)
    pub.add_argument("file", type=Path)
    pub.add_argument("--comment", default="")
    pub.add_argument("--actor", default=None, help="who publishes (default: the OS user), for the audit log")
    rb = flows_sub.add_parser("rollback", help="re-publish an older version")
    add_common(rb)
    rb.add_argument("version", type=int)
    rb.add_argument("--name", default="default")
    rb.add_argument("--actor", default=None)
    audit = flows_sub.add_parser("audit", help="who published what, when")
    add_common(audit)
    routes = flows_sub.add_parser("routes", help="the numbers the IVR answers and the flow each runs")
    add_common(routes)
    route = flows_sub.add_parser("route", help="switch the flow a number runs, from its next call on")
    add_common(route)
    route.add_argument("number")
    route.add_argument("flow")
    route.add_argument("--actor", default=None, help="who switches it (default: the OS user), for the audit log")


def _print_report(report: FlowReport, label: str, as_json: bool) -> None:
    if as_json:
        print(json.dumps(report.to_dict(), ensure_ascii=False, indent=2))
        return
    for issue in report.errors:
        print(f"{label}: error: {issue}", file=sys.stderr)
    for issue in report.warnings:
        print(f"{label}: warning: {issue}", file=sys.stderr)
    if report.ok:
        print(f"{label}: ok ({len(report.document.nodes) if report.document else 0} nodes, "
              f"{len(report.warnings)} warning(s))")


def flows_command(args: argparse.Namespace, settings: Any) -> int:
    """Run one `hotline flows …` subcommand; returns the exit code."""
    return asyncio.run(_flows(args, settings))


async def _flows(args: argparse.Namespace, settings: Any) -> int:
    from asr import AsrError, SpeechRecognizer
    from storage import create_engine_from_url, migrate_database

    from .builder import build_flows

    command = args.flows_command
    recognizer = None
    if command in ("validate", "publish", "rollback"):
        try:  # the keyword check needs the model's vocabulary; without it speech menus are reported as DTMF-only
            recognizer = await SpeechRecognizer.load(settings.vosk_model_path, workers=1)
        except AsrError as exc:
            print(f"warning: {exc}", file=sys.stderr)
    engine = create_engine_from_url(settings.database_url)
    services = build_flows(engine, settings, recognizer)
    try:
        if command == "validate":
            from .flow_validator import FlowValidator

            validator = FlowValidator(vocabulary_for=services.models.vocabulary,
                                      queues=[q.name for q in settings.queues],
                                      override_dir=settings.prompts_override_dir)
            report = await asyncio.get_running_loop().run_in_executor(None, validator.validate_file, args.file)
            _print_report(report, str(args.file), args.json)
            return 0 if report.ok else 1
        await asyncio.get_running_loop().run_in_executor(None, migrate_database, settings.database_url)
        admin = services.admin
        if command == "list":
            for flow in await admin.list_flows():
                live = " (runs on the hotline)" if flow.get("live") else ""
                print(f"{flow['name']}  live version {flow['live_version']}{live}")
            return 0
        if command == "show":
            print((await admin.get(args.name, args.version))["text"], end="")
            return 0
        if command == "audit":
            for e in await admin.audit():
                versions = (f"v{e.to_version} live" if e.action == "route"
                            else f"v{e.from_version or 0} → v{e.to_version}")
                print(f"{e.at:%Y-%m-%d %H:%M:%S}  {e.actor:<12} {e.action:<8} {e.flow_name} {versions}  {e.detail}")
            return 0
        if command == "routes":
            for r in await admin.routes():
                how = f"routed by {r['routed_by']} at {r['routed_at']:%Y-%m-%d %H:%M:%S}" if r["routed_by"] \
                    else "configured"
                print(f"{r['number']}  {r['flow']}  ({how})")
            return 0
        actor = args.actor or getpass.getuser()
        if command == "route":
            try:
                routed = await admin.route(args.number, args.flow, actor)
            except (LookupError, ValueError) as exc:
                print(f"error: {exc}", file=sys.stderr)
                return 1
            print(f"number {routed['number']} runs flow {routed['flow']} from its next call on (routed by {actor})")
            return 0
        try:
            if command == "publish":
                try:
                    text = args.file.read_text(encoding="utf-8")
                except OSError as exc:
                    print(f"error: cannot read {args.file}: {exc.strerror or exc}", file=sys.stderr)
                    return 2
                version = await admin.publish(text, actor, args.comment)
            else:
                version = await admin.rollback(args.name, args.version, actor)
        except FlowRejected as exc:
            _print_report(exc.report, str(args.file if command == "publish" else args.name), False)
            return 1
        except (PromptError, LookupError) as exc:
            print(f"error: {exc}", file=sys.stderr)
            return 1
        print(f"flow {version.flow_name}: version {version.version} is live (published by {actor})")
        return 0
    finally:
        await engine.dispose()
        if recognizer is not None:
            await recognizer.aclose()
