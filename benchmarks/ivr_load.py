"""IVR load: N concurrent SIPp calls walking the same DTMF menu three ways through one real Asterisk.

  native  the menu written in the dialplan (Playback/Read) — the floor
  bridge  the flow engine (ivr.HotlineCallFlow) over FastAGI, in its own process — what the hotline runs
  pyst2   a pyst2 AGI script, one Python process per call — the naive peer
  connect the native menu behind a FastAGI session that returns at once: what the AGI connection alone costs

Each call: answer, welcome prompt, menu prompt, the caller presses 1 (RFC 4733), goodbye prompt, Asterisk hangs up.
Measured per variant: failed calls, CPU seconds per call of Asterisk (utime+stime, plus cutime+cstime for the
reaped AGI children) and of the bridge process (/proc/<pid>/stat), the AGI command round trip at p50/p99 (bridge),
and the bridge's memory per live call (RSS at the peak of live calls minus idle, over the calls live then).
The bridge's case/record/live-state stores are in memory here: this measures the engine and AGI, not SQL/Redis.

Loopback only, ports 33400-33999. Usage: python benchmarks/ivr_load.py [--calls 200] [--rate 100] [--rounds 5]
  [--variants native,bridge] (a subset, native first)
"""
from __future__ import annotations

import argparse
import asyncio
import json
import os
import shutil
import signal
import statistics
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

SIP_PORT, AMI_PORT, AGI_PORT = 33460, 33438, 33473
SIPP_SIGNAL_PORT, SIPP_MEDIA_PORT = 33490, 33494
RTP_PORTS = (33500, 33999)
NUMBERS = {"native": "7001", "bridge": "7002", "pyst2": "7003", "connect": "7004"}
CLK_TCK = os.sysconf("SC_CLK_TCK")

PYST2_SCRIPT = """#!{python}
# One Python process per call (the naive peer): the same menu as the flow, with pyst2.
from asterisk.agi import AGI
agi = AGI()
agi.stream_file({welcome!r})
digits = agi.get_data({menu!r}, timeout=8000, max_digits=1)
if digits == "1":
    agi.set_variable("CHOICE", "1")
    agi.stream_file({goodbye!r})
"""

BENCH_FLOW = """
name: bench
start: welcome
default_language: en
languages:
  en: {{voice: en-us, prompts: {{}}}}
nodes:
  welcome: {{kind: play, prompt: "file:{welcome}", next: menu}}
  menu:
    kind: menu
    prompt: "file:{menu}"
    timeout_seconds: 8
    retries: 0
    fallback: "2"
    options:
      - {{key: "1", next: chose_one}}
      - {{key: "2", next: bye}}
  chose_one: {{kind: set, category: complaint, priority: 1, next: done}}
  done: {{kind: queue, queue: bench, prompt: "file:{goodbye}"}}
  bye: {{kind: hangup}}
"""


def _dialplan(prompts: dict[str, str], pyst2_script: Path) -> str:
    """The three menus, reached from the trunk context by their numbers (exact matches beat the catch-all)."""
    w = prompts["welcome"]
    count = "same => n,ExecIf($[\"${CHOICE}\" = \"1\"]?QueueLog(bench,${UNIQUEID},NONE,CHOSE1_%s,))"
    return f"""
exten => {NUMBERS['native']},1,Answer()
 same => n,Playback({w})
 same => n,Goto(bench-native-menu,s,1)
exten => {NUMBERS['connect']},1,Answer()
 same => n,AGI(agi://127.0.0.1:{AGI_PORT}/noop?linkedid=${{CHANNEL(linkedid)}})
 same => n,Playback({w})
 same => n,Goto(bench-connect-menu,s,1)
exten => {NUMBERS['bridge']},1,Answer()
 same => n,AGI(agi://127.0.0.1:{AGI_PORT}/ivr?linkedid=${{CHANNEL(linkedid)}})
 same => n,ExecIf($["${{HOTLINE_PROMPT}}" != ""]?Playback(${{HOTLINE_PROMPT}}))  ; as the hotline's dialplan does
 same => n,Set(CHOICE=${{IF($["${{HOTLINE_QUEUE}}" = "bench"]?1:0)}})
 {count % 'bridge'}
 same => n,Hangup()
exten => {NUMBERS['pyst2']},1,Answer()
 same => n,AGI({pyst2_script})
 {count % 'pyst2'}
 same => n,Hangup()
"""


