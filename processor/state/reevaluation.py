"""Evaluating existing entities against new or changed segments, partition by partition.

When the published segments change, each worker records a job per partition it owns: walk the
partition's entity set (SSCAN, a bounded page per scheduler tick) and re-evaluate every entity,
emitting only real changes. The cursor is saved after each page, so a restarted or newly
assigned worker resumes where the last one stopped; a page done twice emits nothing twice
(membership is stored with the entity).
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass

from redis.asyncio import Redis

from processor.domain.transitions import EntityRef
from processor.state import keys
from processor.state.members import parse_member
from processor.state.resp import Commands


@dataclass(frozen=True, slots=True)
class Job:
    partition: int
    version: int
    cursor: int
    done: int


def stage_entities(commands: Commands, rows: Iterable[tuple[int, EntityRef]]) -> None:
    """Record new entities (partition, entity) in their partitions' entity sets: one SADD per
    partition (idempotent)."""
    grouped: dict[int, list[str]] = {}
    for partition, ref in rows:
        grouped.setdefault(partition, []).append(str(ref))
    for partition, entities in grouped.items():
        commands.add("SADD", keys.partition_entities(partition), *entities)


async def start(redis: Redis, partition: int, version: int) -> None:
    """Begin (or restart) the job for ``version`` unless one for it or a newer one exists."""
    key = keys.reevaluation(partition)
    current = await redis.hget(key, "version")
    if current is not None and int(current) >= version:
        return
    total = await redis.scard(keys.partition_entities(partition))
    await redis.hset(key, mapping={"version": version, "cursor": 0, "done": 0, "total": total})


def stage_probe(commands: Commands, partition: int) -> None:
    """Ask whether ``partition`` has a job: the reply is 1 when it has, 0 when not."""
    commands.add("EXISTS", keys.reevaluation(partition))


async def job(redis: Redis, partition: int) -> Job | None:
    raw = await redis.hgetall(keys.reevaluation(partition))
    if not raw:
        return None
    return Job(partition, int(raw[b"version"]), int(raw[b"cursor"]), int(raw[b"done"]))


async def page(redis: Redis, job: Job, count: int) -> tuple[int, list[EntityRef]]:
    cursor, found = await redis.sscan(keys.partition_entities(job.partition), job.cursor, count=count)
    return int(cursor), [parse_member(m) for m in found]


async def advance(redis: Redis, job: Job, cursor: int, evaluated: int) -> None:
    """Save progress; a finished job (cursor back to 0) is removed."""
    key = keys.reevaluation(job.partition)
    if cursor == 0:
        await redis.delete(key)
    else:
        await redis.hset(key, mapping={"cursor": cursor, "done": job.done + evaluated})
