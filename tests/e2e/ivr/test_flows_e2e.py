"""The flow engine through the real parts: SIPp calls into Asterisk and the FastAGI bridge running the default
flow from config/ivr/default.yaml (keys, timeouts, invalid keys, hang-up mid-prompt, a spoken keyword recognized
by Vosk), and a publish while calls are in progress (they finish on their version; new calls take the new one)."""
from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import pytest
import pytest_asyncio
import yaml

from ivr.prompts import synthesize_speech
from tests.support.flows import DEFAULT_FLOW, prompt_seconds
from tests.support.hotline_process import PROJECT_ROOT, HotlineUnderTest, run_hotline_command, running_hotline
from tests.support.ports import module_ports
from tests.support.probe import Probe
from tests.support.rtp_pcap import wav_to_rtp_pcap
from tests.support.sipp import CitizenCall

pytestmark = [pytest.mark.asterisk, pytest.mark.vosk, pytest.mark.redis]

PORTS = module_ports(__name__)
ENV = {
    "HOTLINE_REDIS_KEY_PREFIX": "hotline-i3-e2e",
    "HOTLINE_MENU_TIMEOUT_SECONDS": "4",
    "HOTLINE_RECORD_MAX_SECONDS": "15",
    "HOTLINE_TRANSFER_DIAL": f"PJSIP/trunk/sip:{{number}}@127.0.0.1:{PORTS.spare(0)}",
}


@pytest_asyncio.fixture(scope="module", loop_scope="session")
async def hotline() -> AsyncIterator[HotlineUnderTest]:
    h = HotlineUnderTest(PROJECT_ROOT / "var" / "test-flows-e2e", ports=PORTS, env=ENV)
    async with running_hotline(h):
        yield h


@pytest_asyncio.fixture(scope="module", loop_scope="session")
async def probe(hotline: HotlineUnderTest) -> AsyncIterator[Probe]:
    p = Probe(hotline)
    yield p
    await p.close()


def _call(probe: Probe, tmp: Path, caller: str, steps: list[Any], **kwargs: Any) -> CitizenCall:
    return CitizenCall(sip_port=probe.settings.sip_port, number=probe.settings.hotline_number, from_user=caller,
                       work_dir=tmp / caller, name=caller, steps=steps, **kwargs)