def _native_menu(prompts: dict[str, str], variant: str = "native") -> str:
    """The classic dialplan menu (Background + WaitExten), appended as its own context."""
    count = f"same => n,QueueLog(bench,${{UNIQUEID}},NONE,CHOSE1_{variant},)"
    return f"""
[bench-{variant}-menu]
exten => s,1,Background({prompts['menu']})
 same => n,WaitExten(8)
exten => 1,1,Set(CHOICE=1)
 same => n,Playback({prompts['goodbye']})
 {count}
 same => n,Hangup()
exten => t,1,Hangup()
exten => i,1,Hangup()
"""


def _cpu(pid: int) -> float:
    """utime+stime+cutime+cstime of a process, in seconds."""
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return sum(int(fields[i]) for i in (11, 12, 13, 14)) / CLK_TCK


def _rss_kb(pid: int) -> int:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1])
    return 0


# ---------------------------------------------------------------------------------------------- bridge process


class _Memory:
    """In-memory stand-ins for the case store, call records and live state."""

    def __init__(self) -> None:
        self.cases: dict[str, dict[str, Any]] = {}
        self.live = 0
        self.peak_live = 0

    async def open(self, new: Any, *, actor: str) -> Any:
        number = f"B{len(self.cases) + 1:07d}"
        self.cases[number] = {}
        return type("C", (), {"case_number": number})()

    async def _case_changed(self, case_number: str, *args: Any, **kwargs: Any) -> None:
        pass

    # The case operations the flow engine calls: kept in memory as nothing (the bridge's cost is measured).
    classify = record_menu_path = attach_recording = drop_recording = _case_changed
    transcript_pending = record_transcript = transcript_failed = add_note = mark_abandoned_in_ivr = _case_changed

    async def update(self, key: str, **fields: Any) -> None:
        pass

    async def upsert(self, key: str, **fields: Any) -> None:
        pass

    async def start_call(self, key: str, **fields: Any) -> None:
        pass


def _time_round_trips(agi: Any, samples: list[float]) -> Any:
    """Times the AGI commands of a session that are pure round trips (GET/SET VARIABLE, EXEC MSet)."""
    for name in ("get_variable", "set_variable", "set_variables"):
        method = getattr(agi, name)

        async def timed(*args: Any, _method: Any = method) -> Any:
            t = time.perf_counter()
            try:
                return await _method(*args)
            finally:
                samples.append(time.perf_counter() - t)

        setattr(agi, name, timed)
    return agi


def _no_descriptions(work: Path) -> Any:
    """The bench flow records nothing: a description pipeline that is never asked (its database is never opened)."""
    from storage import create_engine_from_url
    from transcripts import DescriptionTranscripts, TranscriptionJobStore, TranscriptionWorker

    jobs = TranscriptionJobStore(create_engine_from_url(f"sqlite+aiosqlite:///{work / 'jobs.db'}"))
    return DescriptionTranscripts(jobs, TranscriptionWorker(jobs, None, None))  # type: ignore[arg-type]


async def _bridge(flow_file: Path, stats_file: Path, loop_kind: str) -> int:
    from ivr import FlowPrompts, FlowValidator, HotlineCallFlow, IvrOptions, compile_flow
    from telephony import FastAgiServer

    memory = _Memory()
    validator = FlowValidator(base_dir=flow_file.parent)
    loaded = await compile_flow("bench", 1, flow_file.read_text(), validator,
                                lambda doc: FlowPrompts(doc, flow_file.parent / "cache", None, flow_file.parent))

    class Source:
        async def current(self) -> Any:
            return loaded

    flow = HotlineCallFlow(options=IvrOptions(recordings_dir=flow_file.parent / "rec"), flows=Source(),
                           cases=memory, records=memory, live=memory,
                           descriptions=_no_descriptions(flow_file.parent))
    samples: list[float] = []
    peak = {"live": 0, "rss_kb": 0}
    live = {"n": 0}

    async def handle(agi: Any) -> None:
        live["n"] += 1
        try:
            await flow.handle(_time_round_trips(agi, samples))
        finally:
            live["n"] -= 1

    async def sample_memory() -> None:
        # RSS read twice a second, not per call: reading /proc costs more than a call's AGI work.
        while True:
            if live["n"] > peak["live"]:
                peak["live"], peak["rss_kb"] = live["n"], _rss_kb(os.getpid())
            await asyncio.sleep(0.5)

    server = FastAgiServer("127.0.0.1", AGI_PORT, command_timeout=60)
    server.add_route("ivr", handle)

    async def noop(agi: Any) -> None:  # the "connect" variant: the session alone, no command
        return None

    server.add_route("noop", noop)
    await server.start()
    idle_rss = _rss_kb(os.getpid())
    sampler = asyncio.create_task(sample_memory(), name="bench-memory-sampler")
    stop = asyncio.Event()
    asyncio.get_running_loop().add_signal_handler(signal.SIGTERM, stop.set)
    print("ready", flush=True)
    await stop.wait()
    sampler.cancel()
    await asyncio.gather(sampler, return_exceptions=True)
    await server.close()
    await flow.aclose()
    stats_file.write_text(json.dumps({"samples": samples, "idle_rss_kb": idle_rss, "peak_rss_kb": peak["rss_kb"],
                                      "peak_live": peak["live"], "calls": flow.calls_handled, "loop": loop_kind}))
    return 0


