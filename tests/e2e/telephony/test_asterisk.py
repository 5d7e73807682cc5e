"""Real Asterisk 16 + SIPp: the rendered config starts, registers agents, routes citizen calls to the FastAGI IVR."""
from __future__ import annotations

import asyncio
import os
import socket
import struct
from itertools import pairwise
from pathlib import Path

import pytest
from panoramisk import Manager

from telephony import AsteriskConsole, agi_token
from telephony.asterisk_process import AsteriskProcess, AsteriskStartError, render_asterisk_config
from tests.support.asterisk_fixture import (
    TEST_AGI_PORT,
    TEST_AGI_SECRET,
    FastAgiStub,
    asterisk_pids_using,
    espeak_wav,
    make_test_config,
)
from tests.support.ports import module_ports
from tests.support.rtp_pcap import wav_to_rtp_pcap
from tests.support.sipp import AgentPhone, CitizenCall, register_agent, run_citizen_call

pytestmark = [pytest.mark.asterisk, pytest.mark.timeout(120)]

CALLER = "13800138000"
PORTS = module_ports(__name__)  # for the Asterisks a test starts beside the shared one (tests.support.asterisk_fixture)


async def ami_login(host: str, port: int, username: str, secret: str) -> Manager:
    """Connect and log in with panoramisk; the caller closes it."""
    manager = Manager(host=host, port=port, username=username, secret=secret, ping_delay=60)
    await asyncio.wait_for(manager.connect(), timeout=5)
    for _ in range(50):
        if manager.authenticated_future is not None:
            await asyncio.wait_for(manager.authenticated_future, timeout=5)
            break
        if manager.authenticated:
            break
        await asyncio.sleep(0.05)
    return manager


async def test_asterisk_starts_and_ami_login_works(asterisk: AsteriskProcess, asterisk_config) -> None:
    assert asterisk.running and asterisk.pid
    assert asterisk.start_seconds is not None and asterisk.start_seconds < 10
    manager = await ami_login("127.0.0.1", asterisk_config.ami_port, asterisk_config.ami_username,
                              asterisk_config.ami_secret)
    try:
        assert manager.authenticated
        pong = await asyncio.wait_for(manager.send_action({"Action": "Ping"}), timeout=5)
        assert pong.success, pong
        # CLI commands go through the control socket: the AMI account holds no `command` class.
        text = await AsteriskConsole(asterisk_config.control_socket).command("pjsip show endpoints")
        assert "trunk" in text and "agent1" in text
    finally:
        manager.close()
    bad = await ami_login("127.0.0.1", asterisk_config.ami_port, asterisk_config.ami_username, "wrong-secret")
    try:
        assert not bad.authenticated
    finally:
        bad.close()


async def test_render_is_idempotent_and_keeps_runtime_expressions(tmp_path: Path) -> None:
    cfg = make_test_config(tmp_path / "ast")
    conf = render_asterisk_config(cfg)
    first = {p.name: p.read_text() for p in conf.parent.glob("*.conf")}
    assert render_asterisk_config(cfg) == conf
    assert {p.name: p.read_text() for p in conf.parent.glob("*.conf")} == first
    ext = first["extensions.conf"]
    assert "exten => 12345,1,NoOp(citizen call from ${CALLERID(num)})" in ext
    # every AGI URL carries the channel's token, made from the secret in Asterisk's environment (not in any file)
    assert (f"AGI(agi://127.0.0.1:{TEST_AGI_PORT}/ivr?auth=${{SHA1(${{ENV(HOTLINE_AGI_SECRET)}}:${{UNIQUEID}})}}"
            "&linkedid=${CHANNEL(linkedid)},${HOTLINE_DIALED})") in ext
    assert ext.count("AGI(agi://") == ext.count("?auth=${SHA1(${ENV(HOTLINE_AGI_SECRET)}:${UNIQUEID})}") == 5
    assert '${IF($["${HOTLINE_QUEUE_MAXWAIT}" = ""]?600:${HOTLINE_QUEUE_MAXWAIT})}' in ext
    assert "{{" not in "".join(first.values())
    assert "member => PJSIP/agent1,0,agent1,PJSIP/agent1" in first["queues.conf"]
    assert "endpoint_identifier_order = username,ip" in first["pjsip.conf"]


async def test_stop_leaves_no_asterisk_behind(tmp_path: Path) -> None:
    rtp_start, rtp_end = PORTS.rtp_range()
    cfg = make_test_config(tmp_path / "ast", sip_port=PORTS.hotline("sip"), ami_port=PORTS.hotline("ami"),
                           agi_port=PORTS.hotline("agi"), rtp_port_start=rtp_start, rtp_port_end=rtp_end)
    proc = AsteriskProcess(cfg, env={"HOTLINE_REDIS_URL": "redis://:pw@127.0.0.1:6379/0"})
    await proc.start()
    pid = proc.pid
    assert proc.running and asterisk_pids_using(cfg.asterisk_conf) == [pid]
    # What its (E)AGI programs inherit: handed over in the environment, not on a command line.
    assert b"HOTLINE_REDIS_URL=redis://:pw@127.0.0.1:6379/0" in Path(f"/proc/{pid}/environ").read_bytes().split(b"\0")
    await proc.stop()
    await proc.stop()  # idempotent
    assert not proc.running and proc.returncode is not None
    assert asterisk_pids_using(cfg.asterisk_conf) == []
    with pytest.raises(ProcessLookupError):
        os.kill(pid, 0)


