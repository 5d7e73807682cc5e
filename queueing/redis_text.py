"""Redis replies as the text they are: every client here is made with decode_responses=True (connect_redis),
so hashes and sets come back as str; redis-py's types allow bytes too, and this is the one place that says so."""
from __future__ import annotations

from collections.abc import Mapping
from typing import cast

import redis.asyncio as aioredis
from redis.typing import EncodableT, FieldT


async def read_hash(client: aioredis.Redis, key: str) -> dict[str, str]:
    """HGETALL of a text hash ({} when the key is absent)."""
    return cast(dict[str, str], await client.hgetall(key))


async def read_set(client: aioredis.Redis, key: str) -> set[str]:
    """SMEMBERS of a text set."""
    return cast(set[str], await client.smembers(key))


def hash_mapping(fields: Mapping[str, str]) -> Mapping[FieldT, EncodableT]:
    """Text fields as HSET's mapping argument (whose declared key type is wider than str)."""
    return cast(Mapping[FieldT, EncodableT], fields)
