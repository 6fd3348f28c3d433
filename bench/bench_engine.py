"""End-to-end engine benchmark through real Kafka and Redis, against a raw baseline loop.

    python bench/bench_engine.py [--events 100000] [--entities 10000] [--segments 0]
                                 [--latency-events 10000] [--latency-rate R] [--runs 3]
                                 [--profile]

Uses the services named by the environment (``.run/services.env``: ``make bench`` sources it)
and Redis database ``--redis-db`` (default 15), which it FLUSHES. Steps:

1. publish the workload's topology (5 groups / 24 attributes, ``--segments`` segments) through
   ``processor.publishing``; create unique topics; produce ``--events`` events (the backlog);
2. start one ``EventWorker`` in its own process (this file with ``--child``) and time it from
   its first batch until it has applied the whole backlog: engine events/s;
3. latency: with the worker caught up, produce ``--latency-events`` more at
   ``--latency-rate``/s (default: half the engine's measured rate); each record's latency is its Kafka timestamp (producer create time)
   to the completion of the Redis write of the batch that applied it (state visible);
4. the baseline (``baseline.py``) replays the same topic in its own process and group;
5. steps 1-4 again, ``--runs`` times in all, each on new topics and an empty state: the last
   line gives the median ratio (one run's ratio swings by ±15% on a 2-core machine).

Redis commands/event and memory/entity come from ``INFO`` deltas around step 2: they are
server-wide, so other clients of the same Redis add noise (use a private Redis for clean
numbers). The last line is ``engine/baseline throughput ratio: <number>``.
"""

from __future__ import annotations

import argparse
import asyncio
import cProfile
import io
import os
import pstats
import resource
import statistics
import subprocess
import sys
import time
import uuid
from pathlib import Path
from typing import Any

import orjson
from aiokafka import TopicPartition
from aiokafka.structs import ConsumerRecord
from redis.asyncio import Redis

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))  # `python bench/bench_engine.py` puts bench/ first, not the root

from bench import workload  # noqa: E402
from processor.publishing import publish_attribute_group, publish_segment  # noqa: E402
from processor.settings import Settings, load_settings  # noqa: E402
from processor.state.registry import Registry  # noqa: E402
from processor.streams import kafka  # noqa: E402
from processor.streams.worker import EventWorker, PendingWrite  # noqa: E402

PRODUCE_CHUNK = 5000


# -- the worker process -------------------------------------------------------------------


class MeasuredWorker(EventWorker):
    """An EventWorker that records per-batch timings, round trips and record latencies."""

    def __init__(self, settings: Settings, redis: Redis) -> None:
        super().__init__(settings, redis)
        self.applied = 0  # events applied or dead-lettered (forwards count once applied)
        self.first_batch: float | None = None
        self.last_batch_end = 0.0
        self.trips_per_batch: list[int] = []
        self.latencies_ms: list[float] = []
        self.measure_latency = False
        self._trips = 0
        self._applied_by_batch: dict[int, int] = {}  # counted when applied, final when written

    async def apply_batch(
        self, batch: dict[TopicPartition, list[ConsumerRecord[bytes, bytes]]]
    ) -> tuple[PendingWrite, dict[TopicPartition, int]]:
        self.first_batch = self.first_batch or time.perf_counter()
        out = await super().apply_batch(batch)
        self._applied_by_batch[id(batch)] = self.stats["events"] + self.stats["dead"]
        return out

    def batch_written(self, batch: dict[TopicPartition, list[ConsumerRecord[bytes, bytes]]]) -> None:
        # Called once the batch's state and watermarks are written: visible in Redis.
        visible_ms = time.time() * 1000
        self.last_batch_end = time.perf_counter()
        self.trips_per_batch.append(self.store.round_trips - self._trips)
        self._trips = self.store.round_trips
        self.applied = self._applied_by_batch.pop(id(batch))
        if self.measure_latency:
            self.latencies_ms.extend(visible_ms - r.timestamp for tp, rs in batch.items()
                                     if tp.topic == self.settings.events_topic for r in rs)