async def test_sip_port_in_use_is_a_clear_error(tmp_path: Path) -> None:
    sip, ami = PORTS.spare(0), PORTS.spare(1)
    cfg = make_test_config(tmp_path / "ast", sip_port=sip, ami_port=ami)
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as squatter:
        squatter.bind(("127.0.0.1", sip))
        with pytest.raises(AsteriskStartError) as info:
            await AsteriskProcess(cfg).start()
    message = str(info.value)
    assert message == f"port {sip}/udp (SIP) is already in use on 127.0.0.1"
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as squatter:
        squatter.bind(("127.0.0.1", ami))
        squatter.listen()
        with pytest.raises(AsteriskStartError, match=rf"^port {ami}/tcp \(AMI\) is already in use on 127\.0\.0\.1$"):
            await AsteriskProcess(cfg).start()
    assert asterisk_pids_using(cfg.asterisk_conf) == []


async def test_missing_binary_is_a_clear_error(tmp_path: Path) -> None:
    proc = AsteriskProcess(make_test_config(tmp_path / "ast"), binary="asterisk-not-installed")
    with pytest.raises(AsteriskStartError) as info:
        await proc.start()
    assert str(info.value) == (
        "Asterisk is not installed: 'asterisk-not-installed' not found on PATH (run `make setup`)"
    )
    assert "\n" not in str(info.value)


async def test_early_exit_and_no_answer_are_clear_errors(tmp_path: Path) -> None:
    crashing = tmp_path / "fake-asterisk"
    crashing.write_text("#!/bin/sh\necho 'Loading modules'\n"
                        "echo 'ERROR: cannot open /nonexistent/asterisk.ctl'\nexit 3\n")
    crashing.chmod(0o755)
    cfg = make_test_config(tmp_path / "ast", sip_port=PORTS.spare(2), ami_port=PORTS.spare(3))
    with pytest.raises(AsteriskStartError) as info:
        await AsteriskProcess(cfg, binary=str(crashing)).start()
    assert str(info.value) == (
        "Asterisk exited with status 3 while starting: ERROR: cannot open /nonexistent/asterisk.ctl"
    )
    silent = tmp_path / "silent-asterisk"
    silent.write_text("#!/bin/sh\nexec sleep 60\n")
    silent.chmod(0o755)
    proc = AsteriskProcess(cfg, binary=str(silent))
    with pytest.raises(AsteriskStartError, match=r"^Asterisk was not ready within 1 s \(AMI: "):
        await proc.start(ready_timeout=1.0)
    assert not proc.running and proc.returncode is not None


async def test_agent_registers_with_right_password_only(asterisk, asterisk_config, tmp_path: Path) -> None:
    good = await register_agent("agent2", "agent2-pass", asterisk_config.sip_port, 5999, work_dir=tmp_path)
    assert good.registered, good.sipp.describe()
    await register_agent("agent2", "agent2-pass", asterisk_config.sip_port, 5999, expires=0, work_dir=tmp_path)
    bad = await register_agent("agent2", "not-the-password", asterisk_config.sip_port, 5999, work_dir=tmp_path)
    assert not bad.registered and bad.refused_status in (401, 403), bad.sipp.describe()


async def test_call_to_other_number_is_rejected(asterisk, asterisk_config, agi_stub: FastAgiStub,
                                                tmp_path: Path) -> None:
    agi_stub.reset([])
    result = await run_citizen_call(asterisk_config.sip_port, number="99999", from_user=CALLER,
                                    work_dir=tmp_path, timeout=20)
    assert result.ok and result.final_status == 404, result.describe()
    # A source address that is not the trunk (nor an agent) is not let in at all.
    stranger = await CitizenCall(asterisk_config.sip_port, number="12345", local_ip="127.0.0.2",
                                 work_dir=tmp_path, name="stranger", timeout=20).run()
    assert not stranger.answered and stranger.final_status in (401, 403, 407), stranger.describe()
    assert agi_stub.sessions.empty()


async def test_hotline_call_reaches_agi_and_delivers_dtmf(asterisk, asterisk_config, agi_stub: FastAgiStub,
                                                          tmp_path: Path) -> None:
    agi_stub.reset(["WAIT FOR DIGIT 5000"])
    call = CitizenCall(asterisk_config.sip_port, number="12345", from_user=CALLER, stock_dtmf=True,
                       steps=[("pause", 800), ("dtmf", "1"), ("pause", 500)], hangup="wait",
                       wait_bye_ms=10000, work_dir=tmp_path, timeout=30)
    result, session = await asyncio.gather(call.run(), agi_stub.next_session(timeout=25))
    # the dialplan hands the call's linkedid over in the URL (the caller's channel starts the call), after the
    # channel's token, which Asterisk made from the secret in its environment
    uniqueid = session.env["agi_uniqueid"]
    assert session.env["agi_network_script"] == f"ivr?auth={agi_token(TEST_AGI_SECRET, uniqueid)}&linkedid={uniqueid}"
    assert session.env["agi_callerid"] == CALLER
    assert session.env["agi_extension"] == "12345"
    assert session.replies == [f"200 result={ord('1')}"], session.replies
    assert result.ok and result.answered and result.hung_up_by == "asterisk", result.describe()


