"""SIPp test driver: citizen calls into the hotline and agent softphones, scenarios built from Python."""
from __future__ import annotations

import asyncio
import contextlib
import os
import re
import shutil
import signal
import socket
import tempfile
import time
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from xml.sax.saxutils import escape, quoteattr

from tests.support.rtp_pcap import RtpStream, dtmf_rtp_pcap

STOCK_DTMF_DIR = Path("/usr/share/sip-tester")
_DTMF_NAMES = {"*": "star", "#": "pound"}
# Final failure responses a citizen call may get; anything else is an unexpected message (SIPp fails the call).
_REJECT_CODES = (400, 401, 403, 404, 407, 408, 480, 484, 486, 487, 488, 500, 502, 503, 603)


# The SDP offer/answer of every scenario: PCMU plus RFC 4733 telephone-events (SIPp fills the [fields]).
_SDP = """v=0
o=- 53655765 2353687637 IN IP[local_ip_type] [local_ip]
s=-
c=IN IP[media_ip_type] [media_ip]
t=0 0
m=audio [media_port] RTP/AVP 0 101
a=rtpmap:0 PCMU/8000
a=rtpmap:101 telephone-event/8000
a=fmtp:101 0-16
a=ptime:20
a=sendrecv
"""


class SippError(RuntimeError):
    """SIPp is missing, or a scenario could not be run; one line naming what was wrong."""


def sipp_binary() -> str:
    """Path of the sipp executable, or a clear error."""
    found = shutil.which("sipp")
    if found is None:
        raise SippError("SIPp is not installed: 'sipp' not found on PATH (run `make setup`, Debian package sip-tester)")
    return found


def free_port(host: str = "127.0.0.1", kind: int = socket.SOCK_DGRAM, span: int = 1) -> int:
    """A port p such that p..p+span-1 are free for UDP (and TCP when kind is SOCK_STREAM) on host right now."""
    for _ in range(200):
        with socket.socket(socket.AF_INET, kind) as probe:
            probe.bind((host, 0))
            base = probe.getsockname()[1]
        if base + span > 65535:
            continue
        ok = True
        for port in range(base, base + span):
            for k in {kind, socket.SOCK_DGRAM}:
                with socket.socket(socket.AF_INET, k) as sock:
                    try:
                        sock.bind((host, port))
                    except OSError:
                        ok = False
            if not ok:
                break
        if ok:
            return base
    raise SippError(f"no run of {span} free ports found on {host}")


@dataclass
class SippResult:
    """What one SIPp run left behind: exit status, stderr tail, error log and <log> action lines."""

    returncode: int | None
    stderr_tail: str
    errors: str
    log: str
    seconds: float
    timed_out: bool = False

    @property
    def ok(self) -> bool:
        """SIPp exited 0 (every call of the scenario succeeded)."""
        return self.returncode == 0 and not self.timed_out

    def marks(self) -> list[str]:
        """The scenario's <log> messages, in order."""
        return [line.strip() for line in self.log.splitlines() if line.strip()]

    def describe(self) -> str:
        """One line for assertion messages."""
        err = " | ".join(line for line in self.errors.splitlines() if line.strip())[-400:]
        tail = " | ".join(line for line in self.stderr_tail.splitlines() if line.strip())[-200:]
        return (f"sipp rc={self.returncode} timed_out={self.timed_out} marks={self.marks()} errors={err!r} "
                f"stderr={tail!r}")


