"""The telephony domain's builder: the AMI client, the Asterisk configuration and process, the FastAGI server."""
from __future__ import annotations

import dataclasses
from collections.abc import Mapping

from config import Settings

from .ami import AmiClient
from .asterisk_process import AsteriskConfig, AsteriskProcess
from .asterisk_supervisor import AsteriskSupervisor, RestartPolicy
from .console import AsteriskConsole
from .fastagi import FastAgiServer


def build_ami(settings: Settings, *, supervised: bool = True) -> AmiClient:
    """The AMI client for the configured Asterisk (nothing connects until start()); supervised: the bridge's
    timings (action timeout, pings); otherwise a one-shot client for the CLI."""
    assert settings.ami_secret is not None, "resolve_secrets() must run before the builders"
    if not supervised:
        return AmiClient(settings.ami_host, settings.ami_port, settings.ami_username, settings.ami_secret,
                         connect_timeout=settings.connect_timeout)
    return AmiClient(settings.ami_host, settings.ami_port, settings.ami_username, settings.ami_secret,
                     action_timeout=settings.ami_action_timeout, ping_interval=settings.ami_ping_interval,
                     connect_timeout=settings.connect_timeout)


def build_asterisk_config(settings: Settings) -> AsteriskConfig:
    """The Asterisk configuration the hotline renders: agents are not static (their endpoints come from
    pjsip_agents.conf, queue membership from AMI), and app_queue's shared announcements stay off because the
    bridge whispers each caller's own position and wait."""
    config = dataclasses.replace(AsteriskConfig.from_settings(settings), agents=())
    return dataclasses.replace(config, queues=[dataclasses.replace(
        q, announce_frequency_seconds=0, periodic_announce=(), periodic_announce_frequency=0)
        for q in config.queues])


def build_asterisk_console(settings: Settings) -> AsteriskConsole:
    """The control socket of the hotline's Asterisk (its run dir is shared with the bridge, like its config)."""
    control_socket = build_asterisk_config(settings).control_socket
    return AsteriskConsole(control_socket, timeout=max(10.0, settings.ami_action_timeout))


def build_asterisk(settings: Settings, env: Mapping[str, str]) -> AsteriskProcess:
    """The Asterisk child process (not started); env: variables its own child programs inherit."""
    return AsteriskProcess(build_asterisk_config(settings), binary=settings.asterisk_binary, env=dict(env))


def build_asterisk_supervisor(settings: Settings, env: Mapping[str, str]) -> AsteriskSupervisor:
    """The supervised Asterisk child (not started): restarted with backoff within the configured limit."""
    policy = RestartPolicy(max_restarts=settings.asterisk_max_restarts,
                           window_seconds=settings.asterisk_restart_window_seconds)
    return AsteriskSupervisor(build_asterisk(settings, env), policy)


def build_fastagi(settings: Settings) -> FastAgiServer:
    """The FastAGI server on the configured address (routes are added by the domains that answer them); every
    session must carry its channel's token made from the AGI secret."""
    assert settings.agi_secret is not None, "resolve_secrets() must run before the builders"
    return FastAgiServer(settings.agi_host, settings.agi_port, command_timeout=settings.agi_command_timeout,
                         secret=settings.agi_secret, max_connections=settings.agi_max_connections)
