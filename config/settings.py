"""Typed settings for the whole hotline, loaded once at start.

Precedence (lowest to highest): built-in defaults < config file (YAML) < environment < CLI overrides.
"""
from __future__ import annotations

import ipaddress
import os
import re
import secrets
from pathlib import Path
from typing import Any, Literal

import yaml
from pydantic import AliasChoices, BaseModel, Field, ValidationError, field_validator, model_validator
from pydantic_settings import BaseSettings, PydanticBaseSettingsSource, SettingsConfigDict

PROJECT_ROOT = Path(__file__).resolve().parent.parent
DEFAULT_CONFIG_FILE = PROJECT_ROOT / "config" / "hotline.yaml"


class SettingsError(Exception):
    """Settings that cannot be used; the message is one line naming what was wrong."""


class AgentAccount(BaseModel):
    """A configured agent: their console account and the SIP account their softphone registers with."""

    name: str = Field(pattern=r"^[a-z][a-z0-9_]{1,31}$")
    # The console password (stored hashed); None: generated once and kept in the secrets file.
    password: str | None = Field(default=None, repr=False)
    # The softphone's digest secret, never the console password; None: generated once into the secrets file.
    # Used when the agent is first created; `hotline agents rotate-sip-secret` replaces it in the database.
    sip_secret: str | None = Field(default=None, pattern=r"^[\x21-\x3a\x3c-\x7e]{16,128}$", repr=False)
    queues: list[str] = Field(default_factory=lambda: ["complaints", "inquiries", "operator"])


class QueueSpec(BaseModel):
    """One app_queue queue and the IVR category that feeds it."""

    name: str = Field(pattern=r"^[a-z][a-z0-9_]{1,31}$")
    strategy: str = "rrmemory"
    timeout_seconds: int = Field(default=15, ge=1, le=300)  # ring an agent this long
    wrapup_seconds: int = Field(default=5, ge=0, le=600)
    max_wait_seconds: int = Field(default=600, ge=10, le=7200)
    announce_frequency_seconds: int = Field(default=30, ge=0, le=600)  # position/wait announcement; 0: never
    on_max_wait: str = Field(default="hangup", pattern=r"^(hangup|callback|record|overflow:[a-z][a-z0-9_]{1,31})$")