class SippRun:
    """One SIPp child process running one scenario file, with files in work_dir."""

    def __init__(self, name: str, scenario_xml: str, args: Sequence[str], work_dir: Path, timeout: float) -> None:
        self.name = name
        self.work_dir = Path(work_dir)
        self.work_dir.mkdir(parents=True, exist_ok=True)
        self.scenario = self.work_dir / f"{name}.xml"
        self.scenario.write_text(scenario_xml, encoding="utf-8")
        self.error_file = self.work_dir / f"{name}.errors.log"
        self.log_file = self.work_dir / f"{name}.marks.log"
        self.message_file = self.work_dir / f"{name}.messages.log"
        self.stdout_file = self.work_dir / f"{name}.stdout.log"
        for stale in (self.error_file, self.log_file, self.message_file):
            stale.unlink(missing_ok=True)
        self.args = list(args)
        self.timeout = timeout
        self._proc: asyncio.subprocess.Process | None = None
        self._started = 0.0
        self.result: SippResult | None = None

    async def start(self) -> None:
        """Spawn sipp (own process group, stdin closed)."""
        argv = [
            sipp_binary(),
            *self.args,
            "-sf", str(self.scenario),
            "-m", "1",
            "-nostdin",
            "-aa",
            "-trace_err", "-error_file", str(self.error_file),
            "-trace_logs", "-log_file", str(self.log_file),
            "-trace_msg", "-message_file", str(self.message_file),
            "-timeout", f"{max(1, int(self.timeout))}s", "-timeout_error",
        ]  # fmt: skip
        self._started = time.monotonic()
        out = await asyncio.to_thread(open, self.stdout_file, "wb")  # handed to sipp, which keeps its own copy
        try:
            self._proc = await asyncio.create_subprocess_exec(
                *argv,
                cwd=self.work_dir,
                stdin=asyncio.subprocess.DEVNULL,
                stdout=out,
                stderr=asyncio.subprocess.PIPE,
                start_new_session=True,
            )
        finally:
            out.close()

    @property
    def running(self) -> bool:
        """True while sipp is alive."""
        return self._proc is not None and self._proc.returncode is None

    async def wait(self, timeout: float | None = None) -> SippResult:
        """Wait for sipp to end (killing it after timeout, default its own -timeout + 5 s) and collect the result."""
        assert self._proc is not None, "start() first"
        if self.result is not None:
            return self.result
        timed_out = False
        try:
            _, stderr = await asyncio.wait_for(self._proc.communicate(), timeout=timeout or self.timeout + 5.0)
        except TimeoutError:
            timed_out = True
            await self.kill()
            stderr = await self._read_rest()
        self.result = SippResult(
            returncode=self._proc.returncode,
            stderr_tail=(stderr or b"").decode(errors="replace")[-2000:],
            errors=_read(self.error_file),
            log=_read(self.log_file),
            seconds=time.monotonic() - self._started,
            timed_out=timed_out,
        )
        return self.result

    async def _read_rest(self) -> bytes:
        assert self._proc is not None
        if self._proc.stderr is None:
            return b""
        with contextlib.suppress(asyncio.TimeoutError, OSError):
            return await asyncio.wait_for(self._proc.stderr.read(), timeout=1.0)
        return b""

    async def kill(self) -> None:
        """Stop sipp now (SIGTERM, then SIGKILL) and reap it."""
        proc = self._proc
        if proc is None or proc.returncode is not None:
            return
        for sig, grace in ((signal.SIGTERM, 2.0), (signal.SIGKILL, 5.0)):
            with contextlib.suppress(ProcessLookupError):
                os.killpg(proc.pid, sig)
            try:
                await asyncio.wait_for(proc.wait(), timeout=grace)
                return
            except TimeoutError:
                continue
        raise SippError(f"sipp pid {proc.pid} did not die after SIGKILL")

    async def run(self) -> SippResult:
        """Start and wait."""
        await self.start()
        return await self.wait()


def _read(path: Path) -> str:
    try:
        return path.read_text(encoding="utf-8", errors="replace")
    except OSError:
        return ""


def _mark(message: str, next_label: str | None = None) -> str:
    nxt = f" next={quoteattr(next_label)}" if next_label else ""
    return f'<nop{nxt}><action><log message={quoteattr(message)}/></action></nop>'