# ---------------------------------------------------------------------------------------------- harness


async def _run_sipp(scenario: Path, number: str, calls: int, rate: int, work: Path) -> dict[str, int]:
    args = ["sipp", f"127.0.0.1:{SIP_PORT}", "-sf", str(scenario), "-s", number, "-i", "127.0.0.1",
            "-p", str(SIPP_SIGNAL_PORT), "-mp", str(SIPP_MEDIA_PORT), "-r", str(rate), "-l", str(calls),
            "-m", str(calls), "-trace_logs", "-log_file", str(work / f"{number}.log"), "-trace_err",
            "-error_file", str(work / f"{number}.err"), "-nostdin", "-recv_timeout", "40000",
            "-timeout", "180s", "-timeout_error"]
    proc = await asyncio.create_subprocess_exec(*args, stdout=asyncio.subprocess.DEVNULL,
                                                stderr=asyncio.subprocess.PIPE, cwd=str(work))
    try:
        _, err = await asyncio.wait_for(proc.communicate(), 240)
    except TimeoutError:
        proc.kill()
        await proc.wait()
        raise RuntimeError("SIPp did not finish in 240 s") from None
    log = (work / f"{number}.log").read_text(errors="replace") if (work / f"{number}.log").exists() else ""
    return {"exit": proc.returncode or 0, "answered": log.count("FINAL 200"),
            "hung_up_by_asterisk": log.count("HANGUP asterisk"), "stderr": err.decode()[-300:]}


async def _variant(name: str, asterisk_pid: int, bridge_pid: int | None, scenario: Path, calls: int, rate: int,
                   work: Path, queue_log: Path) -> dict[str, Any]:
    chose_before = queue_log.read_text().count(f"CHOSE1_{name}") if queue_log.exists() else 0
    before_ast = _cpu(asterisk_pid)
    before_bridge = _cpu(bridge_pid) if bridge_pid else 0.0
    started = time.monotonic()
    sipp = await _run_sipp(scenario, NUMBERS[name], calls, rate, work)
    elapsed = time.monotonic() - started
    await asyncio.sleep(1.0)  # let the last hang-ups and AGI children finish
    ast = _cpu(asterisk_pid) - before_ast
    bridge = (_cpu(bridge_pid) - before_bridge) if bridge_pid else 0.0
    chose = (queue_log.read_text().count(f"CHOSE1_{name}") if queue_log.exists() else 0) - chose_before
    failed = calls - min(sipp["answered"], sipp["hung_up_by_asterisk"], chose)
    return {"variant": name, "calls": calls, "failed": failed, "chose_1": chose, "seconds": elapsed,
            "asterisk_cpu_ms": ast / calls * 1000, "bridge_cpu_ms": bridge / calls * 1000,
            "total_cpu_ms": (ast + bridge) / calls * 1000, "sipp": sipp}