class Settings(BaseSettings):
    """Every setting of the hotline; env names are HOTLINE_<FIELD> (plus DATABASE_URL, REDIS_URL, VOSK_MODEL_PATH)."""

    model_config = SettingsConfigDict(env_prefix="HOTLINE_", extra="forbid", populate_by_name=True)

    hotline_number: str = Field(default="12345", pattern=r"^[0-9]{2,15}$")
    run_dir: Path = PROJECT_ROOT / "var"

    # Listeners: loopback by default.
    sip_host: str = "127.0.0.1"
    sip_port: int = Field(default=5060, ge=1, le=65535)
    rtp_port_start: int = Field(default=10000, ge=1024, le=65000)
    rtp_port_end: int = Field(default=10999, ge=1025, le=65535)
    ami_host: str = "127.0.0.1"
    ami_port: int = Field(default=5038, ge=1, le=65535)
    ami_username: str = "hotline"
    # Secrets: repr=False keeps them out of any printed or logged settings.
    ami_secret: str | None = Field(default=None, repr=False)  # None: generated once into the secrets file
    session_secret: str | None = Field(default=None, repr=False)  # console session-id key; None: generated once
    admin_password: str | None = Field(default=None, repr=False)  # console 'admin' account; None: generated once
    agi_host: str = "127.0.0.1"
    agi_port: int = Field(default=4573, ge=1, le=65535)
    # FastAGI sessions prove they come from our Asterisk with a token made from this secret; None: generated once.
    agi_secret: str | None = Field(default=None, pattern=r"^[A-Za-z0-9_-]{16,128}$")
    agi_max_connections: int = Field(default=512, ge=1, le=65535)  # more open at once are refused
    http_host: str = "127.0.0.1"
    http_port: int = Field(default=8080, ge=1, le=65535)

    # Console sessions (kept in Redis) and logins.
    console_secure_cookies: bool = False  # True when served over HTTPS (behind a TLS proxy): cookie sent on HTTPS only
    console_cookie_samesite: Literal["Strict", "Lax"] = "Lax"
    console_session_hours: float = Field(default=12.0, gt=0, le=720)
    login_max_failures: int = Field(default=5, ge=1, le=1000)  # per account within the window, then 429
    login_address_max_failures: int = Field(default=20, ge=1, le=100000)  # per client address within the window
    login_failure_window_seconds: int = Field(default=300, ge=1, le=86400)

    # Where citizens' calls come from: the carrier SBC addresses (source-IP identified trunk).
    trunk_addresses: list[str] = Field(default_factory=lambda: ["127.0.0.1"])

    # Asterisk process control.
    manage_asterisk: bool = True
    asterisk_binary: str = "asterisk"
    asterisk_modules_dir: Path = Path("/usr/lib/asterisk/modules")
    asterisk_sounds_dir: Path = Path("/usr/share/asterisk/sounds")
    # A dead Asterisk is restarted with backoff, at most this many times within the window; then it stays down.
    asterisk_max_restarts: int = Field(default=5, ge=0, le=100)
    asterisk_restart_window_seconds: float = Field(default=300.0, gt=0, le=86400)

    # Backends.
    database_url: str = Field(
        default=f"sqlite+aiosqlite:///{PROJECT_ROOT / 'var' / 'hotline.db'}",
        validation_alias=AliasChoices("HOTLINE_DATABASE_URL", "DATABASE_URL", "database_url"),
    )
    redis_url: str = Field(
        default="redis://127.0.0.1:6379/0",
        validation_alias=AliasChoices("HOTLINE_REDIS_URL", "REDIS_URL", "redis_url"),
    )
    vosk_model_path: Path | None = Field(
        default=None,
        validation_alias=AliasChoices("HOTLINE_VOSK_MODEL_PATH", "VOSK_MODEL_PATH", "vosk_model_path"),
    )
    asr_workers: int = Field(default=max(1, os.cpu_count() or 1), ge=1, le=64)
    # ASR: vosk-server protocol websocket on its own listener (port 0: off); durable job workers.
    asr_ws_host: str = "127.0.0.1"
    asr_ws_port: int = Field(default=2700, ge=0, le=65535)
    asr_ws_token: str | None = Field(default=None, pattern=r"^[A-Za-z0-9_-]{16,128}$")  # clients' bearer token
    asr_job_workers: int = Field(default=1, ge=1, le=16)  # whole-call jobs; the rest of the pool stays for live calls
    redis_key_prefix: str = "hotline"

    # IVR behaviour.
    menu_timeout_seconds: float = Field(default=6.0, gt=0, le=60)
    menu_retries: int = Field(default=2, ge=0, le=5)
    record_max_seconds: int = Field(default=60, ge=3, le=600)
    record_silence_seconds: int = Field(default=3, ge=1, le=30)
    record_min_seconds: float = Field(default=1.0, ge=0, le=30)
    complaint_grammar: list[str] = Field(default_factory=list)  # empty: free-form transcription

    # Timeouts (seconds) for every network await.
    ami_action_timeout: float = Field(default=5.0, gt=0, le=120)
    ami_ping_interval: float = Field(default=3.0, gt=0, le=60)
    agi_command_timeout: float = Field(default=120.0, gt=0, le=3600)
    connect_timeout: float = Field(default=5.0, gt=0, le=120)
    # A call waits this long for a case/record write; then the write is kept in the outbox and the call goes on.
    db_write_timeout: float = Field(default=2.0, gt=0, le=60)
    # The whole of one live-state Redis operation, retries included: Redis is a mirror, so a call never waits on it
    # longer than this (writes from the call path do not wait at all; they are sent in the background).
    redis_op_timeout: float = Field(default=0.5, gt=0, le=30)

    queues: list[QueueSpec] = Field(
        default_factory=lambda: [QueueSpec(name="complaints"), QueueSpec(name="inquiries"), QueueSpec(name="operator")]
    )
    agents: list[AgentAccount] = Field(
        default_factory=lambda: [AgentAccount(name="agent1"), AgentAccount(name="agent2")]
    )

    # Queueing: metrics, priority. metrics_token None: /metrics answers loopback clients only.
    service_level_seconds: int = Field(default=20, ge=1, le=3600)
    metrics_interval_minutes: int = Field(default=15, ge=1, le=1440)
    metrics_token: str | None = Field(default=None, repr=False)
    urgent_categories: list[str] = Field(default_factory=lambda: ["safety"])
    callback_after_seconds: int = Field(default=30, ge=0, le=3600)  # waited this long: key 5 asks for a callback
    callback_max_attempts: int = Field(default=3, ge=1, le=10)
    callback_retry_seconds: int = Field(default=60, ge=1, le=86400)
    callback_dial_template: str = Field(default="PJSIP/trunk/sip:{number}@127.0.0.1:5070",
                                        pattern=r"^PJSIP/[^\s;,]*\{number\}[^\s;,]*$")  # via the carrier's SBC

    language: str = Field(default="ko", pattern=r"^[a-z]{2,3}$")
    prompts_file: Path = PROJECT_ROOT / "config" / "prompts.yaml"
    prompts_override_dir: Path | None = None
    ivr_flow_file: Path = PROJECT_ROOT / "config" / "ivr" / "default.yaml"  # the shipped flow
    # More numbers answered by the IVR, each with the flow it runs ({"12399": "flood-warning"}); the hotline
    # number runs "default" unless mapped here. A flow of another name is published, or <name>.yaml beside
    # ivr_flow_file; admins switch a number's flow without restart with `hotline flows route`.
    ivr_numbers: dict[str, str] = Field(default_factory=dict)
    # Dial() target of IVR transfer nodes, "{number}" replaced, e.g. "PJSIP/trunk/sip:{number}@carrier:5060";
    # None: transfer nodes end the call (no outbound route configured).
    transfer_dial: str | None = Field(default=None, pattern=r"^PJSIP/[A-Za-z0-9_.-]+/sip:\{number\}@[A-Za-z0-9_.:-]+$")

    log_level: str = Field(default="INFO", pattern=r"^(DEBUG|INFO|WARNING|ERROR)$")
    # uvloop: libuv's event loop, about a third less CPU per AGI command than asyncio's own (benchmarks/ivr_load.py)
    event_loop: Literal["uvloop", "asyncio"] = "uvloop"

    @field_validator("sip_host", "ami_host", "agi_host", "http_host", "asr_ws_host")
    @classmethod
    def _is_ip(cls, value: str) -> str:
        try:
            ipaddress.ip_address(value)
        except ValueError as exc:
            raise ValueError(f"{value!r} is not an IP address") from exc
        return value

    @field_validator("ivr_numbers", mode="before")
    @classmethod
    def _numbers_are_text(cls, value: Any) -> Any:
        # YAML reads an unquoted 12399 as an int; a dialed number is text.
        return {str(k): v for k, v in value.items()} if isinstance(value, dict) else value

    @field_validator("ivr_numbers")
    @classmethod
    def _are_number_routes(cls, value: dict[str, str]) -> dict[str, str]:
        for number, flow in value.items():
            if not re.fullmatch(r"[0-9]{2,15}", number):
                raise ValueError(f"number {number!r} must be 2-15 digits")
            if not re.fullmatch(r"[a-z][a-z0-9_-]{0,63}", flow):
                raise ValueError(f"number {number}: {flow!r} is not a flow name (lower-case letters, digits, - and _)")
        return value

    @field_validator("trunk_addresses")
    @classmethod
    def _are_networks(cls, value: list[str]) -> list[str]:
        for item in value:
            try:
                ipaddress.ip_network(item, strict=False)
            except ValueError as exc:
                raise ValueError(f"{item!r} is not an IP address or network") from exc
        return value

    @model_validator(mode="after")
    def _check_consistency(self) -> Settings:
        if self.rtp_port_end <= self.rtp_port_start:
            raise ValueError("rtp_port_end must be above rtp_port_start")
        queue_names = {q.name for q in self.queues}
        for needed in ("complaints", "inquiries", "operator"):
            if needed not in queue_names:
                raise ValueError(f"queues must include {needed!r} (the IVR routes to it)")
        for q in self.queues:
            if q.on_max_wait.startswith("overflow:") and q.on_max_wait[9:] not in queue_names - {q.name}:
                raise ValueError(f"queue {q.name!r}: on_max_wait overflows to {q.on_max_wait[9:]!r}, not another queue")
        for agent in self.agents:
            unknown = set(agent.queues) - queue_names
            if unknown:
                raise ValueError(f"agent {agent.name!r} names unknown queue(s) {sorted(unknown)}")
        ports = {
            "sip_port": self.sip_port,
            "ami_port": self.ami_port,
            "agi_port": self.agi_port,
            "http_port": self.http_port,
        }
        seen: dict[int, str] = {}
        for name, port in ports.items():
            if port in seen:
                raise ValueError(f"{name} and {seen[port]} are both {port}")
            seen[port] = name
        return self

    def __repr_args__(self) -> Any:
        # A password inside a database or Redis URL stays out of printed and logged settings too.
        for name, value in super().__repr_args__():
            if name in ("database_url", "redis_url") and isinstance(value, str):
                value = hide_url_password(value)
            yield name, value

    @property
    def flow_numbers(self) -> dict[str, str]:
        """Every number the IVR answers → the flow it runs (the hotline number runs "default" unless mapped)."""
        return {self.hotline_number: "default", **self.ivr_numbers}

    @property
    def secrets_file(self) -> Path:
        """File holding generated secrets (AMI secret, agent passwords), mode 0600."""
        return self.run_dir / "secrets.yaml"

    @property
    def asterisk_run_dir(self) -> Path:
        """Where the rendered Asterisk configuration and its spool/log/run directories live."""
        return self.run_dir / "asterisk"

    @property
    def recordings_dir(self) -> Path:
        """Where callers' recorded descriptions are kept (Asterisk writes, the bridge reads)."""
        return self.run_dir / "recordings"

    @property
    def outbox_dir(self) -> Path:
        """Where writes the database did not take in time wait (journal files, mode 0600)."""
        return self.run_dir / "outbox"

    @property
    def prompts_dir(self) -> Path:
        """Where synthesized prompt audio is cached."""
        return self.run_dir / "prompts"

    @classmethod
    def settings_customise_sources(
        cls,
        settings_cls: type[BaseSettings],
        init_settings: PydanticBaseSettingsSource,
        env_settings: PydanticBaseSettingsSource,
        dotenv_settings: PydanticBaseSettingsSource,
        file_secret_settings: PydanticBaseSettingsSource,
    ) -> tuple[PydanticBaseSettingsSource, ...]:
        # init (CLI overrides) > environment > file (passed as the lowest init layer by load_settings).
        return (init_settings, env_settings, file_secret_settings)