def peak_rss_kb() -> int:
    """This process's peak RSS. Not ``ru_maxrss``: Linux carries it over ``exec`` from the
    parent, so a child started by a big parent would report the parent's peak."""
    for line in Path("/proc/self/status").read_text().splitlines():
        if line.startswith("VmHWM:"):
            return int(line.split()[1])
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss


async def _until(worker: MeasuredWorker, task: asyncio.Task[None], records: int) -> None:
    while worker.applied < records:
        if task.done():
            task.result()  # re-raise the worker's failure
            raise RuntimeError("worker stopped before applying every event")
        await asyncio.sleep(0.01)


async def child(backlog: int, total: int, profile: bool) -> None:
    """Run one worker: backlog, say ``caught-up``, then the latency phase; print JSON."""
    settings = load_settings()
    redis = Redis.from_url(settings.redis_url)
    worker = MeasuredWorker(settings, redis)
    stop = asyncio.Event()
    profiler = cProfile.Profile() if profile else None
    if profiler:
        profiler.enable()
    task = asyncio.create_task(worker.run(stop))
    await _until(worker, task, backlog)
    if profiler:
        profiler.disable()
    throughput_s = worker.last_batch_end - (worker.first_batch or worker.last_batch_end)
    backlog_batches = len(worker.trips_per_batch)
    print(f"caught-up {backlog / max(throughput_s, 1e-9):.1f}", flush=True)
    worker.measure_latency = True  # no await since the print: only phase-2 records are timed
    await _until(worker, task, total)
    stop.set()
    await task
    await redis.aclose()
    result: dict[str, Any] = {
        "records": backlog, "seconds": throughput_s, "stats": worker.stats,
        "phases": dict(worker.seconds),
        "round_trips": sum(worker.trips_per_batch[:backlog_batches]),
        "batches": backlog_batches, "latencies_ms": worker.latencies_ms,
        "peak_rss_kb": peak_rss_kb(),
    }
    if profiler:
        out = io.StringIO()
        pstats.Stats(profiler, stream=out).sort_stats("tottime").print_stats(30)
        result["profile"] = out.getvalue()
    print(orjson.dumps(result).decode(), flush=True)


# -- the driver ---------------------------------------------------------------------------


def bench_settings(redis_db: int) -> Settings:
    base = load_settings()
    return base.model_copy(update={"log_level": "WARNING"}).isolated(
        uuid.uuid4().hex[:8], prefix="bench-", redis_db=redis_db)


def settings_env(settings: Settings) -> dict[str, str]:
    return settings.to_env(dict(os.environ))


async def publish(settings: Settings, segments: int) -> None:
    redis = Redis.from_url(settings.redis_url)
    try:
        await redis.flushdb()
        registry = Registry(redis)
        for group in workload.attribute_groups():
            await publish_attribute_group(registry, group)
        for segment in workload.segments(segments):
            await publish_segment(registry, segment)
    finally:
        await redis.aclose()


async def produce(settings: Settings, values: list[bytes], keys: list[bytes],
                  rate: float | None = None) -> float:
    """Produce and await every ack; paced at ``rate``/s when given. Returns seconds taken."""
    producer = kafka.producer(settings)
    await producer.start()
    started = time.perf_counter()
    chunk = PRODUCE_CHUNK if rate is None else max(1, int(rate / 100))  # pace in 10 ms steps
    try:
        for i in range(0, len(values), chunk):
            sends = [await producer.send(settings.events_topic, v, key=k,
                                         headers=[("stream", b"snowplow")])
                     for v, k in zip(values[i:i + chunk], keys[i:i + chunk], strict=True)]
            await asyncio.gather(*sends)
            if rate is not None:
                ahead = started + (i + chunk) / rate - time.perf_counter()
                if ahead > 0:
                    await asyncio.sleep(ahead)
    finally:
        await producer.stop()
    return time.perf_counter() - started


