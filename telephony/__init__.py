"""Telephony protocols and process control: AMI client, FastAGI server, the Asterisk child process."""
from .ami import AmiActionFailed, AmiClient, AmiConnectError, AmiError, AmiNotConnected, AmiTimeout
from .asterisk_process import (
    AsteriskConfig,
    AsteriskConfigError,
    AsteriskProcess,
    AsteriskStartError,
    render_asterisk_config,
)
from .asterisk_supervisor import AsteriskSupervisor, RestartBudget, RestartPolicy
from .console import AsteriskConsole, AsteriskConsoleError
from .fastagi import (
    AGI_SECRET_ENV,
    AgiCommandError,
    AgiError,
    AgiHandler,
    AgiHangup,
    AgiResult,
    AgiSession,
    AgiTimeout,
    FastAgiServer,
    agi_quote,
    agi_token,
)

__all__ = [
    "AGI_SECRET_ENV", "AgiCommandError", "AgiError", "AgiHandler", "AgiHangup", "AgiResult", "AgiSession",
    "AgiTimeout", "AmiActionFailed", "AmiClient", "AmiConnectError", "AmiError", "AmiNotConnected", "AmiTimeout",
    "AsteriskConfig", "AsteriskConfigError", "AsteriskConsole", "AsteriskConsoleError", "AsteriskProcess",
    "AsteriskStartError", "AsteriskSupervisor",
    "FastAgiServer", "RestartBudget", "RestartPolicy", "agi_quote", "agi_token", "render_asterisk_config",
]