def hide_url_password(url: str) -> str:
    """The URL with the password of its user-info part replaced by ***."""
    return re.sub(r"^([A-Za-z][A-Za-z0-9+.-]*://[^/@:]*:)[^/]*@", r"\1***@", url)


def _read_config_file(path: Path) -> dict[str, Any]:
    try:
        data = yaml.safe_load(path.read_text(encoding="utf-8")) or {}
    except OSError as exc:
        raise SettingsError(f"config file {path}: {exc.strerror}") from exc
    except yaml.YAMLError as exc:
        raise SettingsError(f"config file {path}: not valid YAML ({str(exc).splitlines()[0]})") from exc
    if not isinstance(data, dict):
        raise SettingsError(f"config file {path}: expected a mapping of settings at the top level")
    return data


def _first_error(exc: ValidationError) -> str:
    err = exc.errors()[0]
    msg = str(err.get("msg", "invalid")).removeprefix("Value error, ")
    where = ".".join(str(p) for p in err.get("loc", ()))
    return f"setting {where}: {msg}" if where else f"settings: {msg}"


def load_settings(config_file: Path | None = None, overrides: dict[str, Any] | None = None) -> Settings:
    """Load settings: defaults < YAML file < environment < overrides; raise SettingsError (one line) if invalid."""
    file_values: dict[str, Any] = {}
    path = config_file or (Path(os.environ["HOTLINE_CONFIG"]) if os.environ.get("HOTLINE_CONFIG") else None)
    if path is not None:
        file_values = _read_config_file(path)
    elif DEFAULT_CONFIG_FILE.exists():
        file_values = _read_config_file(DEFAULT_CONFIG_FILE)
    cli = {k: v for k, v in (overrides or {}).items() if v is not None}
    env_keys = _env_overridden_fields()
    # Environment beats the file: drop file values for fields the environment sets.
    merged = {k: v for k, v in file_values.items() if k not in env_keys}
    merged.update(cli)
    try:
        return Settings(**merged)
    except ValidationError as exc:
        raise SettingsError(_first_error(exc)) from None


