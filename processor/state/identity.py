"""Identity links in Redis: ``<field>:<value>`` -> the profile entity it belongs to."""

from __future__ import annotations

from redis.asyncio import Redis

from processor.domain.transitions import EntityRef
from processor.state import keys
from processor.state.members import parse_member
from processor.state.resp import Commands


async def lookup(redis: Redis, pairs: list[tuple[str, str]]) -> dict[tuple[str, str], EntityRef]:
    """The profiles linked to ``pairs`` (absent pairs are left out); one round trip."""
    if not pairs:
        return {}
    async with redis.pipeline(transaction=False) as pipe:
        for name, value in pairs:
            pipe.get(keys.identity_link(name, value))
        found = await pipe.execute()
    return {pair: parse_member(raw) for pair, raw in zip(pairs, found, strict=True) if raw}


def stage_link(commands: Commands, name: str, value: str, profile: EntityRef) -> None:
    """Link ``name=value`` to ``profile`` unless it is linked already (first come wins)."""
    commands.add("SET", keys.identity_link(name, value), str(profile), "NX")
