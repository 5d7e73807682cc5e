"""Server-side console sessions: the cookie holds only a random token; the session lives in Redis.

Logging out deletes the session, and a password change deletes every session of that account, so a copied
cookie stops working at once (with its CSRF token, which lives in the session). Redis keys are a keyed hash of
the token, so whoever reads Redis cannot rebuild a cookie from them.
"""
from __future__ import annotations

import asyncio
import hashlib
import hmac
import json
import secrets
import time
from collections.abc import Awaitable
from typing import Any, Final, Literal, Protocol, TypeVar

import redis.asyncio as aioredis
from aiohttp import web
from aiohttp_session import AbstractStorage, Session, get_session, new_session
from redis.exceptions import RedisError

SESSION_USER: Final = "username"
SESSION_CSRF: Final = "csrf"
SESSION_STAMP: Final = "credential_stamp"  # the account's credential stamp at login: a password change voids it

T = TypeVar("T")


class ConsoleStoreUnavailable(Exception):
    """The console's Redis store (sessions, login throttle) did not answer in time; the message is one line."""


class SessionBackend(Protocol):
    """Where session data is kept, by session id, with an index of each account's sessions."""

    async def load(self, sid: str) -> dict[str, Any] | None:
        """The stored session data, or None if there is none (expired, revoked, never was)."""
        ...

    async def save(self, sid: str, data: dict[str, Any], ttl: int, *, new: bool, username: str | None) -> bool:
        """Store the data for ttl s; an existing session (new=False) is only rewritten while it still exists."""
        ...

    async def delete(self, sid: str) -> None:
        """Forget one session."""
        ...

    async def revoke_account(self, username: str) -> int:
        """Forget every session of the account; how many there were."""
        ...


class RedisSessionBackend:
    """Sessions as Redis strings with a TTL, plus one set per account naming its sessions."""

    def __init__(self, client: aioredis.Redis, *, prefix: str, timeout: float = 2.0) -> None:
        self._r = client
        self._prefix = f"{prefix}:console"
        self._timeout = timeout

    def _key(self, sid: str) -> str:
        return f"{self._prefix}:session:{sid}"

    def _index(self, username: str) -> str:
        return f"{self._prefix}:account-sessions:{username}"

    async def _bounded(self, what: str, op: Awaitable[T]) -> T:
        try:
            async with asyncio.timeout(self._timeout):
                return await op
        except TimeoutError:
            raise ConsoleStoreUnavailable(f"session store: no answer to {what} within {self._timeout:g} s") from None
        except RedisError as exc:
            raise ConsoleStoreUnavailable(f"session store: {what} failed ({type(exc).__name__})") from None

    async def load(self, sid: str) -> dict[str, Any] | None:
        """The stored session data, or None."""
        raw = await self._bounded("load", self._r.get(self._key(sid)))
        if raw is None:
            return None
        try:
            data = json.loads(raw)
        except (ValueError, UnicodeDecodeError):
            return None
        return data if isinstance(data, dict) else None

    async def save(self, sid: str, data: dict[str, Any], ttl: int, *, new: bool, username: str | None) -> bool:
        """SET NX for a new session, SET XX for an existing one: a request still in flight when its session was
        revoked must not bring it back."""
        key = self._key(sid)
        text = json.dumps(data, separators=(",", ":"))

        async def write() -> bool:
            async with self._r.pipeline(transaction=True) as pipe:
                pipe.set(key, text, ex=ttl, nx=new, xx=not new)
                if username:
                    pipe.sadd(self._index(username), sid)
                    pipe.expire(self._index(username), ttl, gt=True)
                    pipe.expire(self._index(username), ttl, nx=True)
                results = await pipe.execute()
            return bool(results[0])

        return await self._bounded("save", write())

    async def delete(self, sid: str) -> None:
        """Forget one session (and its entry in its account's index)."""
        async def drop() -> None:
            raw = await self._r.getdel(self._key(sid))
            username = None
            if raw is not None:
                try:
                    username = json.loads(raw).get("session", {}).get(SESSION_USER)
                except (ValueError, AttributeError, UnicodeDecodeError):
                    username = None
            if isinstance(username, str):
                await self._r.srem(self._index(username), sid)

        await self._bounded("delete", drop())

    async def revoke_account(self, username: str) -> int:
        """Forget every session of the account."""
        async def revoke() -> int:
            index = self._index(username)
            sids = await self._r.smembers(index)
            keys = [self._key(s.decode() if isinstance(s, bytes) else s) for s in sids]
            async with self._r.pipeline(transaction=True) as pipe:
                if keys:
                    pipe.delete(*keys)
                pipe.delete(index)
                results = await pipe.execute()
            return int(results[0]) if keys else 0

        return await self._bounded("revoke", revoke())