def _median_round(runs: list[dict[str, Any]], native: list[dict[str, Any]]) -> dict[str, Any]:
    """The round with the median total CPU per call, failures summed over all rounds, and the ratio to native.

    The ratio is the median of each round's ratio to the native run next to it in time: this machine's speed
    drifts by ±20% within minutes, and runs seconds apart share it."""
    ordered = sorted(runs, key=lambda r: r["total_cpu_ms"])
    row = dict(ordered[(len(ordered) - 1) // 2])
    row["calls"] = sum(r["calls"] for r in runs)
    row["failed"] = sum(r["failed"] for r in runs)
    row["chose_1"] = sum(r["chose_1"] for r in runs)
    row["round_totals"] = [r["total_cpu_ms"] for r in runs]
    if len(runs) == len(native):
        row["round_ratios"] = [r["total_cpu_ms"] / n["total_cpu_ms"] for r, n in zip(runs, native, strict=True)]
    else:  # pyst2: one round, against the median native round
        row["round_ratios"] = [r["total_cpu_ms"] / statistics.median(n["total_cpu_ms"] for n in native)
                               for r in runs]
    row["vs_native"] = statistics.median(row["round_ratios"])
    return row


async def _main(calls: int, rate: int, rounds: int, variants: list[str], verbose: bool = False) -> int:
    from ivr.prompts import synthesize_speech
    from telephony.asterisk_process import AsteriskConfig, AsteriskProcess
    from tests.support.sipp import CitizenCall

    work = Path(tempfile.mkdtemp(prefix="ivr-load-"))
    prompts: dict[str, str] = {}
    for name, text in (("welcome", "Welcome."), ("menu", "Press 1."), ("goodbye", "Goodbye.")):
        prompts[name] = str(synthesize_speech(text, "en-us", work / f"{name}.wav").with_suffix(""))
    pyst2 = work / "pyst2_menu.py"
    pyst2.write_text(PYST2_SCRIPT.format(python=sys.executable, **prompts))
    pyst2.chmod(0o755)
    flow_file = work / "bench.yaml"
    flow_file.write_text(BENCH_FLOW.format(**prompts))

    templates = work / "templates"
    shutil.copytree(ROOT / "asterisk" / "templates", templates)
    ext = templates / "extensions.conf"
    text = ext.read_text()
    marker = "exten => _[0-9*#+].,1,Hangup(1)"
    assert marker in text, "extensions.conf changed: update the benchmark's dialplan insertion point"
    ext.write_text(text.replace(marker, _dialplan(prompts, pyst2).strip() + "\n" + marker, 1)
                   + _native_menu(prompts) + _native_menu(prompts, "connect"))
    cfg = AsteriskConfig(run_dir=work / "asterisk", ami_secret="bench-secret", hotline_number="12345",
                         sip_port=SIP_PORT, ami_port=AMI_PORT, agi_port=AGI_PORT, rtp_port_start=RTP_PORTS[0],
                         rtp_port_end=RTP_PORTS[1], templates_dir=templates)
    scenario = work / "menu.xml"
    call = CitizenCall(sip_port=SIP_PORT, number="7000", from_user="0100000000", hangup="wait", wait_bye_ms=30000,
                       steps=[("pause", 3000), ("dtmf", "1")], name="bench", stock_dtmf=True)
    scenario.write_text(call.scenario_xml(work))

    stats_file = work / "bridge-stats.json"
    bridge = await asyncio.create_subprocess_exec(sys.executable, __file__, "--bridge", str(flow_file),
                                                  str(stats_file), stdout=asyncio.subprocess.PIPE)
    assert bridge.stdout is not None
    line = await asyncio.wait_for(bridge.stdout.readline(), 60)
    if line.strip() != b"ready":
        raise RuntimeError(f"bridge did not start: {line!r}")
    asterisk = AsteriskProcess(cfg)
    rows = []
    runs: dict[str, list[dict[str, Any]]] = {name: [] for name in variants}
    try:
        await asterisk.start()
        assert asterisk.pid is not None
        queue_log = cfg.log_dir / "queue_log"
        # native, connect and bridge run back to back for several rounds, in reverse order every other round so
        # that a drift of the machine's speed favours none; each is compared with the native run of its round.
        # pyst2 is far off either way: one round.
        alternating = [name for name in ("native", "connect", "bridge") if name in variants]
        order = [name for r in range(rounds) for name in (alternating if r % 2 == 0 else alternating[::-1])]
        for name in [*order, *(["pyst2"] if "pyst2" in variants else [])]:
            runs[name].append(await _variant(name, asterisk.pid, bridge.pid if name in ("bridge", "connect") else None,
                                             scenario, calls, rate, work, queue_log))
        rows = [_median_round(runs[name], runs["native"])
                for name in ("native", "connect", "bridge", "pyst2") if name in variants]
    finally:
        await asterisk.stop()
        bridge.send_signal(signal.SIGTERM)
        await asyncio.wait_for(bridge.wait(), 30)
    stats = json.loads(stats_file.read_text())
    samples = sorted(stats["samples"])
    p50 = statistics.median(samples) * 1000 if samples else float("nan")
    p99 = samples[min(len(samples) - 1, int(len(samples) * 0.99))] * 1000 if samples else float("nan")
    print(f"\nIVR load: {calls} concurrent calls per round (SIPp -r {rate} -l {calls} -m {calls}), one Asterisk 16, "
          f"loopback; CPU per call = Asterisk (+ reaped AGI children) + bridge process; native, connect and bridge: "
          f"{rounds} rounds back to back, median round shown; vs native = median of the rounds' ratios to the "
          f"native run of the same round (target for bridge: at most 1.20x)")
    print(f"{'variant':<8} {'calls':>5} {'failed':>6} {'pressed 1':>9} {'ast ms/call':>11} {'bridge ms/call':>14} "
          f"{'total ms/call':>13} {'vs native':>9}  rounds: total ms/call (ratio)")
    for r in rows:
        print(f"{r['variant']:<8} {r['calls']:>5} {r['failed']:>6} {r['chose_1']:>9} {r['asterisk_cpu_ms']:>11.1f} "
              f"{r['bridge_cpu_ms']:>14.1f} {r['total_cpu_ms']:>13.1f} {r['vs_native']:>8.2f}x  "
              + " ".join(f"{t:.1f} ({q:.2f})" for t, q in zip(r["round_totals"], r["round_ratios"], strict=True)))
    if verbose:
        for name in variants:
            print(f"  {name:<8} rounds, Asterisk + bridge ms/call: "
                  + "  ".join(f"{r['asterisk_cpu_ms']:.1f}+{r['bridge_cpu_ms']:.1f}" for r in runs[name]))
    print(f"\nAGI command round trip (bridge, GET/SET VARIABLE, {len(samples)} samples under load): "
          f"p50 {p50:.2f} ms, p99 {p99:.2f} ms (target p99 < 5 ms)")
    per_call_kb = (stats["peak_rss_kb"] - stats["idle_rss_kb"]) / max(1, stats["peak_live"])
    print(f"Bridge event loop: {stats['loop']} (Settings.event_loop; HOTLINE_EVENT_LOOP=asyncio to compare)")
    print(f"Bridge memory: idle RSS {stats['idle_rss_kb'] / 1024:.1f} MiB, {stats['peak_live']} live calls at peak, "
          f"RSS then {stats['peak_rss_kb'] / 1024:.1f} MiB: {per_call_kb:.1f} KiB per live call")
    for r in rows:
        if r["sipp"]["exit"] != 0:
            print(f"note: SIPp exit {r['sipp']['exit']} for {r['variant']}: {r['sipp']['stderr'].strip()}")
    for r in rows:
        if r["variant"] == "pyst2" and r["failed"]:
            print(f"note: pyst2 lost {r['failed']} callers' key press: with one Python start-up per call the "
                  "burst saturates the CPU and the script is not reading when the key arrives (the naive peer)")
    ok = all(r["failed"] == 0 for r in rows if r["variant"] != "pyst2")  # the hotline's own path must not fail
    if ok:
        shutil.rmtree(work, ignore_errors=True)
    else:
        print(f"work files kept for inspection in {work}")
    return 0 if ok else 1


def main() -> int:
    """Run the comparison (or, with --bridge, be the bridge process)."""
    if len(sys.argv) == 4 and sys.argv[1] == "--bridge":
        from hotline.cli import run_event_loop

        # The bridge runs on the event loop the hotline runs on (Settings.event_loop, uvloop by default).
        loop = os.environ.get("HOTLINE_EVENT_LOOP", "uvloop")
        run_event_loop(_bridge(Path(sys.argv[2]), Path(sys.argv[3]), loop), loop)
        return 0
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--calls", type=int, default=200)
    parser.add_argument("--rate", type=int, default=100, help="new calls per second while ramping up")
    parser.add_argument("--rounds", type=int, default=5, help="rounds of native, connect and bridge back to back")
    parser.add_argument("--variants", default="native,connect,bridge,pyst2",
                        help="comma-separated subset to run (native first: the others are compared with it)")
    parser.add_argument("--verbose", action="store_true", help="also print every round's Asterisk and bridge CPU")
    args = parser.parse_args()
    variants = [v for v in args.variants.split(",") if v]
    unknown = sorted(set(variants) - set(NUMBERS))
    if unknown or not variants or variants[0] != "native":
        parser.error(f"--variants: unknown {', '.join(unknown)}" if unknown else "--variants must start with native")
    return asyncio.run(_main(args.calls, args.rate, args.rounds, variants, args.verbose))


if __name__ == "__main__":
    sys.exit(main())
