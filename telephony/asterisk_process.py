"""Render the hotline's Asterisk configuration and run Asterisk as a supervised child process."""
from __future__ import annotations

import asyncio
import contextlib
import ctypes
import ipaddress
import os
import re
import shutil
import signal
import socket
import subprocess
import time
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from config import Settings

from .fastagi import AGI_AUTH_DIALPLAN

TEMPLATES_DIR = Path(__file__).resolve().parent.parent / "asterisk" / "templates"

_CONF_FILES = (
    "asterisk.conf",
    "modules.conf",
    "manager.conf",
    "logger.conf",
    "rtp.conf",
    "musiconhold.conf",
    "pjsip.conf",
    "extensions.conf",
    "queues.conf",
    "queuerules.conf",
    "indications.conf",
    "features.conf",
    "ccss.conf",
    "cdr.conf",
    "cel.conf",
    "acl.conf",
    "udptl.conf",
    "pjproject.conf",
    "stasis.conf",
)
_PLACEHOLDER = re.compile(r"\{\{([a-z_]+)\}\}")
_NAME = re.compile(r"^[a-z][a-z0-9_]{0,31}$")
_SECRET = re.compile(r"^[\x21-\x7e]{1,128}$")  # printable, no space
_STRATEGIES = {"ringall", "leastrecent", "fewestcalls", "random", "rrmemory", "linear", "wrandom", "rrordered"}
_RESERVED_SECTIONS = {"global", "system", "trunk", "transport-udp"}
_UNIX_SOCKET_MAX = 107
_KNOWN_MODULE_DIRS = (Path("/usr/lib/asterisk/modules"), Path("/usr/lib/x86_64-linux-gnu/asterisk/modules"))


class AsteriskConfigError(ValueError):
    """The Asterisk configuration cannot be rendered; the message is one line naming what was wrong."""


class AsteriskStartError(RuntimeError):
    """Asterisk could not be started (or stopped); the message is one line naming what was wrong."""


@dataclass(frozen=True)
class AgentSpec:
    """One agent's SIP account: the endpoint name, its digest password and the queues it serves."""

    name: str
    password: str | None  # None until secrets are resolved; rendering refuses it
    queues: tuple[str, ...] = ()


@dataclass(frozen=True)
class QueueConf:
    """One app_queue queue as rendered into queues.conf."""

    name: str
    strategy: str = "rrmemory"
    timeout_seconds: int = 15
    wrapup_seconds: int = 5
    max_wait_seconds: int = 600
    announce_frequency_seconds: int = 0
    periodic_announce: tuple[str, ...] = ()  # sound files played in rotation every periodic_announce_frequency s
    periodic_announce_frequency: int = 0


def _agent(item: Any) -> AgentSpec:
    if isinstance(item, AgentSpec):
        return item
    if isinstance(item, (tuple, list)):
        name, password, queues = item
    else:
        name, password, queues = item.name, item.password, item.queues
    return AgentSpec(str(name), password if password is None else str(password), tuple(queues))


def _queue(item: Any) -> QueueConf:
    if isinstance(item, QueueConf):
        return item
    if isinstance(item, (tuple, list)):
        return QueueConf(*item)
    return QueueConf(
        name=item.name,
        strategy=item.strategy,
        timeout_seconds=int(item.timeout_seconds),
        wrapup_seconds=int(item.wrapup_seconds),
        max_wait_seconds=int(item.max_wait_seconds),
        announce_frequency_seconds=int(getattr(item, "announce_frequency_seconds", 0)),
    )