def _wait_bye(ms: int, label: str) -> str:
    """Wait ms for a BYE (hang-up from Asterisk -> 'got_bye'), else go on at label."""
    return (
        f'<recv request="BYE" timeout="{max(1, int(ms))}" ontimeout="{label}" next="got_bye"/>\n'
        f'<label id="{label}"/>'
    )


# ---------------------------------------------------------------------------------------------- citizen call


@dataclass
class CallResult:
    """A citizen call's outcome: SIPp's result plus the final INVITE response and who hung up."""

    sipp: SippResult
    final_status: int | None
    hung_up_by: str | None  # "caller", "asterisk" or None (never answered / failed)

    @property
    def answered(self) -> bool:
        """The hotline answered (200 OK to the INVITE)."""
        return self.final_status == 200

    @property
    def ok(self) -> bool:
        """SIPp ran the scenario to its end (answered and hung up cleanly, or cleanly rejected)."""
        return self.sipp.ok

    def describe(self) -> str:
        """One line for assertion messages."""
        return f"final={self.final_status} hung_up_by={self.hung_up_by} {self.sipp.describe()}"


Step = tuple  # ("pause", ms) | ("dtmf", "1") | ("audio", pcap_path, duration_ms)


@dataclass
class CitizenCall:
    """One citizen's call from the carrier trunk into the hotline, scripted as steps after the answer."""

    sip_port: int
    number: str = "12345"
    from_user: str = "13800138000"
    from_domain: str | None = None  # the From URI's host (default: the caller's own address, as a carrier sends)
    steps: Sequence[Step] = ()
    hangup: str = "caller"  # "caller": send BYE after the steps; "wait": wait for Asterisk's BYE
    wait_bye_ms: int = 30000
    answer_timeout_ms: int = 10000
    sip_host: str = "127.0.0.1"
    local_ip: str = "127.0.0.1"
    stock_dtmf: bool = False  # True: replay /usr/share/sip-tester/dtmf_2833_<d>.pcap (a repeated digit is dropped)
    dtmf_gap_ms: int = 300
    timeout: float = 60.0
    work_dir: Path | None = None
    name: str = "citizen"
    _stream: RtpStream = field(default_factory=RtpStream, init=False, repr=False)

    def __post_init__(self) -> None:
        if self.hangup not in ("caller", "wait"):
            raise ValueError(f"hangup must be 'caller' or 'wait', not {self.hangup!r}")
        if not re.fullmatch(r"[0-9*#+]{1,20}", self.number):
            raise ValueError(f"number {self.number!r} is not a dialable number")
        if not re.fullmatch(r"[A-Za-z0-9+_.-]{1,32}", self.from_user):
            raise ValueError(f"from_user {self.from_user!r} is not a valid SIP user part")
        if self.from_domain is not None and not re.fullmatch(r"[A-Za-z0-9.-]{1,64}", self.from_domain):
            raise ValueError(f"from_domain {self.from_domain!r} is not a valid SIP host")

    def _steps_xml(self, work_dir: Path) -> str:
        parts: list[str] = []
        for index, step in enumerate(self.steps):
            kind = step[0] if step else None
            label = f"step{index}"
            if kind == "pause":
                ms = int(step[1])
                self._stream.skip(ms)
                parts.append(_wait_bye(ms, label))
            elif kind == "dtmf":
                for sub, digit in enumerate(str(step[1])):
                    if self.stock_dtmf:
                        pcap = STOCK_DTMF_DIR / f"dtmf_2833_{_DTMF_NAMES.get(digit, digit)}.pcap"
                        if not pcap.is_file():
                            raise SippError(f"no stock DTMF pcap for digit {digit!r} at {pcap}")
                        ms = 280
                    else:
                        pcap = work_dir / f"{self.name}-dtmf{index}-{sub}.pcap"
                        ms = round(dtmf_rtp_pcap(digit, pcap, stream=self._stream) * 1000)
                    self._stream.skip(self.dtmf_gap_ms)
                    parts.append(f"<nop><action><exec play_pcap_audio={quoteattr(str(pcap))}/></action></nop>")
                    parts.append(_wait_bye(ms + self.dtmf_gap_ms, f"{label}_{sub}"))
            elif kind == "audio":
                pcap = Path(step[1])
                if not pcap.is_file():
                    raise SippError(f"audio step {index}: pcap {pcap} not found")
                ms = int(step[2]) if len(step) > 2 else _pcap_ms(pcap)
                parts.append(f"<nop><action><exec play_pcap_audio={quoteattr(str(pcap))}/></action></nop>")
                parts.append(_wait_bye(ms, label))
            else:
                raise ValueError(f"call step {index} {step!r}: expected ('pause', ms), ('dtmf', digits) or "
                                 "('audio', pcap[, ms])")
        return "\n".join(parts)

    def scenario_xml(self, work_dir: Path) -> str:
        """The SIPp UAC scenario for this call."""
        who = escape(self.from_user)
        from_host = escape(self.from_domain) if self.from_domain else "[local_ip]:[local_port]"
        rejects = "\n".join(
            f'<recv response="{code}" optional="true" next="rejected">'
            f'<action><log message="FINAL {code}"/></action></recv>'
            for code in _REJECT_CODES
        )
        if self.hangup == "caller":
            ending = f"""
<send retrans="500"><![CDATA[
BYE [next_url] SIP/2.0
Via: SIP/2.0/[transport] [local_ip]:[local_port];branch=[branch]
From: <sip:{who}@{from_host}>;tag=[pid]SIPpTag00[call_number]
To:[$callee]
Call-ID: [call_id]
CSeq: 3 BYE
Max-Forwards: 70
Content-Length: 0

]]></send>
<recv response="200" timeout="5000"/>
{_mark("HANGUP caller", "end")}"""
        else:
            ending = f"""
<recv request="BYE" timeout="{self.wait_bye_ms}" next="got_bye"/>
{_mark("NO BYE", "end")}"""
        # The To header (with Asterisk's tag) is only needed for our own BYE; SIPp rejects unused variables.
        capture_to = ('\n<ereg regexp=".*" search_in="hdr" header="To:" assign_to="callee"/>'
                      if self.hangup == "caller" else "")
        return f"""<?xml version="1.0" encoding="ISO-8859-1" ?>
<!DOCTYPE scenario SYSTEM "sipp.dtd">
<scenario name="hotline citizen call">
<send retrans="500"><![CDATA[
INVITE sip:[service]@[remote_ip]:[remote_port] SIP/2.0
Via: SIP/2.0/[transport] [local_ip]:[local_port];branch=[branch]
From: "{who}" <sip:{who}@{from_host}>;tag=[pid]SIPpTag00[call_number]
To: <sip:[service]@[remote_ip]:[remote_port]>
Call-ID: [call_id]
CSeq: 1 INVITE
Contact: <sip:{who}@[local_ip]:[local_port]>
Max-Forwards: 70
Subject: hotline test call
Content-Type: application/sdp
Content-Length: [len]

{_SDP}
]]></send>
<recv response="100" optional="true"/>
<recv response="180" optional="true"/>
<recv response="183" optional="true"/>
{rejects}
<recv response="200" rtd="true" rrs="true" timeout="{self.answer_timeout_ms}"><action>{capture_to}
<log message="FINAL 200"/></action></recv>
<send><![CDATA[
ACK [next_url] SIP/2.0
Via: SIP/2.0/[transport] [local_ip]:[local_port];branch=[branch]
From: <sip:{who}@{from_host}>;tag=[pid]SIPpTag00[call_number]
[last_To:]
Call-ID: [call_id]
CSeq: 1 ACK
Contact: <sip:{who}@[local_ip]:[local_port]>
Max-Forwards: 70
Content-Length: 0

]]></send>
{self._steps_xml(work_dir)}
{ending}
<label id="got_bye"/>
<send><![CDATA[
SIP/2.0 200 OK
[last_Via:]
[last_From:]
[last_To:]
[last_Call-ID:]
[last_CSeq:]
Content-Length: 0

]]></send>
{_mark("HANGUP asterisk", "end")}
<label id="rejected"/>
<send><![CDATA[
ACK sip:[service]@[remote_ip]:[remote_port] SIP/2.0
[last_Via:]
[last_From:]
[last_To:]
Call-ID: [call_id]
CSeq: 1 ACK
Max-Forwards: 70
Content-Length: 0

]]></send>
<label id="end"/>
{_mark("END")}
</scenario>
"""

    async def run(self) -> CallResult:
        """Place the call and wait for SIPp to finish (bounded by self.timeout)."""
        work_dir = Path(self.work_dir or tempfile.mkdtemp(prefix="hotline-sipp-"))
        work_dir.mkdir(parents=True, exist_ok=True)
        signalling_port = free_port(self.local_ip)
        media_port = free_port(self.local_ip, span=4)
        args = [
            f"{self.sip_host}:{self.sip_port}",
            "-s", self.number,
            "-i", self.local_ip,
            "-p", str(signalling_port),
            "-mp", str(media_port),
            "-recv_timeout", "30000",
        ]  # fmt: skip
        run = SippRun(self.name, self.scenario_xml(work_dir), args, work_dir, self.timeout)
        result = await run.run()
        return _call_result(result)


