"""Micro-benchmark: the worker's pure per-event work, without Kafka or Redis.

Decodes the engine benchmark's workload (Snowplow enriched JSON, or ``--tsv``), applies every
event to an in-process cache of entity states with the same topology (5 groups / 24
attributes, ``--segments`` segments) ``--batch`` events at a time, and after each batch
encodes the entities it touched as the worker does (``EntityStore.encode``), with the
worker's young-generation GC threshold (``--gc-young``; 700 is CPython's default). Prints
microseconds per event for each step, the CPU the worker spends beside Redis and Kafka, and
the encode per entity write. Usage:

    python bench/bench_compute.py [--events 50000] [--entities 5000] [--segments 0] [--tsv]
                                  [--batch 2000] [--profile] [--runs 3] [--callgrind STEP]
                                  [--gc-young N] [--worker]

``--worker`` runs the same events through the worker's own batch path instead
(``EventWorker.apply_batch``: routing, decoding, applying and encoding as the worker does them,
on records as aiokafka hands them over, all entities cached, no Kafka or Redis): the
difference to the sum of the steps above is the worker's own bookkeeping.

Wall-clock times are noisy on a busy machine (the load average is printed); instruction counts
are not. To count one step's instructions (``Ir``):

    valgrind --tool=callgrind --collect-atstart=no --toggle-collect=dropwhile_next \
        --callgrind-out-file=/tmp/cg.out python bench/bench_compute.py --runs 1 --callgrind apply
    callgrind_annotate /tmp/cg.out | head   # "PROGRAM TOTALS"; divide by --events
"""

from __future__ import annotations

import argparse
import asyncio
import cProfile
import gc
import itertools
import os
import pstats
import sys
import time
from collections.abc import Callable
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from aiokafka import TopicPartition  # noqa: E402
from aiokafka.structs import ConsumerRecord  # noqa: E402

from bench import workload  # noqa: E402
from processor.domain import engine  # noqa: E402
from processor.domain.definitions import AttributeGroup  # noqa: E402
from processor.domain.entity import EntityState  # noqa: E402
from processor.domain.events import Event  # noqa: E402
from processor.domain.records import SNOWPLOW_STREAM, RawRecord, decode_record  # noqa: E402
from processor.domain.segments import SegmentDefinition, segment_id_for  # noqa: E402
from processor.domain.topology import Topology, compile_topology  # noqa: E402
from processor.domain.transitions import EntityRef  # noqa: E402
from processor.settings import load_settings  # noqa: E402
from processor.state.entities import EntityStore  # noqa: E402
from processor.streams.worker import GC_YOUNG_THRESHOLD, EventWorker  # noqa: E402


def topology(segments: int) -> Topology:
    groups = [AttributeGroup.model_validate({**g, "version": 1, "is_published": True})
              for g in workload.attribute_groups()]
    segs = [SegmentDefinition.model_validate(
                {**s, "slug_name": f"bench_segment_{i}", "id": segment_id_for(f"bench_segment_{i}")})
            for i, s in enumerate(workload.segments(segments))]
    return compile_topology(1, groups, segs, [], [])


def run(values: list[bytes], topo: Topology, now: int, batch: int,
        measured: str | None = None) -> tuple[dict[str, float], int]:
    """Time each step; ``measured`` names the one step to run under ``under_callgrind``.
    Events are applied ``batch`` at a time and the entities each batch touched are encoded
    after it, as the worker does (``EntityStore.encode``: changed fields, watermarks, the
    packed script call). Returns microseconds per event per step, and the entity writes."""
    n = len(values)
    cache: dict[EntityRef, EntityState] = {}
    events: list[Event] = []
    store = EntityStore(None)  # type: ignore[arg-type]  # encode only: no Redis needed
    writes = 0

    def decode() -> None:
        events.extend(decode_record(RawRecord(v, now, SNOWPLOW_STREAM, None), now_ms=now,
                                    max_bytes=1 << 20) for v in values)

    def apply(start: int) -> None:
        for offset in range(start, min(start + batch, n)):
            event = events[offset]
            for ref in engine.entities_of(event, topo):
                state = cache.get(ref)
                if state is None:
                    state = cache[ref] = EntityState(ref)
                engine.apply_event(state, event, topo, cause=f"events/0/{offset}", now_ms=now)
                state.advance("events", 0, offset)
                touched[ref] = state

    def encode() -> None:
        nonlocal writes
        store.encode(list(touched.values()))
        writes += len(touched)
        touched.clear()

    touched: dict[EntityRef, EntityState] = {}
    times = dict.fromkeys(("decode", "apply", "encode"), 0.0)

    def timed(name: str, step: Callable[[], None]) -> None:
        t0 = time.perf_counter()
        under_callgrind(step) if name == measured else step()
        times[name] += time.perf_counter() - t0

    timed("decode", decode)
    for start in range(0, n, batch):
        timed("apply", lambda: apply(start))  # noqa: B023  (called at once)
        timed("encode", encode)
    return {name: seconds * 1e6 / n for name, seconds in times.items()}, writes