@dataclass(frozen=True)
class AsteriskConfig:
    """Everything needed to render and run one Asterisk instance for the hotline (all of its dirs under run_dir)."""

    run_dir: Path
    ami_secret: str
    agents: Sequence[Any] = ()  # AgentSpec, (name, password, queues) or anything with .name/.password/.queues
    queues: Sequence[Any] = ()  # QueueConf, a tuple of its fields, or anything QueueSpec-like
    hotline_number: str = "12345"
    ivr_numbers: Sequence[str] = ()  # more numbers the IVR answers (the number dialed picks the flow)
    sip_host: str = "127.0.0.1"
    sip_port: int = 5060
    rtp_port_start: int = 10000
    rtp_port_end: int = 10999
    ami_host: str = "127.0.0.1"
    ami_port: int = 5038
    ami_username: str = "hotline"
    agi_host: str = "127.0.0.1"
    agi_port: int = 4573
    trunk_addresses: Sequence[str] = ("127.0.0.1",)
    modules_dir: Path = Path("/usr/lib/asterisk/modules")
    sounds_dir: Path = Path("/usr/share/asterisk/sounds")
    recordings_dir: Path | None = None  # None: run_dir/recordings
    templates_dir: Path = field(default=TEMPLATES_DIR)

    def __post_init__(self) -> None:
        set_ = object.__setattr__
        set_(self, "run_dir", Path(self.run_dir).absolute())  # Asterisk resolves relative paths against its cwd
        set_(self, "modules_dir", Path(self.modules_dir).absolute())
        set_(self, "sounds_dir", Path(self.sounds_dir).absolute())
        set_(self, "templates_dir", Path(self.templates_dir).absolute())
        set_(self, "recordings_dir", Path(self.recordings_dir or self.run_dir / "recordings").absolute())
        set_(self, "agents", tuple(_agent(a) for a in self.agents))
        set_(self, "queues", tuple(_queue(q) for q in self.queues))
        set_(self, "trunk_addresses", tuple(str(t) for t in self.trunk_addresses))
        set_(self, "ivr_numbers", tuple(str(n) for n in self.ivr_numbers if str(n) != self.hotline_number))

    @classmethod
    def from_settings(cls, settings: Settings) -> AsteriskConfig:
        """Build from the hotline's typed Settings (secrets must already be resolved)."""
        if settings.ami_secret is None:
            raise AsteriskConfigError("ami_secret is not set (resolve secrets first)")
        return cls(
            run_dir=settings.asterisk_run_dir,
            ami_secret=settings.ami_secret,
            agents=[(a.name, a.sip_secret, a.queues) for a in settings.agents],
            queues=list(settings.queues),
            hotline_number=settings.hotline_number,
            ivr_numbers=list(settings.ivr_numbers),
            sip_host=settings.sip_host,
            sip_port=settings.sip_port,
            rtp_port_start=settings.rtp_port_start,
            rtp_port_end=settings.rtp_port_end,
            ami_host=settings.ami_host,
            ami_port=settings.ami_port,
            ami_username=settings.ami_username,
            agi_host=settings.agi_host,
            agi_port=settings.agi_port,
            trunk_addresses=list(settings.trunk_addresses),
            modules_dir=settings.asterisk_modules_dir,
            sounds_dir=settings.asterisk_sounds_dir,
            recordings_dir=settings.recordings_dir,
        )

    @property
    def recordings_path(self) -> Path:
        """Where recordings go (recordings_dir, resolved at construction)."""
        assert self.recordings_dir is not None  # set by __post_init__
        return self.recordings_dir

    # Asterisk's own directories, all under run_dir.
    @property
    def etc_dir(self) -> Path:
        """Rendered configuration files."""
        return self.run_dir / "etc"

    @property
    def asterisk_conf(self) -> Path:
        """The asterisk.conf passed with -C."""
        return self.etc_dir / "asterisk.conf"

    @property
    def log_dir(self) -> Path:
        """Asterisk's log directory (messages, console.log)."""
        return self.run_dir / "log"

    @property
    def console_log(self) -> Path:
        """Asterisk's stdout/stderr."""
        return self.log_dir / "console.log"

    @property
    def messages_log(self) -> Path:
        """Asterisk's file log (notice, warning, error, verbose 3)."""
        return self.log_dir / "messages"

    @property
    def control_socket(self) -> Path:
        """The remote-console socket (asterisk -r / -rx)."""
        return self.run_dir / "run" / "asterisk.ctl"


# ---------------------------------------------------------------------------------------------- rendering