async def redis_info(settings: Settings) -> dict[str, int]:
    """Total commands (scripts' inner calls included; INFO excluded), used memory and the AOF
    rewrites so far (a rewrite's child process takes CPU from whatever runs beside it)."""
    redis = Redis.from_url(settings.redis_url)
    try:
        stats = await redis.info("commandstats")
        memory = await redis.info("memory")
        persistence = await redis.info("persistence")
    finally:
        await redis.aclose()
    calls = sum(v["calls"] for k, v in stats.items() if k != "cmdstat_info")
    return {"commands": calls, "used_memory": int(memory["used_memory"]),
            "aof_rewrites": int(persistence.get("aof_rewrites", 0))}


async def sample_entity_memory(settings: Settings, sample: int = 200) -> float:
    """Mean ``MEMORY USAGE`` of up to ``sample`` entity state hashes."""
    redis = Redis.from_url(settings.redis_url)
    try:
        sizes = []
        async for key in redis.scan_iter(match="sb:{*}:state", count=1000):
            sizes.append(await redis.memory_usage(key, samples=0) or 0)
            if len(sizes) >= sample:
                break
    finally:
        await redis.aclose()
    return statistics.fmean(sizes) if sizes else 0.0


def percentile(values: list[float], q: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, int(q * len(ordered)))] if ordered else float("nan")


async def run_engine(settings: Settings, args: argparse.Namespace, total: int) -> dict[str, Any]:
    """Spawn the worker process; feed the latency phase once it caught up; collect results."""
    command = [sys.executable, __file__, "--child", "--events", str(args.events),
               "--latency-events", str(args.latency_events)]
    before = await redis_info(settings)
    proc = await asyncio.create_subprocess_exec(
        *(command + (["--profile"] if args.profile else [])),
        env=settings_env(settings), cwd=ROOT, stdout=subprocess.PIPE)
    assert proc.stdout is not None
    line = await proc.stdout.readline()
    if not line.startswith(b"caught-up "):
        raise RuntimeError(f"worker process failed before catching up: {line!r}")
    # Latency is measured below saturation: by default at half the measured throughput.
    rate = args.latency_rate or float(line.split()[1]) / 2
    after = await redis_info(settings)
    entity_bytes = await sample_entity_memory(settings)
    late_values, late_keys = workload.events(args.latency_events, args.entities,
                                             now_ms=int(time.time() * 1000), spread_ms=1000, seed=8)
    await produce(settings, late_values, late_keys, rate=rate)
    rest = await proc.stdout.read()  # one JSON line, long: every latency sample
    if await proc.wait():
        raise RuntimeError(f"worker process failed with exit code {proc.returncode}")
    result = orjson.loads(rest.splitlines()[-1])
    result["latency_rate"] = rate
    result["commands"] = after["commands"] - before["commands"]
    result["aof_rewrites"] = after["aof_rewrites"] - before["aof_rewrites"]
    result["memory"] = after["used_memory"] - before["used_memory"]
    result["entity_bytes"] = entity_bytes
    return result


async def run_baseline(settings: Settings, total: int) -> dict[str, Any]:
    before = await redis_info(settings)
    proc = await asyncio.create_subprocess_exec(
        sys.executable, str(ROOT / "bench" / "baseline.py"),
        "--bootstrap", settings.kafka_bootstrap_servers, "--topic", settings.events_topic,
        "--group", settings.worker_group + "-baseline", "--redis-url", settings.redis_url,
        "--events", str(total), "--batch-max", str(settings.batch_max_records),  # same batches
        cwd=ROOT, stdout=subprocess.PIPE)
    out, _ = await proc.communicate()
    if proc.returncode:
        raise RuntimeError(f"baseline failed with exit code {proc.returncode}")
    result: dict[str, Any] = orjson.loads(out.splitlines()[-1])
    after = await redis_info(settings)
    result["commands"] = after["commands"] - before["commands"]
    result["aof_rewrites"] = after["aof_rewrites"] - before["aof_rewrites"]
    return result