def _call_result(result: SippResult) -> CallResult:
    final = None
    hung_up_by = None
    for mark in result.marks():
        if mark.startswith("FINAL "):
            final = int(mark.split()[1])
        elif mark.startswith("HANGUP "):
            hung_up_by = mark.split()[1]
    return CallResult(result, final, hung_up_by)


def _pcap_ms(pcap: Path) -> int:
    """Duration of a pcap from its first to last packet timestamp, plus one 20 ms frame."""
    import struct

    data = pcap.read_bytes()
    if len(data) < 24:
        raise SippError(f"pcap {pcap} is truncated")
    endian = "<" if data[:4] == b"\xd4\xc3\xb2\xa1" else ">"
    first = last = None
    offset = 24
    while offset + 16 <= len(data):
        sec, usec, incl, _ = struct.unpack(endian + "IIII", data[offset : offset + 16])
        stamp = sec + usec / 1e6
        first = stamp if first is None else first
        last = stamp
        offset += 16 + incl
    if first is None:
        raise SippError(f"pcap {pcap} has no packets")
    return round((last - first) * 1000) + 20


async def run_citizen_call(sip_port: int, number: str = "12345", from_user: str = "13800138000",
                           steps: Sequence[Step] = (), **options: object) -> CallResult:  # fmt: skip
    """Place one scripted citizen call into the hotline (see CitizenCall for options)."""
    return await CitizenCall(sip_port=sip_port, number=number, from_user=from_user, steps=steps, **options).run()  # type: ignore[arg-type]


