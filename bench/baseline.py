"""The benchmark's baseline: the cheapest loop that still touches Redis once per event.

Raw aiokafka ``getmany`` batches, ``orjson.loads`` of each record, and one pipelined
``EVALSHA`` per event whose script increments one hash field of the event's entity
(``HINCRBY``); one pipeline round trip per batch, then an offset commit. No decoding into an
event model, no aggregation, no watermark: it is the floor the engine's ratio is judged
against ("Where the time goes" in DESIGN.md).

Run by ``bench_engine.py`` as its own process, on the same topic with its own consumer group:

    python bench/baseline.py --bootstrap HOST:PORT --topic T --group G --redis-url URL --events N

Prints one JSON line: ``{"events": n, "seconds": s, "events_per_s": r, "round_trips": k,
"peak_rss_kb": m}``. Timing starts when the first batch arrives (group join excluded).
"""

from __future__ import annotations

import argparse
import asyncio
import resource
import sys
import time
from typing import Any

import orjson
from aiokafka import AIOKafkaConsumer
from redis.asyncio import Redis

BUMP_LUA = "return redis.call('HINCRBY', KEYS[1], ARGV[1], 1)"
KEY_FIELD = "domain_userid"


def peak_rss_kb() -> int:
    """Peak RSS from ``VmHWM`` (``ru_maxrss`` survives ``exec``: it would be the parent's)."""
    with open("/proc/self/status") as status:
        for line in status:
            if line.startswith("VmHWM:"):
                return int(line.split()[1])
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss


async def run(bootstrap: str, topic: str, group: str, redis_url: str, expected: int,
              batch_max: int = 2000) -> dict[str, Any]:
    """Consume until ``expected`` records were applied; return the measurements."""
    consumer = AIOKafkaConsumer(
        topic, bootstrap_servers=bootstrap, group_id=group, enable_auto_commit=False,
        auto_offset_reset="earliest", max_partition_fetch_bytes=4 * 1024 * 1024,
    )
    redis = Redis.from_url(redis_url)
    bump = redis.register_script(BUMP_LUA)
    await consumer.start()
    applied = round_trips = 0
    first: float | None = None
    try:
        while applied < expected:
            batch = await consumer.getmany(timeout_ms=50, max_records=batch_max)
            if not batch:
                continue
            if first is None:
                first = time.perf_counter()
            async with redis.pipeline(transaction=False) as pipe:
                for records in batch.values():
                    for record in records:
                        entity = orjson.loads(record.value)[KEY_FIELD]
                        await bump(keys=[f"bench:base:{{{entity}}}"], args=["n"], client=pipe)
                        applied += 1
                await pipe.execute()
            round_trips += 1
            await consumer.commit({tp: rs[-1].offset + 1 for tp, rs in batch.items()})
        elapsed = time.perf_counter() - (first or time.perf_counter())
    finally:
        await consumer.stop()
        await redis.aclose()
    return {
        "events": applied,
        "seconds": elapsed,
        "events_per_s": applied / elapsed if elapsed > 0 else 0.0,
        "round_trips": round_trips,
        "peak_rss_kb": peak_rss_kb(),
    }


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--bootstrap", required=True)
    parser.add_argument("--topic", required=True)
    parser.add_argument("--group", required=True)
    parser.add_argument("--redis-url", required=True)
    parser.add_argument("--events", type=int, required=True)
    parser.add_argument("--batch-max", type=int, default=2000)
    args = parser.parse_args(argv)
    result = asyncio.run(run(args.bootstrap, args.topic, args.group, args.redis_url,
                             args.events, args.batch_max))
    sys.stdout.write(orjson.dumps(result).decode() + "\n")


if __name__ == "__main__":
    main()
