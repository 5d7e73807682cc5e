"""Probe: reads what a user would check of a running hotline: its case store, call records and Redis live state."""
from __future__ import annotations

import asyncio
import json
from typing import Any

import redis.asyncio as aioredis

from cases import CaseStore
from queueing import CallRecordStore
from storage import create_engine_from_url
from tests.support.hotline_process import HotlineUnderTest


class Probe:
    """Reads what a user would check: the case store, the call records and Redis live state."""

    def __init__(self, hotline: HotlineUnderTest) -> None:
        self.hotline = hotline
        self.settings = hotline.settings()
        self.engine = create_engine_from_url(self.settings.database_url)
        self.cases = CaseStore(self.engine)
        self.records = CallRecordStore(self.engine)
        self.redis = aioredis.Redis.from_url(self.settings.redis_url, decode_responses=True)
        self.prefix = self.settings.redis_key_prefix

    async def live_call(self, linkedid: str) -> dict[str, Any]:
        """The call's live hash in Redis (the IVR path decoded)."""
        stored = await self.redis.hgetall(f"{self.prefix}:call:{linkedid}")
        raw: dict[str, Any] = {str(k): v for k, v in stored.items()}
        if raw.get("ivr_path"):
            raw["ivr_path"] = json.loads(raw["ivr_path"])
        return raw

    async def live_ids(self) -> set[str]:
        """Linkedids of calls Redis holds as in progress."""
        return {str(m) for m in await self.redis.smembers(f"{self.prefix}:calls:live")}

    async def case_by_caller(self, caller: str, timeout: float = 30.0, until: Any = None) -> Any:
        """The newest case of this caller once `until(case)` holds (or the last seen at the timeout)."""
        deadline = asyncio.get_running_loop().time() + timeout
        case = None
        while asyncio.get_running_loop().time() < deadline:
            for c in await self.cases.list_recent(limit=100):
                if c.caller_number == caller:
                    case = c
                    break
            if case is not None and (until is None or until(case)):
                return case
            await asyncio.sleep(0.3)
        return case

    async def close(self) -> None:
        """Close the Redis client and the database engine."""
        await self.redis.aclose()
        await self.engine.dispose()