# ---------------------------------------------------------------------------------------------- agent phone


def _register_xml(name: str, password: str, contact_port: int, expires: int) -> str:
    def register(cseq: int, auth: bool) -> str:
        header = f"\n[authentication username={name} password={password}]" if auth else ""
        return f"""<send retrans="500"><![CDATA[
REGISTER sip:[remote_ip]:[remote_port] SIP/2.0
Via: SIP/2.0/[transport] [local_ip]:[local_port];branch=[branch]
From: <sip:{name}@[remote_ip]:[remote_port]>;tag=[pid]SIPpTag00[call_number]
To: <sip:{name}@[remote_ip]:[remote_port]>
Call-ID: [call_id]
CSeq: {cseq} REGISTER
Contact: <sip:{name}@[local_ip]:{contact_port}>
Expires: {expires}
Max-Forwards: 70
User-Agent: hotline-test-phone{header}
Content-Length: 0

]]></send>"""

    return f"""<?xml version="1.0" encoding="ISO-8859-1" ?>
<!DOCTYPE scenario SYSTEM "sipp.dtd">
<scenario name="agent register">
{register(1, False)}
<recv response="200" optional="true" next="registered"><action><log message="REGISTERED"/></action></recv>
<recv response="403" optional="true" next="done"><action><log message="REFUSED 403"/></action></recv>
<recv response="401" auth="true" timeout="5000"/>
{register(2, True)}
<recv response="401" optional="true" next="done"><action><log message="REFUSED 401"/></action></recv>
<recv response="403" optional="true" next="done"><action><log message="REFUSED 403"/></action></recv>
<recv response="200" timeout="5000"><action><log message="REGISTERED"/></action></recv>
<label id="registered"/>
<label id="done"/>
{_mark("END")}
</scenario>
"""