def _fill(template_name: str, text: str, values: dict[str, str]) -> str:
    def repl(match: re.Match[str]) -> str:
        key = match.group(1)
        if key not in values:
            raise AsteriskConfigError(f"template {template_name} uses unknown placeholder {{{{{key}}}}}")
        return values[key]

    return _PLACEHOLDER.sub(repl, text)


def _template(cfg: AsteriskConfig, name: str) -> str:
    path = cfg.templates_dir / name
    try:
        return path.read_text(encoding="utf-8")
    except OSError as exc:
        raise AsteriskConfigError(f"Asterisk template {path}: {exc.strerror}") from None


def _check_port(what: str, port: int) -> None:
    if not isinstance(port, int) or not 1 <= port <= 65535:
        raise AsteriskConfigError(f"{what} {port!r} is not a port number (1-65535)")


def _check_ip(what: str, value: str) -> None:
    try:
        ipaddress.ip_address(value)
    except ValueError:
        raise AsteriskConfigError(f"{what} {value!r} is not an IP address") from None


def _validate(cfg: AsteriskConfig) -> None:
    if not re.fullmatch(r"[0-9]{2,15}", cfg.hotline_number):
        raise AsteriskConfigError(f"hotline number {cfg.hotline_number!r} must be 2-15 digits")
    for number in cfg.ivr_numbers:
        if not re.fullmatch(r"[0-9]{2,15}", number):
            raise AsteriskConfigError(f"IVR number {number!r} must be 2-15 digits")
    if len(set(cfg.ivr_numbers)) != len(cfg.ivr_numbers):
        raise AsteriskConfigError("an IVR number is listed twice")
    for what, host in (("sip_host", cfg.sip_host), ("ami_host", cfg.ami_host), ("agi_host", cfg.agi_host)):
        _check_ip(what, host)
    for what, port in (("sip_port", cfg.sip_port), ("ami_port", cfg.ami_port), ("agi_port", cfg.agi_port)):
        _check_port(what, port)
    _check_port("rtp_port_start", cfg.rtp_port_start)
    _check_port("rtp_port_end", cfg.rtp_port_end)
    if cfg.rtp_port_end <= cfg.rtp_port_start:
        raise AsteriskConfigError(f"rtp_port_end {cfg.rtp_port_end} must be above rtp_port_start {cfg.rtp_port_start}")
    if not _NAME.match(cfg.ami_username):
        raise AsteriskConfigError(f"AMI username {cfg.ami_username!r} must match [a-z][a-z0-9_]*")
    if not isinstance(cfg.ami_secret, str) or not _SECRET.match(cfg.ami_secret) or ";" in cfg.ami_secret:
        raise AsteriskConfigError("AMI secret must be 1-128 printable characters without spaces or ';'")
    if not cfg.trunk_addresses:
        raise AsteriskConfigError("trunk_addresses is empty: no carrier could reach the hotline")
    for addr in cfg.trunk_addresses:
        try:
            ipaddress.ip_network(addr, strict=False)
        except ValueError:
            raise AsteriskConfigError(f"trunk address {addr!r} is not an IP address or network") from None
    queue_names: set[str] = set()
    for q in cfg.queues:
        if not _NAME.match(q.name) or q.name in _RESERVED_SECTIONS:
            raise AsteriskConfigError(f"queue name {q.name!r} must match [a-z][a-z0-9_]* and not be reserved")
        if q.name in queue_names:
            raise AsteriskConfigError(f"queue {q.name!r} is listed twice")
        if q.strategy not in _STRATEGIES:
            raise AsteriskConfigError(f"queue {q.name!r}: unknown strategy {q.strategy!r}")
        queue_names.add(q.name)
    agent_names: set[str] = set()
    for a in cfg.agents:
        if not _NAME.match(a.name) or a.name in _RESERVED_SECTIONS:
            raise AsteriskConfigError(f"agent name {a.name!r} must match [a-z][a-z0-9_]* and not be reserved")
        if a.name in agent_names:
            raise AsteriskConfigError(f"agent {a.name!r} is listed twice")
        agent_names.add(a.name)
        if a.password is None:
            raise AsteriskConfigError(f"agent {a.name!r} has no password (resolve secrets first)")
        if not _SECRET.match(a.password) or ";" in a.password:
            raise AsteriskConfigError(f"agent {a.name!r}: password must be printable without spaces or ';'")
        unknown = sorted(set(a.queues) - queue_names)
        if unknown:
            raise AsteriskConfigError(f"agent {a.name!r} names unknown queue(s) {unknown}")
    if cfg.sounds_dir.name != "sounds":
        raise AsteriskConfigError(f"sounds_dir {cfg.sounds_dir} must be an Asterisk data dir's 'sounds' folder")