def _env_overridden_fields() -> set[str]:
    names: set[str] = set()
    for field_name, field in Settings.model_fields.items():
        candidates = {f"HOTLINE_{field_name}".upper()}
        alias = field.validation_alias
        if isinstance(alias, AliasChoices):
            candidates |= {str(c).upper() for c in alias.choices}
        if any(c in os.environ for c in candidates):
            names.add(field_name)
    return names


def resolve_secrets(settings: Settings) -> Settings:
    """Fill in secrets not given by env/file: generate once and keep them in the run dir's secrets file (0600)."""
    path = settings.secrets_file
    stored: dict[str, Any] = {}
    if path.exists():
        stored = _read_config_file(path)
    changed = False
    generators = {
        "ami_secret": lambda: secrets.token_urlsafe(18),
        "session_secret": lambda: secrets.token_urlsafe(32),
        "admin_password": lambda: secrets.token_urlsafe(12),
        "agi_secret": lambda: secrets.token_urlsafe(32),
        "asr_ws_token": lambda: secrets.token_urlsafe(32),
    }
    for name, make in generators.items():
        if getattr(settings, name) is None:
            if not stored.get(name):
                stored[name] = make()
                changed = True
            settings = settings.model_copy(update={name: stored[name]})
    agent_pw: dict[str, str] = stored.setdefault("agent_passwords", {})
    agent_sip: dict[str, str] = stored.setdefault("agent_sip_secrets", {})
    agents = []
    for agent in settings.agents:
        if agent.password is None:
            if not agent_pw.get(agent.name):
                agent_pw[agent.name] = secrets.token_urlsafe(12)
                changed = True
            agent = agent.model_copy(update={"password": agent_pw[agent.name]})
        if agent.sip_secret is None:
            # Generated apart from the console password: knowing one tells nothing of the other.
            if not agent_sip.get(agent.name) or agent_sip[agent.name] == agent.password:
                agent_sip[agent.name] = secrets.token_urlsafe(24)
                changed = True
            agent = agent.model_copy(update={"sip_secret": agent_sip[agent.name]})
        if agent.sip_secret == agent.password:
            raise SettingsError(f"agents: {agent.name}: sip_secret must not be the console password")
        agents.append(agent)
    settings = settings.model_copy(update={"agents": agents})
    if changed:
        path.parent.mkdir(parents=True, exist_ok=True)
        tmp = path.with_suffix(".tmp")
        fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
        with os.fdopen(fd, "w", encoding="utf-8") as fh:
            yaml.safe_dump(stored, fh)
        os.replace(tmp, path)
    return settings
