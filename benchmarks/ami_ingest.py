"""Queue live state: AMI event ingestion rate and AgentConnect -> Redis latency, beside their baselines.

1. Ingestion: one AMI event stream (queue calls with the usual noise of VarSet/Newexten events) is
   (a) parsed by panoramisk's AMIProtocol alone, in-process (baseline), and (b) sent over TCP by a fake
   AMI server to the bridge's real pipeline (AmiClient -> QueueEventTracker -> Redis state + SQLite
   metrics); the rate is events of the stream per wall second until the last one is in Redis.
2. Latency, with 100 calls queued and 50 agents logged in: from writing an AgentConnect on the AMI
   socket to (a) the agent's state 'on_call' readable in Redis and (b) the pub/sub message received
   by a subscriber; p50/p99. Baseline: a bare client doing the same HSET + PUBLISH round trip.

Needs Redis at 127.0.0.1:6379 (keys under hotline-i5-bench-*, deleted after).

    .venv/bin/python benchmarks/ami_ingest.py [--calls 1500] [--samples 200]
"""
from __future__ import annotations

import argparse
import asyncio
import json
import os
import statistics
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

REPO = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO))  # run as a plain script

from panoramisk.ami_protocol import AMIProtocol  # noqa: E402

from queueing import LiveCallState, QueueEventTracker, QueueLiveState, QueueMetricsStore, connect_redis  # noqa: E402
from storage import create_engine_from_url, migrate_database  # noqa: E402
from telephony import AmiClient  # noqa: E402
from tests.support.fake_ami import FakeAmiServer, encode_message  # noqa: E402

QUEUES = ["complaints", "inquiries", "operator"]
REDIS_URL = "redis://127.0.0.1:6379/0"


def agent_member(name: str, queue: str, status: str, in_call: str = "0") -> list[tuple[str, str]]:
    return [("Queue", queue), ("MemberName", name), ("Interface", f"PJSIP/{name}"),
            ("StateInterface", f"PJSIP/{name}"), ("Membership", "dynamic"), ("Penalty", "0"), ("CallsTaken", "0"),
            ("Status", status), ("Paused", "0"), ("PausedReason", ""), ("InCall", in_call)]


def call_stream(calls: int, agents: int) -> tuple[bytes, int, int]:
    """(stream bytes, events in it, events the tracker handles)."""
    out: list[bytes] = []
    total = handled = 0

    def ev(name: str, fields: list[tuple[str, Any]], counts: bool = True) -> None:
        nonlocal total, handled
        out.append(encode_message([("Event", name), ("Privilege", "agent,all"), *fields]))
        total += 1
        handled += counts

    for i in range(calls):
        queue = QUEUES[i % 3]
        agent = f"agent{i % agents}"
        uid = f"1700000000.{i}"
        chan = [("Channel", f"PJSIP/trunk-{i:08x}"), ("Uniqueid", uid), ("Linkedid", uid),
                ("CallerIDNum", f"010{i:08d}")]
        ev("VarSet", [*chan, ("Variable", "QUEUE_PRIO"), ("Value", "0")], counts=False)
        ev("Newexten", [*chan, ("Context", "hotline-inbound"), ("Application", "Queue")], counts=False)
        ev("QueueCallerJoin", [*chan, ("Queue", queue), ("Position", "1"), ("Count", "1")])
        ev("AgentCalled", [*chan, ("Queue", queue), ("MemberName", agent), ("Interface", f"PJSIP/{agent}")])
        ev("QueueMemberStatus", agent_member(agent, queue, "6"))
        ev("QueueCallerLeave", [*chan, ("Queue", queue), ("Position", "1"), ("Count", "0")])
        ev("AgentConnect", [*chan, ("Queue", queue), ("MemberName", agent), ("HoldTime", "7"), ("RingTime", "2")])
        ev("QueueMemberStatus", agent_member(agent, queue, "2", "1"))
        ev("AgentComplete", [*chan, ("Queue", queue), ("MemberName", agent), ("HoldTime", "7"), ("TalkTime", "60"),
                             ("Reason", "caller")])
        ev("QueueMemberStatus", agent_member(agent, queue, "1"))
        ev("Hangup", [*chan, ("Cause", "16")], counts=False)
    return b"".join(out), total, handled


class _Sink:
    """Stands in for the client panoramisk's protocol hands events to."""

    def __init__(self) -> None:
        self.events = 0
        self.save_stream = None

    def dispatch(self, message: Any) -> None:
        self.events += 1