def _dirs(cfg: AsteriskConfig) -> dict[str, Path]:
    return {
        "etc_dir": cfg.etc_dir,
        "lib_dir": cfg.run_dir / "lib",
        "db_dir": cfg.run_dir / "db",
        "keys_dir": cfg.run_dir / "keys",
        "agi_dir": cfg.run_dir / "agi-bin",
        "spool_dir": cfg.run_dir / "spool",
        "run_dir": cfg.run_dir / "run",
        "log_dir": cfg.log_dir,
        "cache_dir": cfg.run_dir / "cache",
    }


def _render_all(cfg: AsteriskConfig) -> dict[str, str]:
    _validate(cfg)
    dirs = _dirs(cfg)
    moh_dir = cfg.sounds_dir / "en" / "silence"
    if not moh_dir.is_dir():
        moh_dir = cfg.run_dir / "moh"
    values: dict[str, str] = {k: str(v) for k, v in dirs.items()}
    values.update(
        modules_dir=str(cfg.modules_dir),
        data_dir=str(cfg.sounds_dir.parent),
        moh_dir=str(moh_dir),
        hotline_number=cfg.hotline_number,
        sip_host=cfg.sip_host,
        sip_port=str(cfg.sip_port),
        rtp_port_start=str(cfg.rtp_port_start),
        rtp_port_end=str(cfg.rtp_port_end),
        ami_host=cfg.ami_host,
        ami_port=str(cfg.ami_port),
        ami_username=cfg.ami_username,
        ami_secret=cfg.ami_secret,
        ami_permit_extra=(
            "" if cfg.ami_host in ("127.0.0.1", "0.0.0.0", "::") else f"permit = {cfg.ami_host}/255.255.255.255\n"
        ),
        agi_host=cfg.agi_host,
        agi_port=str(cfg.agi_port),
        agi_auth=AGI_AUTH_DIALPLAN,
        call_recordings_dir=str(cfg.recordings_path / "calls"),  # MixMonitor files (issue 4)
        trunk_matches="\n".join(f"match = {addr}" for addr in cfg.trunk_addresses),
        # ivr flows: each further number hands its own number to the IVR (the AGI argument) and joins the hotline's
        ivr_number_extens="".join(
            f"exten => {n},1,Set(HOTLINE_DIALED={n})  ; ivr flows: number {n} (ivr_numbers)\n"
            f" same => n,Goto({cfg.hotline_number},1)\n" for n in cfg.ivr_numbers),
        ivr_agent_extens="".join(f"exten => {n},1,Goto(hotline-inbound,{n},1)\n" for n in cfg.ivr_numbers),
    )
    agent_tpl = _template(cfg, "pjsip_agent.conf.part")
    values["agent_sections"] = "".join(
        _fill("pjsip_agent.conf.part", agent_tpl, {"name": a.name, "password": a.password, "sip_host": cfg.sip_host})
        for a in cfg.agents
    )
    queue_tpl = _template(cfg, "queue.conf.part")
    sections = []
    for q in cfg.queues:
        members = "".join(
            f"member => PJSIP/{a.name},0,{a.name},PJSIP/{a.name}\n" for a in cfg.agents if q.name in a.queues
        )
        sections.append(
            _fill(
                "queue.conf.part",
                queue_tpl,
                {
                    "name": q.name,
                    "strategy": q.strategy,
                    "timeout_seconds": str(q.timeout_seconds),
                    "wrapup_seconds": str(q.wrapup_seconds),
                    "max_wait_seconds": str(q.max_wait_seconds),
                    "announce_frequency_seconds": str(q.announce_frequency_seconds),
                    "periodic_announce": ",".join(q.periodic_announce) or "queue-periodic-announce",
                    "periodic_announce_frequency": str(q.periodic_announce_frequency if q.periodic_announce else 0),
                    "members": members,
                },
            )
        )
    values["queue_sections"] = "".join(sections)
    return {name: _fill(name, _template(cfg, name), values) for name in _CONF_FILES}


