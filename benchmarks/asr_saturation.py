"""Speech recognition saturated: N concurrent complaint calls (SIPp, each describing the problem aloud, no agent
free) into a real `hotline run` whose Vosk pool has one batch worker. Prints how long each caller spent between the
end of their description and joining the queue, when each transcript landed, and how calls ended.

    PYTHONPATH=. .venv/bin/python benchmarks/asr_saturation.py [--calls 30] [--workers 1]

Loopback only; ports 30800-31299 (above the test blocks of tests/support/ports.py); the run directory is
var/bench-asr-saturation."""
from __future__ import annotations

import argparse
import asyncio
import json
import statistics
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))  # run as a plain script

import redis.asyncio as aioredis  # noqa: E402

from cases import CaseStore  # noqa: E402
from queueing import CallRecordStore  # noqa: E402
from storage import create_engine_from_url  # noqa: E402
from tests.support.hotline_process import HotlineUnderTest  # noqa: E402
from tests.support.ports import PortBlock  # noqa: E402
from tests.support.rtp_pcap import wav_to_rtp_pcap  # noqa: E402
from tests.support.sipp import CitizenCall  # noqa: E402
from tests.support.speech import synthesize  # noqa: E402

BASE_PORT = 30800
TEXTS = [
    "우리 집 앞 도로에 쓰레기가 많이 쌓여 있어요. 냄새가 심하고 고양이들이 봉투를 찢어 놓았습니다. 빨리 치워 주세요.",
    "하수도가 막혀서 비가 오면 길에 물이 넘칩니다. 지난주부터 계속 그래요. 확인해 주시기 바랍니다.",
    "보도블록이 깨져서 할머니께서 넘어지실 뻔했습니다. 학교 앞이라 아이들도 위험합니다. 고쳐 주세요.",
    "가로등이 일주일째 꺼져 있어서 밤에 골목이 너무 어둡습니다. 무서워서 다니기가 힘들어요.",
    "식당 뒤에 음식물 쓰레기가 버려져 있어 위생이 걱정됩니다. 벌레도 많이 생겼어요. 단속해 주세요.",
]


def _figures(values: list[float]) -> str:
    if not values:
        return "-"
    return (f"min {min(values):.1f}  median {statistics.median(values):.1f}  max {max(values):.1f}"
            f"  (n={len(values)})")


