"""AMI client on panoramisk's protocol: per-action timeouts, liveness pings, reconnect with backoff.

panoramisk parses the wire protocol (``AMIProtocol``, ``Action``, ``Message``); this module owns the
connection life cycle, because panoramisk's ``Manager`` has no per-action timeout, pings without
checking the answer and reconnects on a fixed timer from an unowned callback.
"""
from __future__ import annotations

import asyncio
import contextlib
import logging
import time
from collections import deque
from collections.abc import Awaitable, Callable, Coroutine
from dataclasses import dataclass, field
from typing import Any

from panoramisk.actions import Action
from panoramisk.ami_protocol import AMIProtocol
from panoramisk.message import Message

from lifecycle import TaskOwner

log = logging.getLogger(__name__)

EventHandler = Callable[[Message], Awaitable[None] | None]
ConnectedHandler = Callable[[], Awaitable[None]]
EventsLostHandler = Callable[[], None]


class AmiError(Exception):
    """An AMI failure; the message is one line."""


class AmiConnectError(AmiError):
    """Could not connect or log in to AMI."""


class AmiTimeout(AmiError):
    """An AMI action got no complete answer in time."""


class AmiNotConnected(AmiError):
    """An action was sent while AMI is disconnected."""


class AmiActionFailed(AmiError):
    """Asterisk answered an action with Error/Failure."""


class _GuardedProtocol(AMIProtocol):
    """panoramisk's protocol with one change: a message that breaks a handler is logged and skipped."""

    def handle_message(self, message: Message) -> None:
        try:
            super().handle_message(message)
        except Exception:  # a malformed or unexpected message must never kill the connection
            log.warning("AMI: skipped a message that could not be handled: %r", dict(message), exc_info=True)

    def close(self) -> None:
        # panoramisk's close() silently forgets in-flight ping/login and partly answered (event-list) actions;
        # hand every in-flight action to the client, which fails them all instead of letting callers time out.
        if self.factory is not None and self.responses:
            self.factory.awaiting_actions.extend({a.id: a for a in self.responses.values()}.values())
            self.responses.clear()
        super().close()


@dataclass
class AmiHealth:
    """Connection facts shown in /healthz."""

    connected: bool = False
    connects: int = 0
    reconnects: int = 0
    last_error: str | None = None
    last_connected_at: float | None = None
    events_received: int = 0
    events_skipped: int = 0  # a handler raised on the event (its subscriber is told through on_handler_failed)
    events_dropped: int = 0  # the event queue was full: the subscribers are told to resync (on_events_lost)
    extra: dict[str, Any] = field(default_factory=dict)