def _write_if_changed(path: Path, text: str, mode: int = 0o600) -> None:
    try:
        if path.read_text(encoding="utf-8") == text:
            return
    except OSError:
        pass
    tmp = path.with_name(path.name + ".tmp")
    fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, mode)
    with os.fdopen(fd, "w", encoding="utf-8") as fh:
        fh.write(text)
    os.replace(tmp, path)


def render_asterisk_config(cfg: AsteriskConfig) -> Path:
    """Write run_dir/etc/*.conf (and create Asterisk's dirs) from the templates; return asterisk.conf's path."""
    files = _render_all(cfg)
    try:
        for path in (*_dirs(cfg).values(), cfg.recordings_path):
            path.mkdir(parents=True, exist_ok=True, mode=0o700)  # recordings, logs and secrets live here
        for name, text in files.items():
            _write_if_changed(cfg.etc_dir / name, text)
    except OSError as exc:
        raise AsteriskConfigError(f"cannot write Asterisk configuration under {cfg.run_dir}: {exc.strerror}") from None
    return cfg.asterisk_conf


# ---------------------------------------------------------------------------------------------- process


def _port_in_use(host: str, port: int, kind: int) -> bool:
    family = socket.AF_INET6 if ":" in host else socket.AF_INET
    with socket.socket(family, kind) as sock:
        if kind == socket.SOCK_STREAM:
            sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)  # TIME_WAIT leftovers are fine
        try:
            sock.bind((host, port))
        except OSError:
            return True
    return False


def _last_meaningful_line(*logs: tuple[Path, int]) -> str:
    """The last error-looking line of the given logs (each read from a byte offset), else the last non-blank one."""
    important = re.compile(
        r"error|unable|fail|already|cannot|can't|could not|denied|refus|abort|not found|no such|invalid", re.I
    )
    fallback = None
    for path, offset in logs:
        try:
            with open(path, "rb") as fh:
                fh.seek(offset)
                text = fh.read().decode("utf-8", errors="replace").replace("\0", "")
        except OSError:
            continue
        lines = [line.strip() for line in text.splitlines() if line.strip()]
        for line in reversed(lines):
            if important.search(line):
                return line[:300]
        if fallback is None and lines:
            fallback = lines[-1][:300]
    return fallback or "(no output)"


def _control_socket_answers(path: Path) -> bool:
    if not path.exists():
        return False
    with socket.socket(socket.AF_UNIX, socket.SOCK_STREAM) as sock:
        sock.settimeout(1.0)
        try:
            sock.connect(str(path))
        except OSError:
            return False
    return True


def _set_parent_death_signal() -> None:  # pragma: no cover - runs in the child between fork and exec
    with contextlib.suppress(Exception):
        ctypes.CDLL("libc.so.6", use_errno=True).prctl(1, signal.SIGTERM)  # PR_SET_PDEATHSIG


def _private_umask() -> None:  # pragma: no cover - runs in the child between fork and exec
    # Asterisk creates its recordings, logs and databases with mode 0666/0777 less the umask it inherits (it has
    # no option of its own): 077 keeps the citizens' recordings to this user.
    os.umask(0o077)


def _private_dying_child() -> None:  # pragma: no cover - runs in the child between fork and exec
    _private_umask()
    _set_parent_death_signal()