def panoramisk_rate(stream: bytes, events: int, chunk: int = 65536) -> float:
    """Events per second panoramisk's AMIProtocol parses (and dispatches) from the raw bytes."""
    proto = AMIProtocol()
    proto.connection_made(None)
    sink = _Sink()
    proto.factory = sink
    proto.encoding = "utf-8"
    began = time.perf_counter()
    for i in range(0, len(stream), chunk):
        proto.data_received(stream[i:i + chunk])
    seconds = time.perf_counter() - began
    assert sink.events == events, (sink.events, events)
    return events / seconds


class Bridge:
    """The bridge's queue pipeline connected to a fake AMI server."""

    async def start(self, prefix: str, db_dir: Path, wrapup: float = 0.0) -> None:
        url = f"sqlite+aiosqlite:///{db_dir / 'bench.db'}"
        await asyncio.get_running_loop().run_in_executor(None, migrate_database, url)
        self.engine = create_engine_from_url(url)
        self.server = FakeAmiServer()
        await self.server.start()
        self.redis = connect_redis(REDIS_URL)
        self.live = QueueLiveState(self.redis, prefix)
        self.calls = LiveCallState(self.redis, prefix=prefix)
        self.ami = AmiClient("127.0.0.1", self.server.port, "hotline", "s3cret", ping_interval=30)
        self.tracker = QueueEventTracker(self.ami, self.live, QueueMetricsStore(self.engine), self.calls,
                                         queues=QUEUES, wrapup_seconds={q: wrapup for q in QUEUES})
        self.tracker.subscribe(self.ami)
        # "*" handlers run after the named ones, one event at a time: when one runs, the tracker's handler of that
        # event has returned, so events_applied then counts events fully applied (Redis and SQLite written).
        self._finished = 0
        self._progress = asyncio.Event()
        self.ami.on_event("*", self._event_done)
        await self.ami.start()

    def _event_done(self, event: object) -> None:
        self._finished = self.tracker.events_applied
        self._progress.set()

    async def applied(self, count: int, timeout: float = 600) -> None:
        """Wait until the tracker has fully applied `count` events."""
        async with asyncio.timeout(timeout):
            while self._finished < count:
                self._progress.clear()
                await self._progress.wait()

    async def close(self) -> None:
        await self.ami.close()
        await self.tracker.aclose()
        await self.server.close()
        await self.engine.dispose()
        await self.redis.aclose()


async def cleanup(prefix: str) -> None:
    client = connect_redis(REDIS_URL)
    keys = [k async for k in client.scan_iter(f"{prefix}:*")]
    for i in range(0, len(keys), 500):
        await client.delete(*keys[i:i + 500])
    await client.aclose()


async def bridge_rate(stream: bytes, handled: int, events: int, work: Path) -> float:
    prefix = f"hotline-i5-bench-{os.getpid()}-ingest"
    bridge = Bridge()
    await bridge.start(prefix, work)
    try:
        began = time.perf_counter()
        bridge.server.send_raw(stream)
        await bridge.applied(handled)
        return events / (time.perf_counter() - began)
    finally:
        await bridge.close()
        await cleanup(prefix)


def pct(values: list[float], p: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, int(round(p / 100 * (len(ordered) - 1))))]


