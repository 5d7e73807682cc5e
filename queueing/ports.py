"""What queueing needs of the AMI client and of the call records, typed as Protocols (telephony.AmiClient and
records.DurableCallRecords are the production ones)."""
from __future__ import annotations

from collections.abc import Awaitable, Callable
from typing import TYPE_CHECKING, Any, Protocol

if TYPE_CHECKING:
    from .records import CallRecord

AmiEventHandler = Callable[[Any], Awaitable[None]]
AmiConnectedHandler = Callable[[], Awaitable[None]]


class AmiEvents(Protocol):
    """Subscribing to AMI events and to (re)connects."""

    def on_event(self, name: str, handler: AmiEventHandler) -> None: ...
    def on_connected(self, handler: AmiConnectedHandler) -> None: ...


class AmiActions(Protocol):
    """Sending AMI actions (failures raise telephony.AmiError; Asterisk's refusals telephony.AmiActionFailed)."""

    async def action(self, fields: dict[str, Any], *, timeout: float | None = None, as_list: bool | None = None,
                     check: bool = True) -> Any: ...
    async def event_list(self, fields: dict[str, Any], *, timeout: float | None = None) -> list[Any]: ...


class AmiPort(AmiEvents, AmiActions, Protocol):
    """Both: what a component that listens and acts on AMI is given."""


class CallRecordWriter(Protocol):
    """Merging a call's detail record and reading it back (None: no record, or the database did not answer)."""

    async def upsert(self, linkedid: str, **fields: Any) -> object: ...
    async def get(self, linkedid: str) -> CallRecord | None: ...


class AsteriskCli(Protocol):
    """CLI commands on Asterisk's local control socket, for what the AMI account may not do (telephony.AsteriskConsole;
    failures raise telephony.AsteriskConsoleError)."""

    async def command(self, text: str, *, timeout: float | None = None) -> str: ...