async def test_repeated_digits_all_arrive(asterisk, asterisk_config, agi_stub: FastAgiStub, tmp_path: Path) -> None:
    agi_stub.reset(["WAIT FOR DIGIT 5000"] * 3)
    call = CitizenCall(asterisk_config.sip_port, number="12345", from_user=CALLER,
                       steps=[("pause", 800), ("dtmf", "1"), ("dtmf", "1"), ("dtmf", "#")], hangup="wait",
                       wait_bye_ms=10000, work_dir=tmp_path, timeout=30)
    result, session = await asyncio.gather(call.run(), agi_stub.next_session(timeout=25))
    assert session.replies == ["200 result=49", "200 result=49", "200 result=35"], session.replies
    assert result.ok, result.describe()


async def test_speech_is_recorded(asterisk, asterisk_config, agi_stub: FastAgiStub, tmp_path: Path) -> None:
    wav = espeak_wav("The street light on Main Road has been broken for a week.", tmp_path / "speech.wav")
    pcap = tmp_path / "speech.pcap"
    seconds = wav_to_rtp_pcap(wav, pcap, pad_seconds=3.0)
    assert seconds > 3.0
    target = asterisk_config.recordings_dir / "t"
    (target.with_suffix(".wav")).unlink(missing_ok=True)
    agi_stub.reset([f"RECORD FILE {target} wav # 10000 0 s=2"])
    call = CitizenCall(asterisk_config.sip_port, number="12345", from_user=CALLER,
                       steps=[("pause", 300), ("audio", pcap)], hangup="wait", wait_bye_ms=15000,
                       work_dir=tmp_path, timeout=40)
    result, session = await asyncio.gather(call.run(), agi_stub.next_session(timeout=35))
    assert len(session.replies) == 1 and session.replies[0].startswith("200 result="), session.replies
    recorded = target.with_suffix(".wav")
    assert recorded.is_file() and recorded.stat().st_size > 44 + 8000, session.replies  # > 0.5 s of audio
    assert result.ok, result.describe()


async def test_queue_rings_registered_agent(asterisk, asterisk_config, agi_stub: FastAgiStub,
                                            tmp_path: Path) -> None:
    agi_stub.reset(['SET VARIABLE HOTLINE_QUEUE "complaints"', 'SET VARIABLE HOTLINE_QUEUE_MAXWAIT "20"'])
    async with AgentPhone("agent1", "agent1-pass", asterisk_config.sip_port, talk_ms=1500,
                          work_dir=tmp_path) as phone:
        call = CitizenCall(asterisk_config.sip_port, number="12345", from_user=CALLER, steps=[],
                           hangup="wait", wait_bye_ms=20000, work_dir=tmp_path, timeout=40)
        result = await call.run()
        agent = await phone.wait_call(timeout=10)
    assert phone.answered, agent.describe()
    assert result.ok and result.hung_up_by == "asterisk", result.describe()
    session = await agi_stub.next_session(timeout=5)
    assert session.replies == ["200 result=1", "200 result=1"]


def test_wav_to_rtp_pcap_layout(tmp_path: Path) -> None:
    import wave

    wav = tmp_path / "tone.wav"
    with wave.open(str(wav), "wb") as fh:
        fh.setnchannels(1)
        fh.setsampwidth(2)
        fh.setframerate(8000)
        fh.writeframes(struct.pack("<h", 1000) * 8000)  # 1 s
    pcap = tmp_path / "tone.pcap"
    assert wav_to_rtp_pcap(wav, pcap, pad_seconds=0.5) == pytest.approx(1.5)
    data = pcap.read_bytes()
    assert struct.unpack("<IHHiIII", data[:24])[0] == 0xA1B2C3D4
    offset, stamps, seqs, tss = 24, [], [], []
    while offset < len(data):
        sec, usec, incl, _ = struct.unpack("<IIII", data[offset:offset + 16])
        frame = data[offset + 16: offset + 16 + incl]
        rtp = frame[14 + 20 + 8:]
        _, pt, seq, ts, _ = struct.unpack("!BBHII", rtp[:12])
        assert pt & 0x7F == 0 and len(rtp) == 12 + 160
        stamps.append(sec + usec / 1e6)
        seqs.append(seq)
        tss.append(ts)
        offset += 16 + incl
    assert len(stamps) == 75
    assert all(abs((b - a) - 0.02) < 1e-6 for a, b in pairwise(stamps))
    assert all((b - a) % 65536 == 1 for a, b in pairwise(seqs))
    assert all((b - a) % 2**32 == 160 for a, b in pairwise(tss))
    last_payload = data[-160:]
    assert last_payload == b"\xff" * 160