async def latency(samples: int, work: Path) -> dict[str, list[float]]:
    """AgentConnect -> state in Redis / pub/sub, with 100 callers waiting and 50 agents."""
    prefix = f"hotline-i5-bench-{os.getpid()}-latency"
    bridge = Bridge()
    await bridge.start(prefix, work)
    watcher = connect_redis(REDIS_URL)
    pubsub = watcher.pubsub()
    await pubsub.subscribe(bridge.live.channel)
    results: dict[str, list[float]] = {"state": [], "pubsub": []}
    try:
        expected = 0
        for a in range(50):
            for q in QUEUES:
                bridge.server.push_event("QueueMemberAdded", agent_member(f"agent{a}", q, "1"))
                expected += 1
        for i in range(100):
            uid = f"1800000000.{i}"
            bridge.server.push_event("QueueCallerJoin", [("Queue", QUEUES[i % 3]), ("Position", str(i // 3 + 1)),
                                                         ("Uniqueid", uid), ("Linkedid", uid),
                                                         ("CallerIDNum", f"0109{i:07d}")])
            expected += 1
        await bridge.applied(expected)
        while await pubsub.get_message(ignore_subscribe_messages=True, timeout=0.2) is not None:
            pass
        for n in range(samples):
            agent = f"agent{n % 50}"
            uid = f"1800000000.{n % 100}"
            mode = "pubsub" if n % 2 == 0 else "state"
            key = f"{prefix}:agent:{agent}"
            t0 = time.perf_counter()
            bridge.server.push_event("AgentConnect", [("Queue", QUEUES[n % 3]), ("MemberName", agent),
                                                      ("Uniqueid", uid), ("Linkedid", uid), ("HoldTime", "5")])
            if mode == "pubsub":
                while True:
                    msg = await pubsub.get_message(ignore_subscribe_messages=True, timeout=5)
                    assert msg is not None, "no pub/sub message within 5 s"
                    data = json.loads(msg["data"])
                    if data.get("agent") == agent and data["fields"].get("state") == "on_call":
                        break
            else:
                while await watcher.hget(key, "state") != "on_call":
                    pass
            results[mode].append(time.perf_counter() - t0)
            expected += 1
            bridge.server.push_event("AgentComplete", [("Queue", QUEUES[n % 3]), ("MemberName", agent),
                                                       ("Linkedid", uid), ("TalkTime", "30")])
            expected += 1
            await bridge.applied(expected)
            while await pubsub.get_message(ignore_subscribe_messages=True, timeout=0.01) is not None:
                pass
    finally:
        await pubsub.aclose()
        await watcher.aclose()
        await bridge.close()
        await cleanup(prefix)
    return results


async def bare_redis(samples: int) -> list[float]:
    """HSET + PUBLISH from one client, received by another: the floor under any bridge latency."""
    prefix = f"hotline-i5-bench-{os.getpid()}-bare"
    writer, reader = connect_redis(REDIS_URL), connect_redis(REDIS_URL)
    pubsub = reader.pubsub()
    await pubsub.subscribe(f"{prefix}:ch")
    await pubsub.get_message(timeout=1)
    out = []
    try:
        for n in range(samples):
            t0 = time.perf_counter()
            await writer.hset(f"{prefix}:agent", mapping={"state": "on_call", "n": str(n)})
            await writer.publish(f"{prefix}:ch", str(n))
            while (await pubsub.get_message(ignore_subscribe_messages=True, timeout=5)) is None:
                pass
            out.append(time.perf_counter() - t0)
    finally:
        await pubsub.aclose()
        await writer.aclose()
        await reader.aclose()
        await cleanup(prefix)
    return out


async def main_async(args: argparse.Namespace) -> None:
    stream, events, handled = call_stream(args.calls, 50)
    baseline = statistics.median(panoramisk_rate(stream, events) for _ in range(3))
    with tempfile.TemporaryDirectory(prefix="hotline-bench-") as tmp:
        work = Path(tmp)
        ours = await bridge_rate(stream, handled, events, work)
        (work / "bench.db").unlink(missing_ok=True)
        lat = await latency(args.samples, work)
    bare = await bare_redis(args.samples // 2)
    ms = 1000.0
    print(f"\nAMI ingestion ({args.calls} queue calls, {events} events, {handled} handled by the tracker; "
          f"{os.cpu_count()} CPUs)")
    print(f"{'what':<58} {'figure':>16} {'baseline':>22}")
    print(f"{'events/s turned into Redis state (+ SQLite metrics)':<58} {ours:>16,.0f} "
          f"{f'panoramisk parse only: {baseline:,.0f}':>22}")
    print(f"{'  ratio to the baseline':<58} {ours / baseline:>16.3f} {'':>22}")
    print(f"\nAgentConnect -> Redis, 100 calls queued, 50 agents ({len(lat['state'])}+{len(lat['pubsub'])} samples)")
    print(f"{'what':<58} {'p50 ms':>8} {'p99 ms':>8} {'bare HSET+PUBLISH p50/p99':>26}")
    floor = f"{pct(bare, 50) * ms:.2f} / {pct(bare, 99) * ms:.2f}"
    for label, key in (("agent state 'on_call' readable in Redis", "state"),
                       ("pub/sub message received by a console", "pubsub")):
        print(f"{label:<58} {pct(lat[key], 50) * ms:>8.2f} {pct(lat[key], 99) * ms:>8.2f} {floor:>26}")


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--calls", type=int, default=1500)
    parser.add_argument("--samples", type=int, default=200)
    asyncio.run(main_async(parser.parse_args()))
    return 0


if __name__ == "__main__":
    sys.exit(main())