async def run(calls: int, workers: int, queue_wait_ms: int) -> int:
    """Run the measurement; 0 when every caller was queued and every case transcribed."""
    block = PortBlock("benchmarks.asr_saturation", BASE_PORT)
    hotline = HotlineUnderTest(ROOT / "var" / "bench-asr-saturation", ports=block, env={
        "HOTLINE_ASR_WORKERS": str(workers),
        "HOTLINE_RTP_PORT_START": str(BASE_PORT + 100), "HOTLINE_RTP_PORT_END": str(BASE_PORT + 499),
        "HOTLINE_REDIS_KEY_PREFIX": f"hotline-bench-asr-saturation-{BASE_PORT}",
    })
    await hotline.start()
    settings = hotline.settings()
    engine = create_engine_from_url(settings.database_url)
    cases, records = CaseStore(engine), CallRecordStore(engine)
    redis = aioredis.Redis.from_url(settings.redis_url, decode_responses=True)
    pubsub = redis.pubsub()
    await pubsub.subscribe(f"{settings.redis_key_prefix}:events")
    recorded: dict[str, float] = {}
    queued: dict[str, float] = {}
    transcribed: dict[str, float] = {}

    async def watch() -> None:
        while True:
            message = await pubsub.get_message(ignore_subscribe_messages=True, timeout=0.5)
            if message is None:
                continue
            event = json.loads(message["data"])
            linkedid, fields, at = event["linkedid"], event["fields"], float(event["at"])
            if "recorded" in (fields.get("ivr_path") or []):
                recorded.setdefault(linkedid, at)
            if fields.get("state") == "queued":
                queued.setdefault(linkedid, at)
            if fields.get("transcript_status") == "done" and fields.get("transcript"):
                transcribed.setdefault(linkedid, at)

    work = hotline.run_dir / "sipp"
    pcaps = []
    for index, text in enumerate(TEXTS):
        wav = synthesize(text, work / f"description-{index}.wav", speed=130)
        pcap = work / f"description-{index}.pcap"
        wav_to_rtp_pcap(wav, pcap, pad_seconds=4.0)
        pcaps.append(pcap)
    callers = [f"010555{20000 + i}" for i in range(calls)]
    watcher = asyncio.create_task(watch())
    started = time.time()
    try:
        results = await asyncio.gather(*(
            CitizenCall(sip_port=settings.sip_port, number=settings.hotline_number, from_user=caller,
                        work_dir=work / f"caller-{i}", name=f"bench-{i}",
                        steps=[("pause", 1500), ("dtmf", "1"), ("pause", 5500), ("audio", pcaps[i % len(pcaps)]),
                               ("pause", queue_wait_ms)], hangup="caller", timeout=queue_wait_ms / 1000 + 120).run()
            for i, caller in enumerate(callers)))
        last_call_end = time.time()
        for _ in range(600):  # transcripts still on their way (one worker: minutes for 30 descriptions)
            listed = await cases.list_recent(limit=calls + 50)
            found = {c.caller_number: c for c in listed if c.caller_number in callers}
            if all(c.transcript_status in ("done", "failed") for c in found.values()) and len(found) == calls:
                break
            await asyncio.sleep(0.5)
        all_done = time.time()
        listed = await cases.list_recent(limit=calls + 50)
        by_caller = {c.caller_number: c for c in listed if c.caller_number in callers}
        ids = [c.source_ref for c in by_caller.values()]
        tails = [queued[i] - recorded[i] for i in ids if i in queued and i in recorded]
        after_queue = [transcribed[i] - queued[i] for i in ids if i in transcribed and i in queued]
        outcomes: dict[str, int] = {}
        for linkedid in ids:
            record = await records.get(linkedid)
            key = record.outcome if record is not None else "no record"
            outcomes[key] = outcomes.get(key, 0) + 1
        transcripts = [c.transcript_status for c in by_caller.values()]
        print(f"ASR saturation: {calls} concurrent complaint calls, asr_workers={workers}, no agent free")
        print(f"  calls answered                 {sum(r.answered for r in results)} / {calls}")
        print(f"  cases written                  {len(by_caller)}")
        print(f"  callers queued                 {len(tails)}")
        print(f"  IVR tail (recorded -> queued)  {_figures(tails)} s")
        print(f"  transcript after queue join    {_figures(after_queue)} s")
        print(f"  transcripts done / failed      {transcripts.count('done')} / {transcripts.count('failed')}")
        print(f"  call outcomes                  {outcomes}")
        print(f"  last transcript after the calls ended: {max(0.0, all_done - last_call_end):.1f} s "
              f"(whole run {all_done - started:.0f} s)")
        ok = len(tails) == calls and transcripts.count("done") == calls
        return 0 if ok else 1
    finally:
        watcher.cancel()
        await asyncio.gather(watcher, return_exceptions=True)
        await pubsub.aclose()
        await redis.aclose()
        await engine.dispose()
        await hotline.stop()


def main() -> int:
    """Parse arguments and run."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--calls", type=int, default=30)
    parser.add_argument("--workers", type=int, default=1, help="asr_workers of the hotline")
    parser.add_argument("--queue-wait", type=int, default=60000, help="ms each caller waits in the queue")
    args = parser.parse_args()
    if not 1 <= args.calls <= 60:
        parser.error("--calls must be from 1 to 60")
    return asyncio.run(run(args.calls, args.workers, args.queue_wait))


if __name__ == "__main__":
    sys.exit(main())
