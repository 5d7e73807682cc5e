"""Console accounts: who may log in, with which role, and which SIP endpoint they answer on."""
from __future__ import annotations

import asyncio
import hashlib
import re
from dataclasses import dataclass, field
from datetime import UTC, datetime
from enum import StrEnum
from typing import Any

from argon2 import PasswordHasher
from argon2.exceptions import InvalidHashError, VerificationError
from sqlalchemy import Boolean, DateTime, Integer, String, select
from sqlalchemy.exc import IntegrityError
from sqlalchemy.ext.asyncio import AsyncEngine, async_sessionmaker
from sqlalchemy.orm import Mapped, mapped_column

from storage import Base, finish_on_cancel

MIN_PASSWORD_LENGTH = 8
# Argon2 happily hashes megabytes; a cap keeps a login form from becoming a CPU sink.
MAX_PASSWORD_LENGTH = 256
_USERNAME_RE = re.compile(r"^[a-z0-9][a-z0-9_.-]{1,62}$")
_SIP_ENDPOINT_RE = re.compile(r"^[A-Za-z0-9][A-Za-z0-9_.-]{0,63}$")


class Role(StrEnum):
    """What an account may do: agent < supervisor < admin on the console; department reads cases only."""

    AGENT = "agent"
    SUPERVISOR = "supervisor"
    DEPARTMENT = "department"
    ADMIN = "admin"


class AccountExists(ValueError):
    """An account with that username is already there."""


class AccountNotFound(LookupError):
    """No account with that username."""


class AccountRow(Base):
    """The `accounts` table."""

    __tablename__ = "accounts"

    id: Mapped[int] = mapped_column(Integer, primary_key=True, autoincrement=True)
    username: Mapped[str] = mapped_column(String(64), unique=True, nullable=False)
    display_name: Mapped[str] = mapped_column(String(128), nullable=False)
    password_hash: Mapped[str] = mapped_column(String(255), nullable=False)
    role: Mapped[str] = mapped_column(String(16), nullable=False)
    sip_endpoint: Mapped[str | None] = mapped_column(String(64), nullable=True)
    active: Mapped[bool] = mapped_column(Boolean, nullable=False, default=True)
    created_at: Mapped[datetime] = mapped_column(
        DateTime(timezone=True), nullable=False, default=lambda: datetime.now(UTC)
    )


@dataclass(frozen=True, slots=True)
class Account:
    """A console account as the rest of the code sees it (never carries the password hash)."""

    id: int
    username: str
    display_name: str
    role: Role
    sip_endpoint: str | None
    active: bool
    created_at: datetime
    # Changes whenever the password does: a session started under another stamp is void (see credential_stamp()).
    credential_stamp: str = field(default="", repr=False, compare=False)

    def to_dict(self) -> dict[str, Any]:
        """JSON-ready view of the account."""
        return {
            "id": self.id,
            "username": self.username,
            "display_name": self.display_name,
            "role": str(self.role),
            "sip_endpoint": self.sip_endpoint,
            "active": self.active,
            "created_at": self.created_at.isoformat(),
        }

    @classmethod
    def _from_row(cls, row: AccountRow) -> Account:
        created = row.created_at
        if created.tzinfo is None:
            # SQLite keeps no zone; we always write UTC.
            created = created.replace(tzinfo=UTC)
        return cls(
            id=row.id,
            username=row.username,
            display_name=row.display_name,
            role=Role(row.role),
            sip_endpoint=row.sip_endpoint,
            active=row.active,
            created_at=created,
            credential_stamp=credential_stamp(row.password_hash),
        )


def credential_stamp(password_hash: str) -> str:
    """A short digest of the stored (salted) hash: equal while the password is unchanged, never the hash itself."""
    return hashlib.sha256(b"hotline-credential-stamp\0" + password_hash.encode()).hexdigest()[:32]


def check_password_policy(password: object) -> str:
    """Return the password if it meets the policy, else raise a one-line ValueError."""
    if not isinstance(password, str):
        raise ValueError("password: must be a string")
    if len(password) < MIN_PASSWORD_LENGTH:
        raise ValueError(f"password: must be at least {MIN_PASSWORD_LENGTH} characters")
    if len(password) > MAX_PASSWORD_LENGTH:
        raise ValueError(f"password: must be at most {MAX_PASSWORD_LENGTH} characters")
    return password


def normalize_username(username: object) -> str:
    """Lower-case, trimmed username, or a one-line ValueError if it is not a valid one."""
    if not isinstance(username, str):
        raise ValueError("username: must be a string")
    name = username.strip().lower()
    if not _USERNAME_RE.match(name):
        raise ValueError("username: 2-63 characters of a-z, 0-9, '_', '.', '-', starting with a letter or digit")
    return name


def _check_role(role: object) -> Role:
    try:
        return Role(str(role).strip().lower())
    except ValueError:
        raise ValueError(f"role: must be one of {', '.join(r.value for r in Role)}") from None


def _check_sip_endpoint(sip_endpoint: object) -> str | None:
    if sip_endpoint is None or sip_endpoint == "":
        return None
    if not isinstance(sip_endpoint, str) or not _SIP_ENDPOINT_RE.match(sip_endpoint):
        raise ValueError("sip_endpoint: 1-64 characters of A-Z, a-z, 0-9, '_', '.', '-'")
    return sip_endpoint


