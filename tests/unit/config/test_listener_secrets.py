"""The AGI secret and the ASR websocket token: generated once into the 0600 secrets file, or from the environment."""
from __future__ import annotations

import stat
from pathlib import Path

import pytest
import yaml

from config import SettingsError, load_settings, resolve_secrets
from config.settings import PROJECT_ROOT


def test_listener_secrets_are_generated_once_into_the_private_secrets_file(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("HOTLINE_RUN_DIR", str(tmp_path))
    first = resolve_secrets(load_settings())
    assert first.agi_secret and first.asr_ws_token and first.agi_secret != first.asr_ws_token
    assert len(first.agi_secret) >= 32 and len(first.asr_ws_token) >= 32
    path = tmp_path / "secrets.yaml"
    assert stat.S_IMODE(path.stat().st_mode) == 0o600
    stored = yaml.safe_load(path.read_text())
    assert stored["agi_secret"] == first.agi_secret and stored["asr_ws_token"] == first.asr_ws_token
    again = resolve_secrets(load_settings())
    assert (again.agi_secret, again.asr_ws_token) == (first.agi_secret, first.asr_ws_token)


def test_the_environment_gives_them_and_a_weak_one_is_a_one_line_error(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("HOTLINE_RUN_DIR", str(tmp_path))
    monkeypatch.setenv("HOTLINE_AGI_SECRET", "from-the-environment-0123")
    monkeypatch.setenv("HOTLINE_AGI_MAX_CONNECTIONS", "64")
    settings = resolve_secrets(load_settings())
    assert settings.agi_secret == "from-the-environment-0123" and settings.agi_max_connections == 64
    monkeypatch.setenv("HOTLINE_ASR_WS_TOKEN", "short")
    with pytest.raises(SettingsError, match=r"^setting asr_ws_token: String should match pattern"):
        load_settings()


def test_compose_gives_asterisk_and_the_bridge_the_same_listener_secrets() -> None:
    services = yaml.safe_load((PROJECT_ROOT / "docker-compose.yml").read_text())["services"]
    for name in ("HOTLINE_AGI_SECRET", "HOTLINE_ASR_WS_TOKEN"):
        assert services["asterisk"]["environment"][name] == services["bridge"]["environment"][name]
        assert services["bridge"]["environment"][name].startswith("${")
