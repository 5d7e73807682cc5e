"""Fault campaign: SIPp citizen calls through a real `hotline run` while one part at a time fails.

Per fault, N citizen calls (key 1, a spoken description, then the queue; every 4th asks for a callback with key 5)
start evenly over --spread seconds; --fault-after seconds after the first one, the part fails:

  bridge         kill -9 of the `hotline run` process, then it is started again on the same run dir
  asterisk       kill -9 of the project's Asterisk (the hotline restarts it itself)
  redis          kill -9 of the campaign's own redis-server, started again (empty) --hold seconds later
  sqlite-lock    an exclusive lock held on the SQLite file for --hold seconds
  postgres-stop  the campaign's own PostgreSQL (initdb/pg_ctl) stopped immediately, started --hold seconds later

The agents are SIPp phones registered to the hotline (one per five calls); the carrier taking callbacks to citizens
is a SIPp UAS. One row per fault: calls offered, answered, that reached an agent, cases written, lost (an answered
call with no case), duplicated (two cases for one caller), callbacks requested/dialed/dialed twice, seconds from
the part being back until the public /healthz says ok, and seconds /healthz said not ok in the round.
Target: 0 lost, 0 duplicated, healthy within 10 s. Exit status 1 when a row misses it.

Loopback only; fixed ports from --base-port (default 31500, above the test blocks: hotline 31550-31554, Redis 31560,
PostgreSQL 31561, carrier 31562, RTP 31600-32099); SIPp's own ports are picked free. Bounded: every call ends
within 180 s (a call cut by a crash waits 90 s for a BYE that never comes, as a phone waits out the silence).
Usage: python benchmarks/fault_campaign.py [--calls 50] [--faults bridge,asterisk,...] [--json FILE]
"""
from __future__ import annotations

import argparse
import asyncio
import dataclasses
import json
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from tests.support.fault_campaign import FAULTS, CampaignConfig, Ports, format_table, run_campaign  # noqa: E402
from tests.support.ports import PortBlock  # noqa: E402


def main() -> int:
    """Parse options, run the campaign, print the table."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--calls", type=int, default=50, help="citizen calls per fault (default 50)")
    parser.add_argument("--agents", type=int, default=0, help="agents' phones (default: one per five calls)")
    parser.add_argument("--faults", default=",".join(FAULTS), help=f"comma-separated, of {','.join(FAULTS)}")
    parser.add_argument("--spread", type=float, default=30.0, help="the calls start over this many seconds")
    parser.add_argument("--fault-after", type=float, default=10.0, help="seconds after the first call")
    parser.add_argument("--hold", type=float, default=15.0, help="seconds Redis / the database stay away")
    parser.add_argument("--base-port", type=int, default=31500)
    parser.add_argument("--work-dir", type=Path, default=None, help="default: a new folder under var/")
    parser.add_argument("--json", type=Path, default=None, help="also write the rows as JSON here")
    args = parser.parse_args()
    faults = [f.strip() for f in args.faults.split(",") if f.strip()]
    bad = [f for f in faults if f not in FAULTS]
    if bad or not faults:
        parser.error(f"--faults: unknown {', '.join(bad) or '(none given)'}; known: {', '.join(FAULTS)}")
    if not 1 <= args.calls <= 200:
        parser.error("--calls must be 1..200 (the campaign is bounded)")
    (ROOT / "var").mkdir(exist_ok=True)
    work_dir = args.work_dir or Path(tempfile.mkdtemp(prefix="fault-campaign-", dir=ROOT / "var"))
    config = CampaignConfig(calls=args.calls, agents=args.agents, spread_s=args.spread,
                            fault_after_s=args.fault_after, hold_s=args.hold)
    started = time.monotonic()

    def progress(message: str) -> None:
        print(f"[{time.monotonic() - started:6.0f} s] {message}", flush=True)

    block = PortBlock("benchmarks.fault_campaign", args.base_port)
    ports = Ports(block, (args.base_port + 100, args.base_port + 599))
    rows = asyncio.run(run_campaign(work_dir, faults, config, ports, progress))
    print(f"\nFault campaign, {args.calls} calls per fault ({work_dir}):\n")
    print(format_table(rows))
    if args.json:
        args.json.write_text(json.dumps([dataclasses.asdict(r) for r in rows], indent=2, ensure_ascii=False))
    return 0 if all(r.meets_target for r in rows) else 1


if __name__ == "__main__":
    sys.exit(main())