class _NothingToProduce:
    """The worker's producer here: no segments and no forwards, so nothing is ever sent."""

    def send(self, *args: object, **kwargs: object) -> None:
        raise AssertionError("the benchmark's worker produced a record")

    send_batch = create_batch = send


def run_worker(values: list[bytes], topo: Topology, now: int, batch: int,
               measured: str | None = None) -> tuple[dict[str, float], int]:
    """The events through ``EventWorker.apply_batch``, ``batch`` records at a time, on one
    partition that owns every entity (so nothing is forwarded), every entity already cached
    (nothing is loaded) and no segments (nothing is produced): the worker's whole pure path.
    Returns microseconds per event, and the entity writes."""
    settings = load_settings(partitions=1)
    worker = EventWorker(settings, None, clock=lambda: now)  # type: ignore[arg-type]
    worker.topology = topo
    worker._producer = _NothingToProduce()  # type: ignore[assignment]
    tp = TopicPartition(settings.events_topic, 0)
    headers = [("stream", b"snowplow")]
    records = [ConsumerRecord(tp.topic, 0, offset, now, 0, None, value, None, -1, len(value),
                              headers) for offset, value in enumerate(values)]
    for value in values:  # cache every entity (a cold worker would load them from Redis)
        event = decode_record(RawRecord(value, now, SNOWPLOW_STREAM, None), now_ms=now)
        for ref in engine.entities_of(event, topo):
            worker.cache.setdefault(ref, EntityState(ref))
    writes = 0

    def batches() -> None:
        async def go() -> None:
            nonlocal writes
            for start in range(0, len(records), batch):
                write, _ = await worker.apply_batch({tp: records[start:start + batch]})
                writes += len(write.entities.refs)
        asyncio.run(go())

    t0 = time.perf_counter()
    under_callgrind(batches) if measured == "worker" else batches()
    return {"worker": (time.perf_counter() - t0) * 1e6 / len(values)}, writes


def under_callgrind(step: Callable[[], None]) -> None:
    """Run ``step`` inside ``itertools.dropwhile``'s C function, which nothing else here calls:
    ``valgrind --tool=callgrind --collect-atstart=no --toggle-collect=dropwhile_next`` then
    counts the instructions of that step alone."""
    for _ in itertools.dropwhile(lambda _: step(), (0,)):
        pass


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--events", type=int, default=50_000)
    parser.add_argument("--entities", type=int, default=5_000)
    parser.add_argument("--segments", type=int, default=0)
    parser.add_argument("--batch", type=int, default=2000,
                        help="events applied between two encodes (the worker's batch)")
    parser.add_argument("--tsv", action="store_true", help="enriched TSV instead of JSON")
    parser.add_argument("--profile", action="store_true", help="cProfile, top 30 by own time")
    parser.add_argument("--runs", type=int, default=3, help="best of this many runs")
    parser.add_argument("--worker", action="store_true",
                        help="the worker's batch path (EventWorker.apply_batch) as one step")
    parser.add_argument("--callgrind", metavar="STEP",
                        choices=("decode", "apply", "encode", "worker"),
                        help="run STEP so that callgrind can count it alone (see under_callgrind)")
    parser.add_argument("--gc-young", type=int, default=GC_YOUNG_THRESHOLD,
                        help="young-generation GC threshold (the worker's by default)")
    args = parser.parse_args()
    if args.worker and args.segments:
        parser.error("--worker runs without segments (it has no producer for transitions)")
    gc.set_threshold(args.gc_young, *gc.get_threshold()[1:])
    now = int(time.time() * 1000)
    print(f"load average {' '.join(f'{x:.2f}' for x in os.getloadavg())}")
    values, _ = workload.events(args.events, args.entities, now_ms=now)
    if args.tsv:
        values = [workload.to_tsv(v) for v in values]
    topo = topology(args.segments)
    if args.profile:
        profiler = cProfile.Profile()
        profiler.enable()
    best: dict[str, float] = {}
    for _ in range(1 if args.profile else args.runs):
        times, writes = (run_worker if args.worker else run)(values, topo, now, args.batch,
                                                             args.callgrind)
        for step, us in times.items():
            best[step] = min(best.get(step, us), us)
    if args.profile:
        profiler.disable()
        pstats.Stats(profiler).sort_stats("tottime").print_stats(30)
    total = sum(best.values())
    print(f"{args.events:,} events over {args.entities:,} entities, {args.segments} segments, "
          f"{'TSV' if args.tsv else 'JSON'}, GC young threshold {args.gc_young:,}; "
          "best of runs, microseconds per event:")
    print("  " + "  ".join(f"{step} {us:.1f}" for step, us in best.items())
          + f"  total {total:.1f} (= {1e6 / total:,.0f} events/s of pure compute)")
    if "encode" in best:
        print(f"  {writes / args.events:.2f} entity writes per event (batches of {args.batch:,}): "
              f"encode {best['encode'] * args.events / writes:.1f} microseconds per entity write")


if __name__ == "__main__":
    main()