async def test_default_flow_branches_through_asterisk(hotline: HotlineUnderTest, probe: Probe,
                                                      tmp_path: Path) -> None:
    """Keys, silence, invalid keys, a spoken keyword and a hang-up mid-prompt, as concurrent real calls."""
    welcome = prompt_seconds(tmp_path, "welcome", probe.settings.hotline_number)
    menu = prompt_seconds(tmp_path, "menu", probe.settings.hotline_number)
    to_agent = prompt_seconds(tmp_path, "to_agent", probe.settings.hotline_number)
    speech_wav = synthesize_speech("버스", "ko", tmp_path / "bus.wav", speed=130)
    speech_pcap = tmp_path / "bus.pcap"
    wav_to_rtp_pcap(speech_wav, speech_pcap, pad_seconds=2.5)
    listen_at = int((welcome + menu + 0.6) * 1000)  # just after the menu prompt: the bridge is listening
    calls = {
        "01033300001": _call(probe, tmp_path, "01033300001",  # operator by key, pressed during the menu prompt
                             [("pause", int((welcome + 1.0) * 1000)), ("dtmf", "0"), ("pause", 16000)]),
        "01033300002": _call(probe, tmp_path, "01033300002",  # silence all along: reprompts, then a person
                             [("pause", 62000)], timeout=100),
        "01033300003": _call(probe, tmp_path, "01033300003",  # an invalid key, then 2
                             [("pause", int((welcome + 1.0) * 1000)), ("dtmf", "*"), ("pause", 3500),
                              ("dtmf", "2"), ("pause", 16000)]),
        "01033300004": _call(probe, tmp_path, "01033300004",  # says "버스" (inquiry) instead of pressing 2
                             [("pause", listen_at), ("audio", speech_pcap), ("pause", 18000)], timeout=90),
        "01033300005": _call(probe, tmp_path, "01033300005",  # hangs up during the welcome
                             [("pause", 800)]),
        "01033300006": _call(probe, tmp_path, "01033300006",  # presses 2, hangs up while told "connecting you"
                             [("pause", int((welcome + 1.0) * 1000)), ("dtmf", "2"),
                              ("pause", int(min(1.2, to_agent / 2) * 1000))]),
    }
    results = await asyncio.gather(*(c.run() for c in calls.values()))
    for caller, result in zip(calls, results, strict=True):
        assert result.answered and result.ok, f"{caller}: {result.describe()}"

    def path_of(case: Any) -> list[str]:
        return list(case.menu_path)

    async def queued(caller: str) -> tuple[Any, Any]:
        """The caller's case once they left the queue (they hang up there), and its call record."""
        case = await probe.case_by_caller(caller, until=lambda c: c.status == "abandoned_in_queue")
        assert case is not None and case.status == "abandoned_in_queue", case
        return case, await probe.records.get(case.source_ref)

    operator, record = await queued("01033300001")
    assert path_of(operator) == ["0"] and operator.category == "operator" and record.queue == "operator"
    silent, record = await queued("01033300002")
    assert path_of(silent) == ["no-input", "no-input", "no-input", "fallback:0"] and silent.category == "operator"
    assert record.queue == "operator"
    invalid, record = await queued("01033300003")
    assert path_of(invalid) == ["invalid:*", "2"] and invalid.category == "inquiry" and record.queue == "inquiries"
    spoken, record = await queued("01033300004")
    assert path_of(spoken) == ["speech:버스:2"], spoken
    assert spoken.category == "inquiry" and record.queue == "inquiries"
    gone = await probe.case_by_caller("01033300005", until=lambda c: c.status == "abandoned_in_ivr")
    assert gone.status == "abandoned_in_ivr" and path_of(gone) == []
    # the queue node's prompt is the dialplan's (after the AGI): a hang-up there is still one in the IVR
    left = await probe.case_by_caller("01033300006", until=lambda c: c.status == "abandoned_in_ivr")
    assert left.status == "abandoned_in_ivr" and path_of(left) == ["2"] and left.category == "inquiry", left
    record = await probe.records.get(left.source_ref)
    assert record.outcome == "abandoned_in_ivr" and record.queue in (None, ""), record


async def test_publish_during_live_calls(hotline: HotlineUnderTest, probe: Probe, tmp_path: Path) -> None:
    """A call in progress finishes on the version it started with; calls after the publish take the new one;
    a rollback brings the old one back, all without restarting anything."""
    env = hotline.env
    code, out, err = await run_hotline_command(["flows", "publish", str(DEFAULT_FLOW), "--actor", "tester",
                                                "--comment", "baseline"], env)
    assert code == 0, err[-2000:]
    baseline = int(out.split("version ")[1].split()[0])
    flood = yaml.safe_load(DEFAULT_FLOW.read_text(encoding="utf-8"))
    flood["nodes"]["inquiry"]["category"] = "flood_info"
    flood["nodes"]["complaint_case_number"]["next"] = "queue_inquiries"  # complaints go to inquiries today
    del flood["nodes"]["queue_complaints"]  # else unreachable: the validator would refuse the flow
    flood_file = tmp_path / "flood.yaml"
    flood_file.write_text(yaml.safe_dump(flood, allow_unicode=True), encoding="utf-8")

    # Call A chooses 1 during the welcome and is recording its description when the new flow is published.
    call_a = _call(probe, tmp_path, "01033300011", [("pause", 1000), ("dtmf", "1"), ("pause", 38000)], timeout=90)
    task_a = asyncio.create_task(call_a.run())
    case_a = await probe.case_by_caller("01033300011", timeout=20,
                                        until=lambda c: c.transcript_status == "pending")
    assert case_a is not None and case_a.menu_path == ["1"]
    code, out, err = await run_hotline_command(["flows", "publish", str(flood_file), "--actor", "tester",
                                                "--comment", "flood warning"], env)
    assert code == 0, err[-2000:]
    assert f"version {baseline + 1} is live" in out
    live_a = await probe.live_call(case_a.source_ref)
    assert live_a["ivr_path"] == ["1"], live_a  # A was still in the IVR (recording) when the flow changed

    call_b = _call(probe, tmp_path, "01033300012", [("pause", 1000), ("dtmf", "2"), ("pause", 16000)])
    result_b = await call_b.run()
    assert result_b.ok, result_b.describe()
    result_a = await task_a
    assert result_a.ok, result_a.describe()
    case_b = await probe.case_by_caller("01033300012", until=lambda c: c.status == "abandoned_in_queue")
    assert case_b.category == "flood_info"  # the new version
    record_a = await probe.records.get(case_a.source_ref)
    assert record_a.queue == "complaints", record_a  # the old version, to the end of the call

    code, out, err = await run_hotline_command(["flows", "rollback", str(baseline), "--actor", "tester"], env)
    assert code == 0, err[-2000:]
    call_c = _call(probe, tmp_path, "01033300013", [("pause", 1000), ("dtmf", "2"), ("pause", 16000)])
    assert (await call_c.run()).ok
    case_c = await probe.case_by_caller("01033300013", until=lambda c: c.status == "abandoned_in_queue")
    assert case_c.category == "inquiry"
    code, out, err = await run_hotline_command(["flows", "audit"], env)
    assert code == 0
    lines = [line for line in out.splitlines() if "tester" in line]
    assert "rollback" in lines[0] and f"v{baseline + 1} → v{baseline + 2}" in lines[0]
    assert "flood warning" in lines[1]


