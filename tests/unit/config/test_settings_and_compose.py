"""Settings precedence and validation; docker-compose.yml is well-formed and wired by environment."""
from __future__ import annotations

from pathlib import Path

import pytest
import yaml

from config import SettingsError, load_settings, resolve_secrets

ROOT = Path(__file__).resolve().parents[3]


def test_precedence_defaults_file_env_cli(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    conf = tmp_path / "h.yaml"
    conf.write_text("http_port: 9001\nsip_port: 5070\nami_port: 5039\n")
    monkeypatch.setenv("HOTLINE_SIP_PORT", "5080")
    s = load_settings(conf, {"ami_port": 5040})
    assert s.http_port == 9001  # file over default
    assert s.sip_port == 5080  # environment over file
    assert s.ami_port == 5040  # CLI over everything
    assert s.agi_port == 4573  # default


def test_unprefixed_service_urls(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("DATABASE_URL", "postgresql+asyncpg://u@127.0.0.1/db")
    monkeypatch.setenv("REDIS_URL", "redis://127.0.0.1:6380/1")
    s = load_settings()
    assert s.database_url.startswith("postgresql+asyncpg://") and s.redis_url.endswith(":6380/1")


@pytest.mark.parametrize(
    ("content", "message"),
    [
        ("sip_port: 70000", "setting sip_port: Input should be less than or equal to 65535"),
        ("http_host: example.com", "setting http_host: 'example.com' is not an IP address"),
        ("sip_port: 4573", "settings: agi_port and sip_port are both 4573"),
        ("bogus: 1", "setting bogus: Extra inputs are not permitted"),
        ("[1, 2", "not valid YAML"),
    ],
)
def test_bad_settings_are_one_clear_line(tmp_path: Path, content: str, message: str) -> None:
    conf = tmp_path / "bad.yaml"
    conf.write_text(content)
    with pytest.raises(SettingsError) as err:
        load_settings(conf)
    assert "\n" not in str(err.value)
    assert message in str(err.value)


def test_listeners_default_to_loopback() -> None:
    s = load_settings()
    assert {s.sip_host, s.ami_host, s.agi_host, s.http_host} == {"127.0.0.1"}


def test_secrets_generated_once_and_private(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("HOTLINE_RUN_DIR", str(tmp_path))
    first = resolve_secrets(load_settings())
    second = resolve_secrets(load_settings())
    assert first.ami_secret and first.ami_secret == second.ami_secret
    assert all(a.password for a in first.agents)
    assert [a.password for a in first.agents] == [a.password for a in second.agents]
    assert (tmp_path / "secrets.yaml").stat().st_mode & 0o077 == 0
    monkeypatch.setenv("HOTLINE_AMI_SECRET", "from-env")
    assert resolve_secrets(load_settings()).ami_secret == "from-env"


def test_no_secret_in_repository_config() -> None:
    data = yaml.safe_load((ROOT / "config" / "hotline.yaml").read_text())
    assert "ami_secret" not in data and all("password" not in a for a in data["agents"])


def test_docker_compose_wires_services_by_environment() -> None:
    compose = yaml.safe_load((ROOT / "docker-compose.yml").read_text())
    services = compose["services"]
    assert {"asterisk", "bridge", "redis", "postgres"} <= set(services)
    bridge = services["bridge"]["environment"]
    assert bridge["DATABASE_URL"].startswith("postgresql+asyncpg://")
    assert bridge["REDIS_URL"].startswith("redis://")
    assert bridge["HOTLINE_MANAGE_ASTERISK"] == "false"
    for key in ("HOTLINE_AMI_SECRET", "HOTLINE_SESSION_SECRET", "HOTLINE_ADMIN_PASSWORD"):
        assert bridge[key].startswith("${"), f"{key} must come from the environment"
    asterisk = services["asterisk"]
    assert asterisk["build"] == {"context": ".", "dockerfile": "asterisk/Dockerfile"}
    dockerfile = (ROOT / asterisk["build"]["dockerfile"]).read_text()
    assert dockerfile.count("n=bullseye\\n") == 1 and dockerfile.count("n=bullseye-security\\n") == 1
    # Asterisk runs the bridge's live-transcription EAGI program: the same interpreter and package, and Redis
    # reached through the environment it inherits (ivr.live_transcript.REDIS_URL_ENV)
    assert "FROM python:3.11-slim-bookworm" in dockerfile and "pip install" in dockerfile
    assert (ROOT / "Dockerfile").read_text().startswith("# The hotline bridge") and \
        "FROM python:3.11-slim-bookworm" in (ROOT / "Dockerfile").read_text()
    from ivr.live_transcript import REDIS_URL_ENV
    assert asterisk["environment"][REDIS_URL_ENV] == bridge["REDIS_URL"]
    assert set(compose["volumes"]) >= {"hotline-run"}
