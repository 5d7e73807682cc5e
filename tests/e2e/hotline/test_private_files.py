"""A real `hotline run` keeps its citizens' data from other local users: after a complaint call with a spoken
description answered by an agent, every folder under the run folder is 0700 and every file 0600 — the database
and its WAL, the description and whole-call recordings Asterisk wrote, Asterisk's logs and databases, the rendered
configuration with the AMI and SIP secrets, the secrets file and the prompt audio — including files an older
version left readable."""
from __future__ import annotations

import asyncio
import os
import shutil
import stat
from collections.abc import AsyncIterator
from pathlib import Path

import pytest
import pytest_asyncio

from cases import CaseStore
from ivr.prompts import synthesize_speech
from storage import create_engine_from_url
from tests.support.hotline_process import PROJECT_ROOT, HotlineUnderTest
from tests.support.ports import module_ports
from tests.support.rtp_pcap import wav_to_rtp_pcap
from tests.support.sipp import AgentPhone, CitizenCall

pytestmark = [pytest.mark.asterisk, pytest.mark.redis, pytest.mark.vosk]

PORTS = module_ports(__name__)
ENV = {
    "HOTLINE_REDIS_KEY_PREFIX": f"hotline-test-private-files-{PORTS.start}",
}


def mode(path: Path) -> int:
    return stat.S_IMODE(os.lstat(path).st_mode)


@pytest_asyncio.fixture(scope="module", loop_scope="session")
async def hotline() -> AsyncIterator[HotlineUnderTest]:
    h = HotlineUnderTest(PROJECT_ROOT / "var" / "test-private-files", ports=PORTS, env=ENV)
    # What an older version left: a world-readable run folder and recording.
    shutil.rmtree(h.run_dir, ignore_errors=True)
    old = os.umask(0o022)
    try:
        (h.run_dir / "recordings").mkdir(parents=True)
        (h.run_dir / "recordings" / "C-OLD.wav").write_bytes(b"RIFF")
    finally:
        os.umask(old)
    assert mode(h.run_dir) == 0o755 and mode(h.run_dir / "recordings" / "C-OLD.wav") == 0o644
    await h.start(keep_run_dir=True)
    try:
        yield h
    finally:
        code = await h.stop()
    assert code == 0, f"hotline run did not stop cleanly: {h.log_tail()}"


async def test_every_file_of_a_running_hotline_is_private(hotline: HotlineUnderTest, tmp_path: Path) -> None:
    settings = hotline.settings()
    caller = "01018400001"
    wav = synthesize_speech("도로에 쓰레기가 많이 쌓여 있어요.", "ko", tmp_path / "speech.wav", speed=130)
    speech = tmp_path / "speech.pcap"
    wav_to_rtp_pcap(wav, speech, pad_seconds=4.0)
    agent = settings.agents[0]
    async with AgentPhone(agent.name, agent.sip_secret, settings.sip_port, talk_ms=3000,
                          work_dir=tmp_path / "agent") as phone:
        call = CitizenCall(sip_port=settings.sip_port, number=settings.hotline_number, from_user=caller,
                           work_dir=tmp_path / "caller", name="private",
                           steps=[("pause", 1500), ("dtmf", "1"), ("pause", 5500), ("audio", speech)],
                           hangup="wait", wait_bye_ms=90000, timeout=150)
        result = await call.run()
        assert result.answered and result.ok, result.describe()
        await phone.wait_call(timeout=30)
    engine = create_engine_from_url(settings.database_url)
    try:
        cases = CaseStore(engine)
        case = None
        for _ in range(120):
            found = [c for c in await cases.list_recent(limit=50) if c.caller_number == caller]
            case = found[0] if found else None
            if case is not None and case.transcript_status == "done":
                break
            await asyncio.sleep(0.5)
        assert case is not None and case.transcript_status == "done", case
        assert case.recording_path
    finally:
        await engine.dispose()
    run = hotline.run_dir
    recording = Path(case.recording_path)
    call_legs = list((run / "recordings" / "calls").glob("*.wav"))
    assert recording.is_file() and recording.parent == run / "recordings"
    assert call_legs, "no whole-call recording was written"
    # Written by Asterisk itself (no one in the bridge touches them): its inherited umask made them private.
    by_asterisk = [run / "asterisk" / "log" / "messages", run / "asterisk" / "log" / "queue_log",
                   run / "asterisk" / "db" / "astdb.sqlite3"]
    must_exist = [run / "hotline.db", run / "hotline.db-wal", run / "secrets.yaml", recording, *call_legs,
                  run / "asterisk" / "etc" / "manager.conf", run / "asterisk" / "etc" / "pjsip.conf",
                  run / "recordings" / "C-OLD.wav", hotline.log_path, *by_asterisk]
    for path in must_exist:
        assert path.is_file(), path
    assert list((run / "prompts").glob("*.wav")), "no prompt audio"
    loose = []
    for root, dirs, files in os.walk(run):
        for name in dirs:
            if mode(Path(root, name)) != 0o700:
                loose.append(f"{Path(root, name)} {oct(mode(Path(root, name)))}")
        for name in files:
            path = Path(root, name)
            if not path.is_symlink() and mode(path) & 0o077:
                loose.append(f"{path} {oct(mode(path))}")
    assert mode(run) == 0o700
    assert not loose, "readable by other local users:\n" + "\n".join(loose)
    for path in must_exist:
        assert mode(path) == 0o600, (path, oct(mode(path)))