class BusyNumber(asyncio.DatagramProtocol):
    """A minimal SIP UAS standing in for the external number: remembers each INVITE and answers 486 Busy."""

    def __init__(self) -> None:
        self.invites: list[str] = []
        self.transport: Any = None

    def connection_made(self, transport: Any) -> None:
        self.transport = transport

    def datagram_received(self, data: bytes, addr: Any) -> None:
        text = data.decode(errors="replace")
        if not text.startswith("INVITE "):
            return  # the ACK of our 486, retransmissions of nothing else matter here
        self.invites.append(text.split("\r\n", 1)[0])
        headers = [line for line in text.split("\r\n") if line.split(":", 1)[0].lower() in
                   ("via", "from", "call-id", "cseq")]
        to = next(line for line in text.split("\r\n") if line.lower().startswith("to:"))
        reply = ["SIP/2.0 486 Busy Here", *headers, f"{to};tag=busy1", "Content-Length: 0", "", ""]
        self.transport.sendto("\r\n".join(reply).encode(), addr)


async def test_transfer_node_dials_the_external_number(hotline: HotlineUnderTest, probe: Probe,
                                                       tmp_path: Path) -> None:
    """A published flow's transfer node: Asterisk dials transfer_dial with the node's number."""
    flow = yaml.safe_load(DEFAULT_FLOW.read_text(encoding="utf-8"))
    flow["nodes"]["main_menu"]["options"].append({"key": "9", "next": "emergency"})
    flow["nodes"]["emergency"] = {"kind": "transfer", "number": "0212345678"}
    flow_file = tmp_path / "transfer.yaml"
    flow_file.write_text(yaml.safe_dump(flow, allow_unicode=True), encoding="utf-8")
    code, out, err = await run_hotline_command(["flows", "publish", str(flow_file), "--actor", "tester"], hotline.env)
    assert code == 0, err[-2000:]
    loop = asyncio.get_running_loop()
    transport, busy = await loop.create_datagram_endpoint(BusyNumber, local_addr=("127.0.0.1", PORTS.spare(0)))
    try:
        welcome = prompt_seconds(tmp_path, "welcome", probe.settings.hotline_number)
        call = _call(probe, tmp_path, "01033300021", [("pause", int((welcome + 1.0) * 1000)), ("dtmf", "9"),
                                                      ("pause", 6000)], hangup="wait", wait_bye_ms=20000)
        result = await call.run()
        assert result.answered and result.ok, result.describe()
        assert result.hung_up_by == "asterisk", result.describe()  # after the external number was busy
    finally:
        transport.close()
    assert busy.invites and busy.invites[0].startswith(f"INVITE sip:0212345678@127.0.0.1:{PORTS.spare(0)}")
    case = await probe.case_by_caller("01033300021", until=lambda c: list(c.menu_path)[-1:] == ["transfer:0212345678"])
    assert list(case.menu_path) == ["9", "transfer:0212345678"], case