class AmiClient:
    """One AMI connection to one Asterisk, supervised: connect, log in, ping, reconnect, dispatch events."""

    def __init__(
        self,
        host: str,
        port: int,
        username: str,
        secret: str,
        *,
        action_timeout: float = 5.0,
        ping_interval: float = 3.0,
        connect_timeout: float = 5.0,
        backoff_initial: float = 0.5,
        backoff_max: float = 30.0,
        max_queued_events: int = 10000,
        name: str = "ami",
    ) -> None:
        self._host, self._port = host, port
        self._username, self._secret = username, secret
        self._action_timeout = action_timeout
        self._ping_interval = ping_interval
        self._connect_timeout = connect_timeout
        self._backoff_initial, self._backoff_max = backoff_initial, backoff_max
        self._name = name
        self._protocol: _GuardedProtocol | None = None
        self._lost = asyncio.Event()
        self._ready = asyncio.Event()
        self._wake = asyncio.Event()  # set by reconnect_now(): cut the current backoff wait short
        self._handlers: dict[str, list[EventHandler]] = {}
        self._connected_handlers: list[ConnectedHandler] = []
        self._lost_handlers: list[EventsLostHandler] = []
        # Bounded: a stalled handler must not grow the bridge without limit; what overflows is counted and the
        # subscribers resync from Asterisk instead.
        self._events: asyncio.Queue[Message] = asyncio.Queue(maxsize=max(1, max_queued_events))
        self._overflowing = False
        self._tasks = TaskOwner(f"AMI {host}:{port}")
        self.health = AmiHealth()
        # panoramisk's protocol hands unsent actions to these on close; we fail them instead of replaying.
        self.awaiting_actions: deque[Action] = deque()
        self.forgetable_actions = ("ping", "login")
        self.save_stream = None

    # -- wiring -----------------------------------------------------------------------------
    def on_event(self, name: str, handler: EventHandler) -> None:
        """Call handler(event) for each event of this name ('*' for all), in arrival order."""
        self._handlers.setdefault(name.lower(), []).append(handler)

    def on_connected(self, handler: ConnectedHandler) -> None:
        """Await handler() after every successful login (first connect and each reconnect)."""
        self._connected_handlers.append(handler)

    def on_events_lost(self, handler: EventsLostHandler) -> None:
        """Call handler() (plain, not awaited) once each time the event queue overflows and events are dropped."""
        self._lost_handlers.append(handler)

    @property
    def connected(self) -> bool:
        """True while logged in."""
        return self._ready.is_set()

    def health_report(self) -> dict[str, Any]:
        """The connection facts as a JSON-ready dict, with ok=connected."""
        h = self.health
        return {
            "ok": h.connected,
            "address": f"{self._host}:{self._port}",
            "connects": h.connects,
            "reconnects": h.reconnects,
            "last_error": h.last_error,
            "events_received": h.events_received,
            "events_skipped": h.events_skipped,
            "events_dropped": h.events_dropped,
            "events_queued": self._events.qsize(),
        }

    # -- life cycle -------------------------------------------------------------------------
    async def start(self) -> None:
        """Connect and log in once (AmiConnectError if that fails), then keep the connection supervised."""
        await self._connect_once()
        self._spawn(self._dispatch_events(), f"{self._name}-events")
        self._spawn(self._supervise(), f"{self._name}-supervisor")
        await self._run_connected_handlers()

    def reconnect_now(self) -> None:
        """Skip the rest of the reconnect backoff (Asterisk is known to be back); no effect while connected."""
        if not self.connected:
            self._wake.set()

    async def wait_connected(self, timeout: float) -> None:
        """Wait until logged in (AmiNotConnected after timeout)."""
        try:
            await asyncio.wait_for(self._ready.wait(), timeout)
        except TimeoutError:
            raise AmiNotConnected(f"AMI at {self._host}:{self._port}: not connected after {timeout:g} s") from None

    async def close(self) -> None:
        """Stop supervising, close the connection and await every task this client owns."""
        await self._tasks.cancel_all()  # a closed client may be started again
        self._drop_connection()
        self.health.connected = False

    def _spawn(self, coro: Coroutine[Any, Any, None], name: str) -> None:
        self._tasks.spawn(coro, name)

    # -- connection -------------------------------------------------------------------------
    async def _connect_once(self) -> None:
        loop = asyncio.get_running_loop()
        self._lost.clear()
        try:
            async with asyncio.timeout(self._connect_timeout):  # not wait_for: see _send
                _, protocol = await loop.create_connection(_GuardedProtocol, self._host, self._port)
        except TimeoutError:
            raise AmiConnectError(
                f"AMI at {self._host}:{self._port}: no answer within {self._connect_timeout:g} s") from None
        except ConnectionRefusedError:
            raise AmiConnectError(f"AMI at {self._host}:{self._port}: connection refused") from None
        except OSError as exc:
            reason = exc.strerror or str(exc)
            raise AmiConnectError(f"AMI at {self._host}:{self._port}: {reason.lower()}") from None
        protocol.factory = self
        protocol.log = log
        protocol.encoding = "utf-8"
        self._protocol = protocol
        try:
            resp = await self._send(Action({"Action": "Login", "Username": self._username, "Secret": self._secret,
                                             "Events": "on"}), self._connect_timeout)
        except AmiError as exc:
            self._drop_connection()
            raise AmiConnectError(f"AMI login at {self._host}:{self._port}: {exc}") from None
        if not resp.success:
            self._drop_connection()
            raise AmiConnectError(
                f"AMI login as {self._username!r} at {self._host}:{self._port} refused: {resp.message or resp.response}"
            )
        self.health.connected = True
        self.health.connects += 1
        self.health.last_connected_at = time.time()
        self._ready.set()
        log.info("AMI connected to %s:%s as %s", self._host, self._port, self._username)

    def _drop_connection(self) -> None:
        self._ready.clear()
        protocol, self._protocol = self._protocol, None
        if protocol is not None and not protocol.closed:
            protocol.closed = True  # so panoramisk's close() does not re-queue or call back
            protocol.transport.abort()
        self._fail_pending(protocol)

    def _fail_pending(self, protocol: AMIProtocol | None) -> None:
        """Fail every action still waiting for an answer: after a reconnect they would be stale."""
        pending = list(self.awaiting_actions)
        self.awaiting_actions.clear()
        if protocol is not None:
            pending.extend(protocol.responses.values())
            protocol.responses.clear()
        exc = AmiNotConnected(f"AMI at {self._host}:{self._port}: connection lost")
        for action in pending:
            if not action.future.done():
                action.future.set_exception(exc)
                action.future.exception()  # mark retrieved: the awaiting caller may have timed out already

    # called by panoramisk's protocol
    def connection_lost(self, exc: Exception | None) -> None:
        """Protocol callback: the TCP connection closed."""
        was = self.health.connected
        self.health.connected = False
        self._ready.clear()
        self._fail_pending(self._protocol)
        if was:
            reason = exc if isinstance(exc, Exception) else "closed by Asterisk"
            self.health.last_error = f"connection lost: {reason}"
            log.warning("AMI connection to %s:%s lost (%s)", self._host, self._port, reason)
        self._lost.set()

    def dispatch(self, event: Message) -> None:
        """Protocol callback: an event arrived; queue it for ordered dispatch."""
        self.health.events_received += 1
        try:
            self._events.put_nowait(event)
        except asyncio.QueueFull:
            self.health.events_dropped += 1
            if not self._overflowing:  # once per overflow, not once per dropped event
                self._overflowing = True
                log.warning("AMI: event queue full (%d); dropping events until it drains, then resyncing",
                            self._events.maxsize)
                for handler in self._lost_handlers:
                    try:
                        handler()
                    except Exception:  # a subscriber's hook must not break the protocol callback
                        log.exception("AMI: events-lost hook failed")
            return
        if self._overflowing and self._events.qsize() < self._events.maxsize // 2:
            self._overflowing = False

    async def _supervise(self) -> None:
        backoff = self._backoff_initial
        while True:
            ping = asyncio.create_task(self._ping_until_dead(), name=f"{self._name}-ping")
            try:
                await self._lost.wait()
            finally:
                ping.cancel()
                await asyncio.gather(ping, return_exceptions=True)
            self._drop_connection()
            while True:
                self.health.reconnects += 1
                log.info("AMI: reconnecting to %s:%s in %.1f s", self._host, self._port, backoff)
                with contextlib.suppress(TimeoutError):
                    async with asyncio.timeout(backoff):
                        await self._wake.wait()
                self._wake.clear()
                try:
                    await self._connect_once()
                except AmiConnectError as exc:
                    self.health.last_error = str(exc)
                    log.warning("AMI reconnect failed: %s", exc)
                    backoff = min(backoff * 2, self._backoff_max)
                    continue
                backoff = self._backoff_initial
                self._wake.clear()
                break
            await self._run_connected_handlers()

    async def _ping_until_dead(self) -> None:
        # panoramisk's own ping never reads the answer; a silent dead peer is only noticed here.
        while True:
            await asyncio.sleep(self._ping_interval)
            try:
                await self._send(Action({"Action": "Ping"}), self._action_timeout)
            except AmiError as exc:
                log.warning("AMI ping failed (%s); dropping the connection", exc)
                self.health.last_error = f"ping failed: {exc}"
                self.health.connected = False
                self._drop_connection()
                self._lost.set()
                return

    async def _run_connected_handlers(self) -> None:
        for handler in self._connected_handlers:
            try:
                await handler()
            except AmiError as exc:
                log.warning("AMI on-connect handler %s failed: %s", getattr(handler, "__qualname__", handler), exc)
            except Exception:
                log.exception("AMI on-connect handler failed")

    async def _dispatch_events(self) -> None:
        while True:
            event = await self._events.get()
            name = str(event.get("Event", "")).lower()
            for handler in (*self._handlers.get(name, ()), *self._handlers.get("*", ())):
                try:
                    result = handler(event)
                    if result is not None:
                        await result
                except Exception:  # one bad event must not stop the stream
                    self.health.events_skipped += 1
                    log.exception("AMI: handler for %s failed; event skipped", event.get("Event"))

    # -- actions ----------------------------------------------------------------------------
    async def _send(self, action: Action, timeout: float) -> Any:
        protocol = self._protocol
        if protocol is None or protocol.closed:
            raise AmiNotConnected(f"AMI at {self._host}:{self._port}: not connected")
        future = protocol.send(action, as_list=action.as_list)
        try:
            # not wait_for: on Python 3.11 it swallows a cancel that races with the answer (close() would hang)
            async with asyncio.timeout(timeout):
                return await future
        except TimeoutError:
            protocol.responses.pop(action.id, None)
            raise AmiTimeout(f"AMI action {action['Action']} got no answer within {timeout:g} s") from None

    async def action(self, fields: dict[str, Any], *, timeout: float | None = None, as_list: bool | None = None,
                     check: bool = True) -> Any:
        """Send one action and return its response (a list for event-list actions); errors are AmiError."""
        act = Action(dict(fields), as_list=as_list)
        result = await self._send(act, timeout or self._action_timeout)
        if check:
            first = result[0] if isinstance(result, list) else result
            if str(first.get("Response", "Success")) in ("Error", "Fail", "Failure"):
                raise AmiActionFailed(f"AMI action {fields.get('Action')} failed: {first.get('Message', 'error')}")
        return result

    async def event_list(self, fields: dict[str, Any], *, timeout: float | None = None) -> list[Message]:
        """Send an action that answers with an event list; return just the events (without the closing one)."""
        result = await self.action(fields, timeout=timeout, as_list=True)
        items = result if isinstance(result, list) else [result]
        return [m for m in items if "Event" in m and not str(m.get("Event", "")).endswith("Complete")]
