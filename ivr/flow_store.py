"""FlowStore: immutable published versions of flows, the audit log of every publish and route change, survey
answers, and which flow each dialed number runs (routes set by admins, over the configured mapping)."""
from __future__ import annotations

from dataclasses import asdict, dataclass
from datetime import UTC, datetime
from typing import Any

from sqlalchemy import Column, Integer, String, Table, Text, UniqueConstraint, func, insert, select
from sqlalchemy.exc import IntegrityError
from sqlalchemy.ext.asyncio import AsyncEngine

from storage import UTCDateTime, dialect_insert, finish_on_cancel, metadata

flow_versions = Table(
    "ivr_flow_versions", metadata,
    Column("id", Integer, primary_key=True, autoincrement=True),
    Column("flow_name", String(64), nullable=False),
    Column("version", Integer, nullable=False),
    Column("text", Text, nullable=False),
    Column("published_at", UTCDateTime, nullable=False),
    Column("published_by", String(64), nullable=False),
    Column("rollback_of", Integer, nullable=True),  # the version whose text this re-publishes
    Column("comment", String(500), nullable=False, default=""),
    UniqueConstraint("flow_name", "version"),
)

flow_audit = Table(
    "ivr_flow_audit", metadata,
    Column("id", Integer, primary_key=True, autoincrement=True),
    Column("at", UTCDateTime, nullable=False),
    Column("actor", String(64), nullable=False),
    Column("action", String(16), nullable=False),  # publish | rollback | route
    Column("flow_name", String(64), nullable=False),
    Column("from_version", Integer, nullable=True),
    Column("to_version", Integer, nullable=False),
    Column("detail", String(500), nullable=False, default=""),
)

survey_results = Table(
    "ivr_survey_results", metadata,
    Column("id", Integer, primary_key=True, autoincrement=True),
    Column("case_number", String(64), nullable=False, index=True),
    Column("score", Integer, nullable=False),
    Column("flow_name", String(64), nullable=False),
    Column("flow_version", Integer, nullable=False),
    Column("at", UTCDateTime, nullable=False),
)


# Which flow a dialed number runs, as switched by an admin (numbers not here run their configured flow).
number_routes = Table(
    "ivr_number_routes", metadata,
    Column("number", String(15), primary_key=True),
    Column("flow_name", String(64), nullable=False),
    Column("routed_at", UTCDateTime, nullable=False),
    Column("routed_by", String(64), nullable=False),
)


@dataclass(frozen=True)
class NumberRoute:
    """An admin's choice of the flow a dialed number runs."""

    number: str
    flow_name: str
    routed_at: datetime
    routed_by: str

    def to_dict(self) -> dict[str, Any]:
        """JSON form."""
        return asdict(self)


@dataclass(frozen=True)
class FlowVersion:
    """One published version of a flow."""

    flow_name: str
    version: int
    text: str
    published_at: datetime
    published_by: str
    rollback_of: int | None
    comment: str

    def to_dict(self, with_text: bool = True) -> dict[str, Any]:
        """JSON form."""
        out = asdict(self)
        if not with_text:
            out.pop("text")
        return out


@dataclass(frozen=True)
class AuditEntry:
    """Who published what, when, from which version."""

    at: datetime
    actor: str
    action: str
    flow_name: str
    from_version: int | None
    to_version: int
    detail: str

    def to_dict(self) -> dict[str, Any]:
        """JSON form."""
        return asdict(self)


def _version(row: Any) -> FlowVersion:
    return FlowVersion(row.flow_name, row.version, row.text, row.published_at, row.published_by, row.rollback_of,
                       row.comment)