class MemorySessionBackend:
    """Sessions in this process's memory: for tests and single-process demos (not shared, lost on restart)."""

    def __init__(self) -> None:
        self._data: dict[str, tuple[float, dict[str, Any]]] = {}
        self._index: dict[str, set[str]] = {}

    async def load(self, sid: str) -> dict[str, Any] | None:
        """The stored session data, or None."""
        found = self._data.get(sid)
        if found is None or found[0] < time.monotonic():
            self._data.pop(sid, None)
            return None
        return json.loads(json.dumps(found[1]))

    async def save(self, sid: str, data: dict[str, Any], ttl: int, *, new: bool, username: str | None) -> bool:
        """Store the data (same NX/XX rule as Redis)."""
        exists = await self.load(sid) is not None
        if exists == new:
            return False
        self._data[sid] = (time.monotonic() + ttl, json.loads(json.dumps(data)))
        if username:
            self._index.setdefault(username, set()).add(sid)
        return True

    async def delete(self, sid: str) -> None:
        """Forget one session."""
        self._data.pop(sid, None)
        for sids in self._index.values():
            sids.discard(sid)

    async def revoke_account(self, username: str) -> int:
        """Forget every session of the account."""
        sids = self._index.pop(username, set())
        return sum(self._data.pop(s, None) is not None for s in sids)


class ServerSideStorage(AbstractStorage):
    """aiohttp-session storage: a random token in an HttpOnly cookie, the data in a SessionBackend.

    Anonymous sessions (the login form's CSRF token) live anonymous_max_age s, logged-in ones max_age s.
    """

    def __init__(
        self,
        backend: SessionBackend,
        key: bytes,
        *,
        cookie_name: str,
        max_age: int,
        anonymous_max_age: int = 900,
        secure: bool = False,
        samesite: Literal["Strict", "Lax"] = "Lax",
    ) -> None:
        super().__init__(cookie_name=cookie_name, max_age=max_age, httponly=True, secure=secure, samesite=samesite)
        self.backend = backend
        self._key = bytes(key)
        self._anonymous_max_age = min(anonymous_max_age, max_age)

    def session_id(self, token: str) -> str:
        """The backend's id of a cookie token (a keyed hash: the store never holds a usable cookie)."""
        return hmac.new(self._key, token.encode(), hashlib.sha256).hexdigest()

    async def load_session(self, request: web.Request) -> Session:
        """The session of the request's cookie, or a new empty one; 503 if the store does not answer."""
        token = self.load_cookie(request)
        # Tokens are token_urlsafe (ASCII): anything else, bytes that are not UTF-8 included, is no session.
        if not token or len(token) > 128 or not token.isascii():
            return Session(None, data=None, new=True, max_age=self.max_age)
        try:
            data = await self.backend.load(self.session_id(token))
        except ConsoleStoreUnavailable as exc:
            raise web.HTTPServiceUnavailable(reason=str(exc)) from None
        if data is None:
            return Session(None, data=None, new=True, max_age=self.max_age)
        return Session(token, data=data, new=False, max_age=self.max_age)  # type: ignore[arg-type]

    async def save_session(self, request: web.Request, response: web.StreamResponse, session: Session) -> None:
        """Write a changed session; an invalidated one is deleted and its cookie cleared."""
        token = session.identity
        try:
            if session.empty:
                if token is not None:
                    await self.backend.delete(self.session_id(str(token)))
                self.save_cookie(response, "", max_age=None)
                return
            username = session.get(SESSION_USER)
            username = username if isinstance(username, str) else None
            ttl = self.max_age if username else self._anonymous_max_age
            assert ttl is not None
            data = {"created": session.created, "session": dict(session)}
            if token is None:
                token = secrets.token_urlsafe(32)
                await self.backend.save(self.session_id(token), data, ttl, new=True, username=username)
            elif not await self.backend.save(self.session_id(str(token)), data, ttl, new=False, username=username):
                # Revoked while this request ran: do not bring it back, and drop the cookie.
                self.save_cookie(response, "", max_age=None)
                return
        except ConsoleStoreUnavailable:
            # The answer is already decided; without a stored session the next request simply starts anew.
            self.save_cookie(response, "", max_age=None)
            return
        self.save_cookie(response, str(token), max_age=ttl)

    async def forget(self, token: object) -> None:
        """Delete a session by its cookie token (the anonymous one replaced at login)."""
        if isinstance(token, str) and token:
            await self.backend.delete(self.session_id(token))


SESSION_STORAGE: Final = web.AppKey("console_session_storage", ServerSideStorage)


async def start_fresh_session(request: web.Request) -> Session:
    """A new session (new token) replacing the request's current one, which is deleted (no session fixation)."""
    old = await get_session(request)
    try:
        await request.app[SESSION_STORAGE].forget(old.identity)
    except ConsoleStoreUnavailable as exc:
        raise web.HTTPServiceUnavailable(reason=str(exc)) from None
    return await new_session(request)


async def revoke_account_sessions(app: web.Application, username: str) -> int:
    """End every session of the account (password changed, account disabled); how many were ended."""
    return await app[SESSION_STORAGE].backend.revoke_account(username)
