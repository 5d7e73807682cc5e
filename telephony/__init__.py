"""Telephony protocols and process control: AMI client, FastAGI server, the Asterisk child process."""
from .ami import AmiActionFailed, AmiClient, AmiConnectError, AmiError, AmiNotConnected, AmiTimeout
from .asterisk_process import (
    AsteriskConfig,
    AsteriskConfigError,
    AsteriskProcess,
    AsteriskStartError,
    render_asterisk_config,
)
from .console import AsteriskConsole, AsteriskConsoleError
from .fastagi import AgiCommandError, AgiError, AgiHangup, AgiResult, AgiSession, AgiTimeout, FastAgiServer, agi_quote

__all__ = [
    "AgiCommandError", "AgiError", "AgiHangup", "AgiResult", "AgiSession", "AgiTimeout", "AmiActionFailed",
    "AmiClient", "AmiConnectError", "AmiError", "AmiNotConnected", "AmiTimeout", "AsteriskConfig",
    "AsteriskConfigError", "AsteriskConsole", "AsteriskConsoleError",
    "AsteriskProcess", "AsteriskStartError", "FastAgiServer", "agi_quote",
    "render_asterisk_config",
]