@finish_on_cancel
class FlowStore:
    """Versions are append-only: publishing adds version max+1, rolling back re-publishes an older text."""

    def __init__(self, engine: AsyncEngine) -> None:
        self._engine = engine
        self._upsert = dialect_insert(engine)

    async def live_version(self, name: str) -> int | None:
        """The live (highest) version number of a flow; None if never published."""
        async with self._engine.connect() as conn:
            return (await conn.execute(select(func.max(flow_versions.c.version))
                                       .where(flow_versions.c.flow_name == name))).scalar()

    async def get(self, name: str, version: int | None = None) -> FlowVersion | None:
        """A version (the live one when version is None)."""
        query = select(flow_versions).where(flow_versions.c.flow_name == name)
        query = (query.where(flow_versions.c.version == version) if version is not None
                 else query.order_by(flow_versions.c.version.desc()).limit(1))
        async with self._engine.connect() as conn:
            row = (await conn.execute(query)).first()
        return _version(row) if row is not None else None

    async def versions(self, name: str) -> list[FlowVersion]:
        """Every version of a flow, newest first."""
        async with self._engine.connect() as conn:
            rows = (await conn.execute(select(flow_versions).where(flow_versions.c.flow_name == name)
                                       .order_by(flow_versions.c.version.desc()))).all()
        return [_version(r) for r in rows]

    async def list_flows(self) -> list[dict[str, Any]]:
        """Each published flow's name with its live version."""
        async with self._engine.connect() as conn:
            rows = (await conn.execute(select(flow_versions.c.flow_name, func.max(flow_versions.c.version))
                                       .group_by(flow_versions.c.flow_name)
                                       .order_by(flow_versions.c.flow_name))).all()
        return [{"name": name, "live_version": version} for name, version in rows]

    async def publish(self, name: str, text: str, actor: str, *, comment: str = "",
                      rollback_of: int | None = None) -> FlowVersion:
        """Store text as the next version and log it; it is live from the next call on."""
        for _attempt in range(5):
            try:
                return await self._insert(name, text, actor, comment, rollback_of)
            except IntegrityError:
                continue  # another publisher took the same number at the same moment: take the next
        raise RuntimeError(f"flow {name!r}: could not allocate a version number (too many concurrent publishes)")

    async def _insert(self, name: str, text: str, actor: str, comment: str, rollback_of: int | None) -> FlowVersion:
        now = datetime.now(UTC)
        async with self._engine.begin() as conn:
            previous = (await conn.execute(select(func.max(flow_versions.c.version))
                                           .where(flow_versions.c.flow_name == name))).scalar()
            version = (previous or 0) + 1
            await conn.execute(insert(flow_versions).values(
                flow_name=name, version=version, text=text, published_at=now, published_by=actor,
                rollback_of=rollback_of, comment=comment[:500]))
            await conn.execute(insert(flow_audit).values(
                at=now, actor=actor, action="rollback" if rollback_of is not None else "publish", flow_name=name,
                from_version=previous, to_version=version,
                detail=(f"re-published version {rollback_of}" if rollback_of is not None else comment)[:500]))
        return FlowVersion(name, version, text, now, actor, rollback_of, comment[:500])

    async def audit(self, limit: int = 100, name: str | None = None) -> list[AuditEntry]:
        """Most recent publishes first."""
        query = select(flow_audit).order_by(flow_audit.c.id.desc()).limit(limit)
        if name is not None:
            query = query.where(flow_audit.c.flow_name == name)
        async with self._engine.connect() as conn:
            rows = (await conn.execute(query)).all()
        return [AuditEntry(r.at, r.actor, r.action, r.flow_name, r.from_version, r.to_version, r.detail) for r in rows]

    async def record_survey(self, case_number: str, score: int, flow_name: str, flow_version: int) -> None:
        """Store a caller's 1-5 satisfaction answer against their case."""
        if not 1 <= score <= 5:
            raise ValueError(f"survey score {score} is not 1-5")
        async with self._engine.begin() as conn:
            await conn.execute(insert(survey_results).values(
                case_number=case_number, score=score, flow_name=flow_name, flow_version=flow_version,
                at=datetime.now(UTC)))

    async def surveys(self, case_number: str) -> list[int]:
        """Scores given for a case, oldest first."""
        async with self._engine.connect() as conn:
            rows = (await conn.execute(select(survey_results.c.score)
                                       .where(survey_results.c.case_number == case_number)
                                       .order_by(survey_results.c.id))).all()
        return [r[0] for r in rows]

    async def route_of(self, number: str) -> str | None:
        """The flow an admin routed a dialed number to; None: the configured one."""
        async with self._engine.connect() as conn:
            return (await conn.execute(select(number_routes.c.flow_name)
                                       .where(number_routes.c.number == number))).scalar()

    async def routes(self) -> list[NumberRoute]:
        """Every admin route, by number."""
        async with self._engine.connect() as conn:
            rows = (await conn.execute(select(number_routes).order_by(number_routes.c.number))).all()
        return [NumberRoute(r.number, r.flow_name, r.routed_at, r.routed_by) for r in rows]

    async def set_route(self, number: str, flow_name: str, actor: str, *, previous: str,
                        live_version: int) -> NumberRoute:
        """Route a dialed number to a flow from the next call on, logged in the audit (live_version: the flow's
        version at that moment, for the log; previous: the flow the number ran until now)."""
        now = datetime.now(UTC)
        upsert = self._upsert(number_routes).values(number=number, flow_name=flow_name, routed_at=now,
                                                    routed_by=actor)
        upsert = upsert.on_conflict_do_update(index_elements=[number_routes.c.number],
                                              set_={"flow_name": flow_name, "routed_at": now, "routed_by": actor})
        async with self._engine.begin() as conn:
            await conn.execute(upsert)
            await conn.execute(insert(flow_audit).values(
                at=now, actor=actor, action="route", flow_name=flow_name, from_version=None,
                to_version=live_version, detail=f"number {number}: {previous} → {flow_name}"[:500]))
        return NumberRoute(number, flow_name, now, actor)