def _uas_xml(name: str, ring_ms: int, talk_ms: int, invite_note: str = "") -> str:
    return f"""<?xml version="1.0" encoding="ISO-8859-1" ?>
<!DOCTYPE scenario SYSTEM "sipp.dtd">
<scenario name="agent phone {escape(name)}">
<recv request="INVITE" rrs="true"><action>
<ereg regexp=".*" search_in="hdr" header="From:" assign_to="caller"/>
<log message="RINGING"/></action></recv>
<send><![CDATA[
SIP/2.0 180 Ringing
[last_Via:]
[last_From:]
[last_To:];tag=[pid]SIPpTag01[call_number]
[last_Call-ID:]
[last_CSeq:]
Contact: <sip:{name}@[local_ip]:[local_port]>
Content-Length: 0

]]></send>
<pause milliseconds="{max(0, ring_ms)}"/>
<send retrans="500"><![CDATA[
SIP/2.0 200 OK
[last_Via:]
[last_From:]
[last_To:];tag=[pid]SIPpTag01[call_number]
[last_Call-ID:]
[last_CSeq:]
Contact: <sip:{name}@[local_ip]:[local_port]>
Content-Type: application/sdp
Content-Length: [len]

{_SDP}
]]></send>
<recv request="ACK" timeout="5000"><action><log message="ANSWERED"/></action></recv>
<recv request="BYE" timeout="{max(1, talk_ms)}" ontimeout="hangup" next="got_bye"/>
<label id="hangup"/>
<send retrans="500"><![CDATA[
BYE [next_url] SIP/2.0
Via: SIP/2.0/[transport] [local_ip]:[local_port];branch=[branch]
From: <sip:{name}@[local_ip]:[local_port]>;tag=[pid]SIPpTag01[call_number]
To:[$caller]
Call-ID: [call_id]
CSeq: 1 BYE
Max-Forwards: 70
Content-Length: 0

]]></send>
<recv response="200" timeout="5000"/>
{_mark("HANGUP agent", "end")}
<label id="got_bye"/>
<send><![CDATA[
SIP/2.0 200 OK
[last_Via:]
[last_From:]
[last_To:]
[last_Call-ID:]
[last_CSeq:]
Content-Length: 0

]]></send>
{_mark("HANGUP asterisk")}
<label id="end"/>
{_mark("END")}
</scenario>
"""


@dataclass
class RegisterResult:
    """Outcome of one REGISTER exchange."""

    sipp: SippResult
    registered: bool
    refused_status: int | None