def _check_display_name(display_name: object, username: str) -> str:
    if display_name is None or (isinstance(display_name, str) and not display_name.strip()):
        return username
    if not isinstance(display_name, str) or len(display_name.strip()) > 128:
        raise ValueError("display_name: must be a string of at most 128 characters")
    return display_name.strip()


@finish_on_cancel
class AccountStore:
    """Console accounts kept in the `accounts` table; passwords hashed with Argon2id."""

    def __init__(self, engine: AsyncEngine, *, hasher: PasswordHasher | None = None) -> None:
        self._engine = engine
        self._sessions = async_sessionmaker(engine, expire_on_commit=False)
        self._hasher = hasher or PasswordHasher()
        # Verifying against this for unknown users keeps the timing of "no such user" like "wrong password".
        self._dummy_hash: str | None = None

    async def create_schema(self) -> None:
        """Create the accounts table if missing (tests and throw-away set-ups; production uses Alembic)."""
        async with self._engine.begin() as conn:
            await conn.run_sync(lambda sync: AccountRow.__table__.create(sync, checkfirst=True))

    async def _hash(self, password: str) -> str:
        # Argon2 is deliberately slow: keep it off the event loop.
        return await asyncio.to_thread(self._hasher.hash, password)

    async def _verify_hash(self, password_hash: str, password: str) -> bool:
        try:
            return await asyncio.to_thread(self._hasher.verify, password_hash, password)
        except (VerificationError, InvalidHashError):
            return False

    async def create(
        self,
        username: str,
        password: str,
        role: Role | str,
        display_name: str | None = None,
        sip_endpoint: str | None = None,
    ) -> Account:
        """Add an account; ValueError (one line, naming the field) on bad input, AccountExists if taken."""
        name = normalize_username(username)
        check_password_policy(password)
        checked_role = _check_role(role)
        endpoint = _check_sip_endpoint(sip_endpoint)
        shown = _check_display_name(display_name, name)
        row = AccountRow(
            username=name,
            display_name=shown,
            password_hash=await self._hash(password),
            role=checked_role.value,
            sip_endpoint=endpoint,
            active=True,
            created_at=datetime.now(UTC),
        )
        async with self._sessions() as session:
            session.add(row)
            try:
                await session.commit()
            except IntegrityError:
                await session.rollback()
                raise AccountExists(f"username: {name!r} is already taken") from None
            return Account._from_row(row)

    async def _row(self, session: Any, username: str) -> AccountRow | None:
        result = await session.execute(select(AccountRow).where(AccountRow.username == username))
        return result.scalar_one_or_none()

    async def verify(self, username: str, password: str) -> Account | None:
        """The active account if the password is right, else None; upgrades the hash if parameters changed."""
        try:
            name = normalize_username(username)
        except ValueError:
            name = None
        if not isinstance(password, str) or len(password) > MAX_PASSWORD_LENGTH:
            return None
        async with self._sessions() as session:
            row = await self._row(session, name) if name else None
            if row is None or not row.active:
                if self._dummy_hash is None:
                    self._dummy_hash = await self._hash("not-a-real-password")
                await self._verify_hash(self._dummy_hash, password)
                return None
            if not await self._verify_hash(row.password_hash, password):
                return None
            if self._hasher.check_needs_rehash(row.password_hash):
                row.password_hash = await self._hash(password)
                await session.commit()
            return Account._from_row(row)

    async def get(self, username: str) -> Account | None:
        """The account with that username (active or not), or None."""
        try:
            name = normalize_username(username)
        except ValueError:
            return None
        async with self._sessions() as session:
            row = await self._row(session, name)
            return Account._from_row(row) if row is not None else None

    async def set_password(self, username: str, password: str) -> None:
        """Replace an account's password (policy-checked); AccountNotFound if there is no such account."""
        check_password_policy(password)
        name = normalize_username(username)
        new_hash = await self._hash(password)
        async with self._sessions() as session:
            row = await self._row(session, name)
            if row is None:
                raise AccountNotFound(f"no account {name!r}")
            row.password_hash = new_hash
            await session.commit()

    async def set_active(self, username: str, active: bool) -> None:
        """Enable or disable an account (a disabled account cannot log in and its sessions stop working)."""
        name = normalize_username(username)
        async with self._sessions() as session:
            row = await self._row(session, name)
            if row is None:
                raise AccountNotFound(f"no account {name!r}")
            row.active = bool(active)
            await session.commit()

    async def ensure_admin(self, username: str, password: str) -> Account:
        """Create the bootstrap admin unless an account of that name exists (then it is left as is)."""
        existing = await self.get(username)
        if existing is not None:
            return existing
        try:
            return await self.create(username, password, Role.ADMIN, display_name="Administrator")
        except AccountExists:
            # Another process bootstrapped it between our get() and create().
            found = await self.get(username)
            if found is None:
                raise
            return found

    async def list(self) -> list[Account]:
        """All accounts, by username."""
        async with self._sessions() as session:
            result = await session.execute(select(AccountRow).order_by(AccountRow.username))
            return [Account._from_row(row) for row in result.scalars()]