def report(args: argparse.Namespace, produced_s: float, engine: dict[str, Any],
           base: dict[str, Any]) -> float:
    """Print one run's figures; return its throughput ratio."""
    engine_rate = engine["records"] / engine["seconds"]
    lat = engine["latencies_ms"]
    trips = engine["round_trips"]
    print(f"workload: {args.events:,} Snowplow enriched JSON events over {args.entities:,} "
          f"entities; {len(workload.attribute_groups())} groups / {workload.ATTRIBUTE_COUNT} "
          f"attributes (2 windowed), {args.segments} segments; one worker process")
    print(f"produced backlog in {produced_s:.1f}s ({args.events / produced_s:,.0f} events/s)")
    print(f"engine:   {engine_rate:>9,.0f} events/s  ({engine['records']:,} events in "
          f"{engine['seconds']:.2f}s, {engine['batches']} batches; stats {engine['stats']})")
    print(f"baseline: {base['events_per_s']:>9,.0f} events/s  ({base['events']:,} events in "
          f"{base['seconds']:.2f}s, {base['round_trips']} batches)")
    print(f"latency (Kafka record timestamp -> batch's Redis write done), "
          f"{len(lat):,} events at {engine['latency_rate']:,.0f}/s: "
          f"p50 {percentile(lat, 0.5):.1f} ms, p99 {percentile(lat, 0.99):.1f} ms")
    print(f"redis commands/event (INFO commandstats delta, Lua inner calls included): engine "
          f"{engine['commands'] / engine['records']:.2f}, baseline "
          f"{base['commands'] / base['events']:.2f}; Redis AOF rewrites during the run: engine "
          f"{engine['aof_rewrites']}, baseline {base['aof_rewrites']}")
    phases = engine["phases"]
    spent = sum(phases.values()) or 1.0
    print("worker time per phase (whole run): " + ", ".join(
        f"{name} {seconds:.1f}s ({seconds / spent:.0%})" for name, seconds in phases.items()))
    print(f"redis round trips (EntityStore): {trips / engine['batches']:.2f}/batch, "
          f"{trips / engine['records']:.4f}/event")
    print(f"peak RSS: engine worker {engine['peak_rss_kb'] / 1024:.0f} MiB, baseline "
          f"{base['peak_rss_kb'] / 1024:.0f} MiB")
    print(f"redis memory/entity: {engine['memory'] / args.entities:,.0f} B (used_memory delta / "
          f"entities), {engine['entity_bytes']:,.0f} B (mean MEMORY USAGE of sampled state hashes)")
    if "profile" in engine:
        print("worker profile, backlog phase (cProfile, top 30 by own time; slows the run):")
        print(engine["profile"])
    return engine_rate / base["events_per_s"]


async def main_async(args: argparse.Namespace) -> None:
    values, keys = workload.events(args.events, args.entities, now_ms=int(time.time() * 1000))
    total = args.events + args.latency_events
    ratios = []
    for run in range(1, args.runs + 1):
        # each run on topics, groups and a Redis database of its own, from an empty state
        settings = bench_settings(args.redis_db)
        await publish(settings, args.segments)
        await kafka.ensure_topics(settings)
        produced_s = await produce(settings, values, keys)
        engine = await run_engine(settings, args, total)
        base = await run_baseline(settings, total)
        if args.runs > 1:
            print(f"-- run {run} of {args.runs}")
        ratios.append(report(args, produced_s, engine, base))
    if args.runs > 1:
        print(f"ratio per run: {' / '.join(f'{r:.3f}' for r in ratios)}; the median below")
    print(f"engine/baseline throughput ratio: {statistics.median(ratios):.3f}")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--events", type=int, default=100_000)
    parser.add_argument("--entities", type=int, default=10_000)
    parser.add_argument("--segments", type=int, default=0)
    parser.add_argument("--latency-events", type=int, default=10_000)
    parser.add_argument("--latency-rate", type=float, default=0.0,
                        help="events/s of the latency phase (default: half the engine's rate)")
    parser.add_argument("--redis-db", type=int, default=15, help="flushed at start")
    parser.add_argument("--runs", type=int, default=3,
                        help="engine + baseline runs, each from an empty state; the ratio line "
                             "gives their median (one run's swings by ±15%% on a 2-core machine)")
    parser.add_argument("--profile", action="store_true", help="cProfile the worker's backlog")
    parser.add_argument("--child", action="store_true", help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.child:
        asyncio.run(child(args.events, args.events + args.latency_events, args.profile))
    else:
        asyncio.run(main_async(args))


if __name__ == "__main__":
    main()