class AsteriskProcess:
    """One supervised `asterisk -f` child running the rendered configuration."""

    def __init__(self, cfg: AsteriskConfig, binary: str = "asterisk", die_with_parent: bool = True,
                 env: Mapping[str, str] | None = None) -> None:
        self.cfg = cfg
        self.binary = binary
        self.die_with_parent = die_with_parent
        # Added to Asterisk's environment, which the (E)AGI programs it starts inherit: a secret handed over this
        # way stays out of command lines (`ps`, Asterisk's log), unlike an AGI argument.
        self.env = dict(env or {})
        self._proc: asyncio.subprocess.Process | None = None
        self._messages_offset = 0
        self.start_seconds: float | None = None  # how long the last start took until AMI said FullyBooted

    @property
    def running(self) -> bool:
        """True while the child process is alive."""
        return self._proc is not None and self._proc.returncode is None

    @property
    def pid(self) -> int | None:
        """The child's process id (None before start)."""
        return self._proc.pid if self._proc is not None else None

    @property
    def returncode(self) -> int | None:
        """The child's exit status once it has ended."""
        return self._proc.returncode if self._proc is not None else None

    async def wait(self) -> int:
        """Wait until the child process ends (the exit is noticed at once, not polled); its exit status,
        negative for the signal that killed it."""
        if self._proc is None:
            raise AsteriskStartError("Asterisk was never started")
        return await self._proc.wait()

    async def __aenter__(self) -> AsteriskProcess:
        await self.start()
        return self

    async def __aexit__(self, *exc_info: object) -> None:
        await self.stop()

    def _resolve_binary(self) -> str:
        found = shutil.which(self.binary)
        if found is None:
            raise AsteriskStartError(
                f"Asterisk is not installed: {self.binary!r} not found on PATH (run `make setup`)"
            )
        return found

    def _preflight(self) -> None:
        cfg = self.cfg
        if len(str(cfg.control_socket)) > _UNIX_SOCKET_MAX:
            raise AsteriskStartError(f"Asterisk run dir {cfg.run_dir} is too long for its control socket path")
        if _control_socket_answers(cfg.control_socket):
            raise AsteriskStartError(
                f"another Asterisk is already running from {cfg.run_dir} "
                f"(its control socket {cfg.control_socket} answers)"
            )
        if not (cfg.modules_dir / "chan_pjsip.so").is_file():
            hint = find_modules_dir()
            raise AsteriskStartError(
                f"Asterisk modules directory {cfg.modules_dir} has no chan_pjsip.so"
                + (f" (this system has them in {hint})" if hint else " (run `make setup`)")
            )
        if _port_in_use(cfg.sip_host, cfg.sip_port, socket.SOCK_DGRAM):
            raise AsteriskStartError(f"port {cfg.sip_port}/udp (SIP) is already in use on {cfg.sip_host}")
        if _port_in_use(cfg.ami_host, cfg.ami_port, socket.SOCK_STREAM):
            raise AsteriskStartError(f"port {cfg.ami_port}/tcp (AMI) is already in use on {cfg.ami_host}")

    async def start(self, ready_timeout: float = 30.0) -> None:
        """Render the config, spawn Asterisk and wait until AMI answers and reports FullyBooted."""
        if self.running:
            return
        binary = self._resolve_binary()
        self._preflight()
        try:
            conf = render_asterisk_config(self.cfg)
        except AsteriskConfigError as exc:
            raise AsteriskStartError(str(exc)) from None
        began = time.monotonic()
        self.cfg.log_dir.mkdir(parents=True, exist_ok=True)
        try:
            self._messages_offset = self.cfg.messages_log.stat().st_size  # the file log is appended across runs
        except OSError:
            self._messages_offset = 0
        fd = os.open(self.cfg.console_log, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
        os.close(fd)
        # Opening a local log file is a metadata call; Asterisk writes to it, not this loop.
        with open(self.cfg.console_log, "ab") as console:  # noqa: ASYNC230 - O_APPEND: safe even if something else writes too
            self._proc = await asyncio.create_subprocess_exec(
                binary,
                "-f",  # stay in the foreground: we are the supervisor
                "-n",  # no ANSI colours in the log
                "-C",
                str(conf),
                stdin=subprocess.DEVNULL,
                stdout=console,
                stderr=subprocess.STDOUT,
                start_new_session=True,
                preexec_fn=_private_dying_child if self.die_with_parent else _private_umask,
                env={**os.environ, **self.env} if self.env else None,
            )
        ready = False
        try:
            await self._wait_ready(began + ready_timeout, ready_timeout)
            ready = True
        finally:
            if not ready:
                await self.stop()
        self.start_seconds = time.monotonic() - began

    async def _wait_ready(self, deadline: float, ready_timeout: float) -> None:
        assert self._proc is not None
        last_error = "AMI did not answer"
        while True:
            if self._proc.returncode is not None:
                raise AsteriskStartError(
                    f"Asterisk exited with status {self._proc.returncode} while starting: "
                    f"{_last_meaningful_line(*self._logs())}"
                )
            remaining = deadline - time.monotonic()
            if remaining <= 0:
                raise AsteriskStartError(
                    f"Asterisk was not ready within {ready_timeout:g} s ({last_error}): "
                    f"{_last_meaningful_line(*reversed(self._logs()))}"
                )
            try:
                await asyncio.wait_for(self._ami_fully_booted(), timeout=min(remaining, 5.0))
                return
            except (TimeoutError, OSError, ConnectionError, asyncio.IncompleteReadError) as exc:
                last_error = f"AMI: {type(exc).__name__} {exc}".strip()
            await asyncio.sleep(0.1)

    def _logs(self) -> list[tuple[Path, int]]:
        return [(self.cfg.console_log, 0), (self.cfg.messages_log, self._messages_offset)]

    async def _ami_fully_booted(self) -> None:
        cfg = self.cfg
        reader, writer = await asyncio.open_connection(cfg.ami_host, cfg.ami_port)
        try:
            banner = await reader.readline()
            if not banner.startswith(b"Asterisk Call Manager"):
                raise ConnectionError(f"unexpected AMI banner {banner[:60]!r}")
            writer.write(
                (
                    f"Action: Login\r\nActionID: boot\r\nUsername: {cfg.ami_username}\r\n"
                    f"Secret: {cfg.ami_secret}\r\nEvents: system\r\n\r\n"
                ).encode()
            )
            await writer.drain()
            while True:
                block = (await reader.readuntil(b"\r\n\r\n")).decode(errors="replace")
                if "Response: Error" in block and "ActionID: boot" in block:
                    raise AsteriskStartError(f"Asterisk refused the AMI login of {cfg.ami_username!r}")
                if "Event: FullyBooted" in block:
                    break
            writer.write(b"Action: Logoff\r\n\r\n")
            with contextlib.suppress(OSError):
                await writer.drain()
        finally:
            writer.close()
            with contextlib.suppress(OSError, asyncio.TimeoutError):
                await asyncio.wait_for(writer.wait_closed(), timeout=1.0)

    def _signal(self, sig: int) -> None:
        assert self._proc is not None
        try:
            os.killpg(self._proc.pid, sig)  # the child leads its own session: only our Asterisk and its helpers
        except ProcessLookupError:
            pass
        except PermissionError:
            with contextlib.suppress(ProcessLookupError):
                self._proc.send_signal(sig)

    async def stop(self, timeout: float = 10.0) -> None:
        """Stop Asterisk (SIGTERM, then SIGKILL after timeout) and reap it; safe to call twice."""
        proc = self._proc
        if proc is None:
            return
        if proc.returncode is None:
            self._signal(signal.SIGTERM)
            try:
                await asyncio.wait_for(proc.wait(), timeout=timeout)
            except TimeoutError:
                self._signal(signal.SIGKILL)
                try:
                    await asyncio.wait_for(proc.wait(), timeout=5.0)
                except TimeoutError:
                    raise AsteriskStartError(f"Asterisk pid {proc.pid} did not die after SIGKILL") from None


def find_modules_dir(candidates: Iterable[Path] = _KNOWN_MODULE_DIRS) -> Path | None:
    """The first known Asterisk modules directory on this machine that has chan_pjsip.so, if any."""
    return next((d for d in candidates if (d / "chan_pjsip.so").is_file()), None)
