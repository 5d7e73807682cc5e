"""Typed settings and the default configuration files."""
from .settings import AgentAccount, QueueSpec, Settings, SettingsError, load_settings, resolve_secrets

__all__ = ["AgentAccount", "QueueSpec", "Settings", "SettingsError", "load_settings", "resolve_secrets"]