async def register_agent(name: str, password: str, sip_port: int, contact_port: int, *, expires: int = 3600,
                         sip_host: str = "127.0.0.1", local_ip: str = "127.0.0.1", timeout: float = 15.0,
                         work_dir: Path | None = None) -> RegisterResult:  # fmt: skip
    """REGISTER name (digest auth with password) with Contact at local_ip:contact_port; expires=0 unregisters."""
    work_dir = Path(work_dir or tempfile.mkdtemp(prefix="hotline-sipp-"))
    args = [f"{sip_host}:{sip_port}", "-i", local_ip, "-p", str(free_port(local_ip))]
    tag = "unregister" if expires == 0 else "register"
    run = SippRun(f"{name}-{tag}", _register_xml(name, password, contact_port, expires), args, work_dir, timeout)
    result = await run.run()
    registered = "REGISTERED" in result.marks()
    refused = next((int(m.split()[1]) for m in result.marks() if m.startswith("REFUSED ")), None)
    return RegisterResult(result, registered, refused)


class AgentRegistrationError(SippError):
    """The agent phone could not register."""


class AgentPhone:
    """A registered agent softphone (SIPp UAS) that answers the next call, talks talk_ms, then hangs up."""

    def __init__(self, name: str, password: str, sip_port: int, *, talk_ms: int = 3000, ring_ms: int = 200,
                 sip_host: str = "127.0.0.1", local_ip: str = "127.0.0.1", timeout: float = 60.0,
                 work_dir: Path | None = None) -> None:  # fmt: skip
        self.name = name
        self.password = password
        self.sip_port = sip_port
        self.sip_host = sip_host
        self.local_ip = local_ip
        self.talk_ms = talk_ms
        self.ring_ms = ring_ms
        self.timeout = timeout
        self.work_dir = Path(work_dir or tempfile.mkdtemp(prefix="hotline-sipp-"))
        self.contact_port = 0
        self.registration: RegisterResult | None = None
        self._uas: SippRun | None = None

    async def __aenter__(self) -> AgentPhone:
        self.contact_port = free_port(self.local_ip)
        media_port = free_port(self.local_ip, span=4)
        args = [
            f"{self.sip_host}:{self.sip_port}",
            "-i", self.local_ip,
            "-p", str(self.contact_port),
            "-mp", str(media_port),
            "-rtp_echo",
        ]  # fmt: skip
        self._uas = SippRun(f"{self.name}-phone", _uas_xml(self.name, self.ring_ms, self.talk_ms), args,
                            self.work_dir, self.timeout)  # fmt: skip
        await self._uas.start()
        await asyncio.sleep(0.2)  # let sipp bind its port before Asterisk may send an INVITE there
        if not self._uas.running:
            result = await self._uas.wait(timeout=5.0)
            raise SippError(f"agent phone {self.name}: SIPp UAS ended at once ({result.describe()})")
        registered = False
        try:
            self.registration = await register_agent(
                self.name, self.password, self.sip_port, self.contact_port,
                sip_host=self.sip_host, local_ip=self.local_ip, work_dir=self.work_dir,
            )  # fmt: skip
            if not self.registration.registered:
                raise AgentRegistrationError(
                    f"agent {self.name} could not register: {self.registration.sipp.describe()}"
                )
            registered = True
        finally:
            if not registered:
                await self._uas.kill()
        return self

    async def __aexit__(self, *exc_info: object) -> None:
        try:
            if self.registration is not None and self.registration.registered:
                await register_agent(
                    self.name, self.password, self.sip_port, self.contact_port, expires=0,
                    sip_host=self.sip_host, local_ip=self.local_ip, work_dir=self.work_dir, timeout=10.0,
                )  # fmt: skip
        finally:
            if self._uas is not None:
                await self._uas.kill()
                if self._uas.result is None:
                    await self._uas.wait(timeout=5.0)

    async def wait_call(self, timeout: float = 30.0) -> SippResult:
        """Wait until the phone's one call has ended (or timeout, which kills the UAS)."""
        assert self._uas is not None, "use `async with AgentPhone(...)`"
        return await self._uas.wait(timeout=timeout)

    @property
    def answered(self) -> bool:
        """The phone answered a call (ACK received) — known once the call ended."""
        return self._uas is not None and self._uas.result is not None and "ANSWERED" in self._uas.result.marks()
