"""Delivery benchmark through real Kafka, Redis and the kinesalite Kinesis emulator.

    python bench/bench_delivery.py [--transitions 20000] [--entities 5000] [--rate 5000]
                                   [--seconds 10] [--users 5000] [--redis-db 14] [--runs 1]

Uses the services named by the environment (``.run/services.env``) and Redis database
``--redis-db`` (default 14), which it FLUSHES. Every run uses unique topics and consumer groups.
The workers run in their own processes (this file with ``--child``), so they do not share a GIL
with the webhook receiver and the producer, which run in this process. Steps:

1. throughput, webhook: ``--transitions`` Transition records (``--entities`` entities, alternating
   enter/exit) are produced straight onto the transitions topic, keyed by entity. With one
   webhook subscription pointing at a local ``WebhookReceiver`` (200 to everything), a
   ``DeliveryWorker`` process drains the backlog. Rate = transitions / (first dispatch -> the
   moment the lane's ``delivered`` counter reaches the backlog size; offsets settle sooner,
   as records the target cannot keep up with are parked in Redis and retried from there); also shown from the receiver's
   side (first -> last request received).
2. throughput, Kinesis: the same backlog, a fresh consumer group, one kinesis subscription to a
   4-shard stream created in kinesalite; same timing. The stream is then read back with
   GetRecords to check every record arrived.
3. latency: an ``EventWorker`` and a ``DeliveryWorker`` process run; generic JSON events
   ``{"user_id", "cart_items", "ts"}`` are produced to the events topic at ``--rate``/s for
   ``--seconds`` s; each one flips ``FILTER cart_items > 0`` for its user, so each makes one
   transition and one webhook request. Latency = receiver's receive time (after the body was
   read) - the event's ``ts`` (wall ms stamped by the producer just before ``send``), read back
   from the payload's ``data`` (the profile carries the event's fields).

In the latency phases the producer is open-loop (it never waits for acks before the next
send, so a slow broker shows up as latency instead of holding the offered load back) and sends
in 2 ms steps; the receiver runs in a process of its own (``--receiver thread`` puts it on a
thread of this process, as before: it then shares a GIL with the producer, whose 5 ms switch
interval shows up in the measured tail).

``--stages``: the workers also stamp, for each flip event (or transition), when each stage of
the pipeline reached it (wall clock; every process runs on this machine), and the latency phases
print, per stage, the time since the event's ``ts`` and the time of each hop: p50/p90/p99, and
the mean hop times of the slowest 1% of events (where the p99 goes). The stamps cost the workers
a few µs per record.

The last line is ``delivery p99 produce->webhook: <ms> ms``: step 3's p99, or with ``--runs N``
the median of N runs of step 3 (on a 2-core machine one run's p99 ranged 73-292 ms).
"""

from __future__ import annotations

import argparse
import asyncio
import gc
import os
import signal
import statistics
import subprocess
import sys
import time
import uuid
from collections.abc import Callable
from pathlib import Path
from typing import Any, Literal

import boto3
import orjson
from aiokafka import TopicPartition
from redis.asyncio import Redis

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))  # `python bench/bench_delivery.py` puts bench/ first, not the root

from processor.domain.transitions import EntityRef, Transition, transition_id  # noqa: E402
from processor.publishing import (  # noqa: E402
    publish_attribute_group,
    publish_segment,
    publish_subscription,
)
from processor.settings import Settings, load_settings  # noqa: E402
from processor.state.registry import Registry  # noqa: E402
from processor.streams import kafka  # noqa: E402
from processor.streams.delivery import DeliveryWorker  # noqa: E402
from processor.streams.routing import Ownership  # noqa: E402
from processor.streams.worker import EventWorker  # noqa: E402
from tests.support.receiver import ReceivedRequest, WebhookReceiver  # noqa: E402

PRODUCE_CHUNK = 5000
SEGMENT_ID, SEGMENT_SLUG = "seg_bench", "active_cart"
KINESIS_SHARDS = 4
STAGES_ENV = "BENCH_STAGES_FILE"  # set by --stages: where a child writes its stage stamps
# Stages in pipeline order: (name, what it stamps). ``ts`` is the producer's stamp.
STAGES = (
    ("kafka_ts", "the event record's Kafka timestamp (producer append)"),
    ("w_got", "worker: getmany returned it (start of apply_batch)"),
    ("w_applied", "worker: batch decoded + applied, transitions produce starts"),
    ("w_acked", "worker: transitions produce acked"),
    ("w_written", "worker: state written (the commit follows beside the writes)"),
    ("d_got", "delivery: getmany returned the transition"),
    ("d_sent", "delivery: webhook send started"),
    ("recv", "receiver: request read"),
    ("d_done", "delivery: answer read, slot free"),
)
COUNTER_GROUP = {
    "name": "shopper_stats", "version": 1, "is_published": True, "owner": "bench@example.com",
    "attribute_key": {"name": "user_id"},
    "attributes": [{"name": "cart_events", "type": "int64", "aggregation": "counter", "events": []}],
}


# -- child processes ----------------------------------------------------------------------


class MeasuredDelivery(DeliveryWorker):
    """Notes the first dispatch and the moment its lanes have delivered ``expect`` records."""

    def __init__(self, settings: Settings, redis: Redis, expect: int, stop: asyncio.Event) -> None:
        super().__init__(settings, redis)
        self.expect = expect
        self.stop_event = stop
        self.first_dispatch: float | None = None
        self.done: float | None = None
        self.cpu_first: float | None = None  # process CPU seconds at first dispatch / done
        self.cpu_done: float | None = None
        self.offsets: dict[TopicPartition, int] = {}
        self.stamps: dict[str, dict[str, float]] = {}  # --stages
        self._staged = bool(os.environ.get(STAGES_ENV))
        self._got = 0.0

    async def dispatch(self, batch: Any) -> None:
        if self.first_dispatch is None:
            self.first_dispatch, self.cpu_first = time.time(), time.process_time()
        self._got = time.time()
        await super().dispatch(batch)

    def _make_lane(self, subscription: Any) -> Any:
        lane = super()._make_lane(subscription)
        if not self._staged:
            return lane
        submit, send, sent = lane.submit, lane._send, lane._sent

        def staged_submit(item: Any) -> None:
            profile = item.transition.profile
            if "ts" in profile:
                self.stamps[_stage_key(profile.get("user_id"), profile["ts"])] = {
                    "d_got": self._got}
            submit(item)

        def staged_send(sink: Any, item: Any) -> None:
            profile = item.transition.profile
            row = self.stamps.get(_stage_key(profile.get("user_id"), profile.get("ts")))
            if row is not None:
                row["d_sent"] = time.time()
            send(sink, item)

        def staged_sent(sink: Any, item: Any, result: Any) -> None:
            profile = item.transition.profile
            row = self.stamps.get(_stage_key(profile.get("user_id"), profile.get("ts")))
            if row is not None:
                row["d_done"] = time.time()
            sent(sink, item, result)

        lane.submit, lane._send, lane._sent = (  # type: ignore[method-assign]
            staged_submit, staged_send, staged_sent)
        return lane

    async def commit(self) -> dict[TopicPartition, int]:
        offsets = await super().commit()
        self.offsets.update(offsets)
        # Settled includes *parked* in Redis (a lane spills what its target cannot keep up
        # with), so the end is when every record was really delivered.
        if self.expect and self.done is None and self.delivered() >= self.expect:
            self.done, self.cpu_done = time.time(), time.process_time()
            self.stop_event.set()
        return offsets

    def delivered(self) -> float:
        for lane in self.lanes.values():
            lane.flush_metrics()  # the counter is otherwise updated once per lane tick
        return sum(self.metrics.value("signalbox_delivery_delivered_total", sub_id)
                   for sub_id in self.lanes)


class ReceiverProcess:
    """A ``WebhookReceiver`` in a process of its own, with the part of its interface the
    latency phases use (``url``, ``count``, ``clear``, ``wait_for``, ``requests``)."""

    def __init__(self) -> None:
        import multiprocessing
        import threading

        ctx = multiprocessing.get_context("spawn")
        self._conn, child_end = ctx.Pipe()
        self._proc = ctx.Process(target=_receiver_main, args=(child_end,), daemon=True)
        self._lock = threading.Lock()
        self.url = ""

    def __enter__(self) -> ReceiverProcess:
        self._proc.start()
        self.url = self._conn.recv()
        return self

    def __exit__(self, *exc: object) -> None:
        self._ask("stop")
        self._proc.join(timeout=10)

    def _ask(self, *command: object) -> Any:
        with self._lock:
            self._conn.send(command)
            return self._conn.recv()

    @property
    def count(self) -> int:
        return int(self._ask("count"))

    def clear(self) -> None:
        self._ask("clear")

    def wait_for(self, count: int, timeout: float) -> None:
        if not self._ask("wait_for", count, timeout):
            raise AssertionError(f"expected {count} requests within {timeout}s")

    @property
    def requests(self) -> list[ReceivedRequest]:
        return [ReceivedRequest(index=n, method="POST", path="/", headers=headers, body=body,
                                received_at=at)
                for n, (headers, body, at) in enumerate(self._ask("requests"))]


def _receiver_main(conn: Any) -> None:
    # The receiver keeps every request it got: as that list grows, the collector's full passes
    # over it paused the receiver for tens of ms (a measuring instrument's pause, not the
    # sender's), which was most of the slowest 1%'s receipt hop. It makes no cycles to collect.
    gc.disable()
    with WebhookReceiver() as receiver:
        conn.send(receiver.url)
        while True:
            command, *args = conn.recv()
            if command == "stop":
                conn.send(None)
                return
            if command == "count":
                conn.send(receiver.count)
            elif command == "clear":
                receiver.clear()
                conn.send(None)
            elif command == "wait_for":
                try:
                    receiver.wait_for(*args)
                    conn.send(True)
                except AssertionError:
                    conn.send(False)
            elif command == "requests":
                conn.send([({"webhook-id": r.header("webhook-id") or ""}, r.body, r.received_at)
                           for r in receiver.requests])


def latency_receiver(args: argparse.Namespace) -> Any:
    return WebhookReceiver() if args.receiver == "thread" else ReceiverProcess()


def _stage_key(user: object, ts: object) -> str:
    return f"{user}|{ts}"


class StagedWorker(EventWorker):
    """``--stages``: stamps each flip event at the worker's stages (see ``STAGES``)."""

    def __init__(self, settings: Settings, redis: Redis) -> None:
        super().__init__(settings, redis)
        self.stamps: dict[str, dict[str, float]] = {}
        self._batch_keys: list[dict[str, float]] = []
        self._by_batch: dict[int, list[dict[str, float]]] = {}

    # Where the loop's wall time goes: (start, end) per call of each phase. The loop is
    # getmany -> apply_batch (decode, apply, produce) -> _write_behind (waits only while
    # WRITES_IN_FLIGHT batches are unwritten) -> run_due -> _refresh_topology.
    phases: dict[str, list[tuple[float, float]]] = {}
    _last_loop_end = 0.0
    _batch_sizes: list[int] = []

    async def _timed(self, phase: str, call: Any) -> Any:
        started = time.time()
        try:
            return await call
        finally:
            self.phases.setdefault(phase, []).append((started, time.time()))

    async def _refresh_topology(self) -> None:
        await self._timed("refresh", super()._refresh_topology())
        self._last_loop_end = time.time()

    async def run_due(self) -> None:
        await self._timed("due", super().run_due())

    async def _write_behind(self, *args: Any) -> None:
        await self._timed("behind", super()._write_behind(*args))

    async def apply_batch(self, batch: Any) -> Any:
        got = time.time()
        if self._last_loop_end:
            self.phases.setdefault("getmany", []).append((self._last_loop_end, got))
        self._batch_sizes.append(sum(len(r) for r in batch.values()))
        rows = []
        for records in batch.values():
            for record in records:
                doc = orjson.loads(record.value)
                if "ts" not in doc:
                    continue
                row = self.stamps[_stage_key(doc.get("user_id"), doc["ts"])] = {
                    "kafka_ts": record.timestamp / 1000, "w_got": got}
                rows.append(row)
        self._batch_keys = rows
        self._by_batch[id(batch)] = rows
        return await self._timed("apply_batch", super().apply_batch(batch))

    def loop_summary(self) -> dict[str, Any]:
        """Per phase: calls, p50/p99 ms and share of the loop's wall time; batch sizes."""
        spans = [s for calls in self.phases.values() for s in calls]
        if not spans:
            return {}
        wall = max(end for _, end in spans) - min(start for start, _ in spans)
        out: dict[str, Any] = {"batches": percentiles(self._batch_sizes)}
        for phase, calls in self.phases.items():
            took = [(end - start) * 1000 for start, end in calls]
            out[phase] = [len(took), *percentiles(took), sum(took) / 10 / wall]
        return out

    async def _produce(self, result: Any) -> Any:
        rows, self._batch_keys = self._batch_keys, []
        started = time.time()
        acks = await super()._produce(result)
        for row in rows:
            row["w_applied"] = row["w_acked"] = started

        def acked(_: Any) -> None:
            now = time.time()
            for row in rows:
                row["w_acked"] = now

        if acks:  # the write chain awaits them; stamp when the last one came back
            asyncio.gather(*acks).add_done_callback(acked)
        return acks

    def batch_written(self, batch: Any) -> None:
        written = time.time()
        for row in self._by_batch.pop(id(batch), ()):
            row["w_written"] = written


class GcPauses:
    """``--stages``: the collector's pauses in a child, per generation (count, total, max ms)."""

    def __init__(self) -> None:
        self.pauses: dict[str, list[float]] = {}
        self._started = 0.0
        gc.callbacks.append(self._callback)

    def _callback(self, phase: str, info: dict[str, int]) -> None:
        if phase == "start":
            self._started = time.perf_counter()
            return
        spent = (time.perf_counter() - self._started) * 1000
        row = self.pauses.setdefault(f"gen{info['generation']}", [0, 0.0, 0.0])
        row[0] += 1
        row[1] += spent
        row[2] = max(row[2], spent)


def _dump_stamps(stamps: dict[str, dict[str, float]], pauses: GcPauses | None,
                 loop: dict[str, Any] | None = None) -> None:
    path = os.environ.get(STAGES_ENV)
    if path:
        Path(path).write_bytes(orjson.dumps({"stamps": stamps, "loop": loop or {},
                                             "gc": pauses.pauses if pauses else {}}))


async def child(role: str, expect: int) -> None:
    settings = load_settings()
    redis = Redis.from_url(settings.redis_url)
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    loop.add_signal_handler(signal.SIGTERM, stop.set)
    loop.add_signal_handler(signal.SIGINT, stop.set)
    pauses = GcPauses() if os.environ.get(STAGES_ENV) else None
    try:
        if role == "worker":
            if os.environ.get(STAGES_ENV):
                staged = StagedWorker(settings, redis)
                await staged.run(stop)
                _dump_stamps(staged.stamps, pauses, staged.loop_summary())
            else:
                await EventWorker(settings, redis).run(stop)
            return
        worker = MeasuredDelivery(settings, redis, expect, stop)
        await worker.run(stop)
        _dump_stamps(worker.stamps, pauses)
        cpu = (worker.cpu_done - worker.cpu_first
               if worker.cpu_done is not None and worker.cpu_first is not None else None)
        result = {"first_dispatch": worker.first_dispatch, "done": worker.done, "cpu_s": cpu,
                  "settled": sum(worker.offsets.values()), "subs": {}}
        for sub_id in worker.lanes:
            result["subs"][sub_id] = {
                name: worker.metrics.value(f"signalbox_delivery_{name}_total", sub_id)
                for name in ("delivered", "retried", "parked", "dead_lettered")}
        print(orjson.dumps(result).decode(), flush=True)
    finally:
        await redis.aclose()


# -- the driver ---------------------------------------------------------------------------


def bench_settings(redis_db: int) -> Settings:
    base = load_settings(webhook_allow_loopback=True)
    return base.model_copy(update={"log_level": "WARNING"}).isolated(
        uuid.uuid4().hex[:8], prefix="bench-", redis_db=redis_db)


def settings_env(settings: Settings) -> dict[str, str]:
    return settings.to_env(dict(os.environ))


def spawn(role: str, settings: Settings, expect: int = 0,
          stages: str | None = None) -> subprocess.Popen[bytes]:
    env = settings_env(settings)
    env.pop(STAGES_ENV, None)
    if stages:
        env[STAGES_ENV] = stages
    return subprocess.Popen([sys.executable, __file__, "--child", role, "--expect", str(expect)],
                            env=env, cwd=ROOT, stdout=subprocess.PIPE)


def stage_files(args: argparse.Namespace, *roles: str) -> dict[str, str | None]:
    if not args.stages:
        return dict.fromkeys(roles)
    base = f"/tmp/bench-stages-{os.getpid()}-{uuid.uuid4().hex[:6]}"
    return {role: f"{base}-{role}.json" for role in roles}


def stage_report(files: dict[str, str | None], requests: list[Any]) -> None:
    """Join the children's stamps with the receiver's by (user_id, ts); print per stage the
    time since ``ts``, per hop its duration, and the slowest 1%'s mean hops."""
    rows: dict[str, dict[str, float]] = {}
    pauses = []
    for role, path in files.items():
        if path is None or not Path(path).exists():
            continue
        dumped = orjson.loads(Path(path).read_bytes())
        for key, stamps in dumped["stamps"].items():
            rows.setdefault(key, {}).update(stamps)
        pauses += [f"{role} {gen} {n}x, {total:.0f} ms, max {most:.1f} ms"
                   for gen, (n, total, most) in sorted(dumped["gc"].items())]
        loop = dumped.get("loop") or {}
        if loop:
            sizes = loop.pop("batches")
            print(f"  {role} loop (records per batch p50 {sizes[0]:.0f}, p99 {sizes[1]:.0f}); "
                  "per phase: calls, p50/p99 ms, share of wall time:")
            print("    " + "; ".join(f"{phase} {n}x {p50:.1f}/{p99:.1f} ms {share:.0f}%"
                                    for phase, (n, p50, p99, share) in loop.items()))
        Path(path).unlink()
    print(f"  gc pauses (whole child run): {'; '.join(pauses) or 'none'}")
    joined = []
    for r in requests:
        data = (r.json or {}).get("data") or {}
        if "ts" not in data:
            continue
        row = rows.get(_stage_key(data.get("user_id"), data["ts"]))
        if row is None:
            continue
        row = dict(row, ts=float(data["ts"]) / 1000, recv=r.received_at)
        joined.append(row)
    names = ["ts"] + [n for n, _ in STAGES if all(n in row for row in joined)]
    if len(joined) < 100 or len(names) < 2:
        print(f"  stages: only {len(joined)} events could be joined")
        return
    print(f"  stages ({len(joined):,} events; ms; cumulative = since ts, hop = since the "
          f"previous stage):")
    ends = sorted(joined, key=lambda row: row["recv"] - row["ts"])
    slow = ends[-max(1, len(ends) // 100):]
    for prev, name in zip(names, names[1:], strict=False):
        cum = [(row[name] - row["ts"]) * 1000 for row in joined]
        hop = [(row[name] - row[prev]) * 1000 for row in joined]
        slow_hop = sum((row[name] - row[prev]) * 1000 for row in slow) / len(slow)
        print(f"    {name:>10}  cumulative p50 {percentile(cum, .5):6.1f} p90 "
              f"{percentile(cum, .9):6.1f} p99 {percentile(cum, .99):6.1f} | hop p50 "
              f"{percentile(hop, .5):6.1f} p90 {percentile(hop, .9):6.1f} p99 "
              f"{percentile(hop, .99):6.1f} | slowest 1%: hop mean {slow_hop:6.1f}")


async def finish(proc: subprocess.Popen[bytes], timeout: float) -> dict[str, Any]:
    """Wait for a delivery child to stop by itself (it stops once it delivered ``expect``)."""
    deadline = time.monotonic() + timeout
    while proc.poll() is None and time.monotonic() < deadline:
        await asyncio.sleep(0.1)
    if proc.poll() is None:
        proc.send_signal(signal.SIGTERM)
    out, _ = await asyncio.to_thread(proc.communicate, timeout=30)
    if proc.returncode:
        raise RuntimeError(f"delivery process failed with exit code {proc.returncode}")
    return orjson.loads(out.splitlines()[-1])


async def stop_child(proc: subprocess.Popen[bytes]) -> None:
    if proc.poll() is None:
        proc.send_signal(signal.SIGTERM)
    await asyncio.to_thread(proc.communicate, timeout=30)


async def reset_registry(settings: Settings, subscriptions: list[dict[str, Any]],
                         demo: bool = False) -> None:
    redis = Redis.from_url(settings.redis_url)
    try:
        await redis.flushdb()
        registry = Registry(redis)
        if demo:
            await publish_attribute_group(registry, COUNTER_GROUP)
            await publish_segment(registry, {"segment_ql": f"FILTER cart_items > 0 ALIAS {SEGMENT_SLUG}"})
        for doc in subscriptions:
            await publish_subscription(registry, doc)
    finally:
        await redis.aclose()


async def produce(settings: Settings, topic: str, items: list[tuple[bytes, bytes]]) -> float:
    producer = kafka.producer(settings)
    await producer.start()
    started = time.perf_counter()
    try:
        for i in range(0, len(items), PRODUCE_CHUNK):
            sends = [await producer.send(topic, v, key=k) for k, v in items[i:i + PRODUCE_CHUNK]]
            await asyncio.gather(*sends)
    finally:
        gc.enable()
        await producer.stop()
    return time.perf_counter() - started


def backlog(count: int, entities: int) -> list[tuple[bytes, bytes]]:
    now = int(time.time() * 1000)
    out = []
    for i in range(count):
        ref = EntityRef("user_id", f"bench-{i % entities}")
        kind = "enter" if (i // entities) % 2 == 0 else "exit"
        t = Transition(transition_id=transition_id(ref, SEGMENT_ID, kind, f"bench/{i}"),
                       entity=ref, segment_id=SEGMENT_ID, segment_slug=SEGMENT_SLUG, event=kind,
                       at_ms=now, identifiers={"user_id": ref.id},
                       profile={"user_id": ref.id, "cart_items": 1 if kind == "enter" else 0,
                                "ts": now})
        out.append((str(ref).encode(), t.to_json()))
    return out


def kinesis_client(settings: Settings) -> Any:
    return boto3.client("kinesis", endpoint_url=settings.kinesis_endpoint_url,
                        region_name=os.environ.get("AWS_REGION", "us-east-1"))


def create_stream(settings: Settings, name: str) -> None:
    client = kinesis_client(settings)
    client.create_stream(StreamName=name, ShardCount=KINESIS_SHARDS)
    for _ in range(200):
        if client.describe_stream(StreamName=name)["StreamDescription"]["StreamStatus"] == "ACTIVE":
            return
        time.sleep(0.05)
    raise RuntimeError(f"kinesis stream {name} never became ACTIVE")


def count_stream(settings: Settings, name: str) -> int:
    client = kinesis_client(settings)
    shards = client.describe_stream(StreamName=name)["StreamDescription"]["Shards"]
    total = 0
    for shard in shards:
        iterator = client.get_shard_iterator(StreamName=name, ShardId=shard["ShardId"],
                                             ShardIteratorType="TRIM_HORIZON")["ShardIterator"]
        while iterator:
            got = client.get_records(ShardIterator=iterator, Limit=10000)
            total += len(got["Records"])
            if not got["Records"] or got.get("MillisBehindLatest", 0) == 0:
                break
            iterator = got.get("NextShardIterator")
    return total


def percentiles(values: list[float]) -> tuple[float, float]:
    return percentile(values, 0.5), percentile(values, 0.99)


def percentile(values: list[float], q: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, int(q * len(ordered)))] if ordered else float("nan")


def cpu_line(res: dict[str, Any], transitions: int) -> str:
    """The delivery process's own CPU per transition: unlike the rate, it hardly depends on
    what else the machine runs, so it says what one free core would sustain."""
    if not res.get("cpu_s"):
        return "  delivery process CPU: not measured"
    per = res["cpu_s"] / transitions
    return (f"  delivery process CPU: {per * 1e6:,.0f} us/transition "
            f"(one free core: ~{1 / per:,.0f} transitions/s)")


def receiver_cpu(receiver: Any) -> float:
    """CPU seconds of a ``ReceiverProcess`` (a thread receiver's are this process's)."""
    return proc_cpu(receiver._proc) if isinstance(receiver, ReceiverProcess) else 0.0


def proc_cpu(proc: Any) -> float:
    """CPU seconds (user + system) a child process has used so far."""
    fields = Path(f"/proc/{proc.pid}/stat").read_text().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def cpu_per(name: str, used_s: float, count: int) -> str:
    return f"{name} {used_s / count * 1e6:,.0f} us CPU per {'event' if name == 'worker' else 'transition'}"


def machine_busy() -> tuple[float, float, float]:
    """(wall s, CPU s the whole machine was busy, CPU s of Kafka and Redis) from /proc, for
    ``busy_line``."""
    fields = [int(v) for v in Path("/proc/stat").read_text().split("\n", 1)[0].split()[1:]]
    idle = fields[3] + fields[4]
    services = 0
    for stat in Path("/proc").glob("[0-9]*/stat"):
        try:
            name, rest = stat.read_text().rsplit(")", 1)
        except OSError:
            continue
        if name.endswith(("(java", "(redis-server")):
            values = rest.split()
            services += int(values[11]) + int(values[12])
    tick = os.sysconf("SC_CLK_TCK")
    return time.monotonic(), (sum(fields[:8]) - idle) / tick, services / tick


def busy_line(start: tuple[float, float, float], ours: float) -> str:
    """How busy the machine was over a phase, and how much of it was not the processes under
    test (this one and its children, Kafka, Redis): a tail measured on a machine that
    something else kept busy says little."""
    wall, busy, services = machine_busy()
    span = wall - start[0]
    cores, mine, svc = (busy - start[1]) / span, ours / span, (services - start[2]) / span
    return (f"  machine busy {cores:.2f} of {os.cpu_count()} cores over the phase: bench "
            f"processes {mine:.2f}, Kafka + Redis {svc:.2f}, anything else "
            f"{cores - mine - svc:.2f}")


def self_cpu() -> float:
    usage = os.times()
    return usage.user + usage.system


def load() -> str:
    one, five, _ = os.getloadavg()
    return f"load avg {one:.2f}/{five:.2f} (1/5 min) on {os.cpu_count()} cores"


async def throughput(args: argparse.Namespace) -> None:
    settings = bench_settings(args.redis_db)
    await kafka.ensure_topics(settings)
    items = backlog(args.transitions, args.entities)
    produced_s = await produce(settings, settings.transitions_topic, items)
    print(f"backlog: {args.transitions:,} transitions over {args.entities:,} entities produced "
          f"onto {settings.transitions_topic} ({settings.partitions} partitions) in "
          f"{produced_s:.1f}s")

    # webhook
    with WebhookReceiver() as receiver:
        await reset_registry(settings, [{"id": "bench-webhook", "channel": "webhook",
                                         "segment_ids": [SEGMENT_ID], "webhook_url": receiver.url}])
        group = settings.model_copy(update={"delivery_group": settings.delivery_group + "-wh"})
        res = await finish(spawn("delivery", group, args.transitions), timeout=600)
        requests = receiver.requests
    ids = {r.header("webhook-id") for r in requests}
    seconds = (res["done"] or float("nan")) - (res["first_dispatch"] or float("nan"))
    stamps = [r.received_at for r in requests]
    recv_s = max(stamps) - min(stamps) if stamps else float("nan")
    print(f"webhook: {args.transitions / seconds:>8,.0f} transitions/s  (first dispatch -> "
          f"all delivered in {seconds:.2f}s; receiver: {len(requests):,} "
          f"requests, {len(ids):,} distinct webhook-ids, first->last {recv_s:.2f}s = "
          f"{len(ids) / recv_s:,.0f}/s; lane {res['subs'].get('bench-webhook')})")
    print(cpu_line(res, args.transitions))

    # kinesis
    stream = f"bench-{uuid.uuid4().hex[:8]}"
    await asyncio.to_thread(create_stream, settings, stream)
    await reset_registry(settings, [{"id": "bench-kinesis", "channel": "kinesis",
                                     "segment_ids": [SEGMENT_ID], "region": "us-east-1",
                                     "stream": stream}])
    group = settings.model_copy(update={"delivery_group": settings.delivery_group + "-kin"})
    res = await finish(spawn("delivery", group, args.transitions), timeout=600)
    seconds = (res["done"] or float("nan")) - (res["first_dispatch"] or float("nan"))
    in_stream = await asyncio.to_thread(count_stream, settings, stream)
    # kinesalite allows 10 shards per account: leave none behind
    await asyncio.to_thread(kinesis_client(settings).delete_stream, StreamName=stream)
    print(f"kinesis: {args.transitions / seconds:>8,.0f} transitions/s  (first dispatch -> "
          f"all delivered in {seconds:.2f}s; stream {stream} "
          f"({KINESIS_SHARDS} shards) holds {in_stream:,} records; lane "
          f"{res['subs'].get('bench-kinesis')})")
    print(cpu_line(res, args.transitions))


async def paced(settings: Settings, rate: float, seconds: float,
                record: Callable[[int], tuple[str, EntityRef, bytes]]) -> tuple[int, float]:
    """Produce ``rate``/s records for ``seconds`` (``record(n)`` -> topic, entity, value,
    built just before its send; keyed by the entity); return (count, seconds taken).
    Open-loop: acks are awaited at the end, never before the next send (see the module doc).
    The partition is the default partitioner's, memoised: the client's murmur2 in Python
    (~17 µs a record) would be CPU taken from the processes measured. Each 2 ms step goes out
    as one batch per partition (``kafka.send_batched``): ``producer.send`` per record cost the
    machine ~0.1 of a core more at 5k/s."""
    owners = Ownership(settings.partitions)
    producer = kafka.producer(settings)
    await producer.start()
    for topic in (settings.events_topic, settings.transitions_topic):
        await producer.partitions_for(topic)  # metadata now, not in the first step's latency
    total = int(rate * seconds)
    chunk = max(1, int(rate / 500))  # pace in 2 ms steps
    started = time.perf_counter()
    sends = []
    gc.disable()  # as in the receiver: the growing list of sends made full passes pause the pacing
    try:
        for i in range(0, total, chunk):
            step: dict[str, list[kafka.Keyed]] = {}
            for n in range(i, min(total, i + chunk)):
                topic, ref, value = record(n)
                step.setdefault(topic, []).append((owners.owner(ref), str(ref).encode(), value, []))
            for topic, records in step.items():
                sends += await kafka.send_batched(producer, topic, records)
            ahead = started + (i + chunk) / rate - time.perf_counter()
            if ahead > 0:
                await asyncio.sleep(ahead)
        await asyncio.gather(*sends)
    finally:
        gc.enable()
        await producer.stop()
    return total, time.perf_counter() - started


async def paced_flips(settings: Settings, rate: float, seconds: float, users: int) -> tuple[int, float]:
    """Flip events for ``users`` users, each stamped with its produce time (``ts``)."""

    def flip(n: int) -> tuple[str, EntityRef, bytes]:
        user = f"lat-{n % users}"
        value = orjson.dumps({"user_id": user, "cart_items": 1 - (n // users) % 2,
                              "ts": int(time.time() * 1000)})
        return settings.events_topic, EntityRef("user_id", user), value

    return await paced(settings, rate, seconds, flip)


async def paced_transitions(settings: Settings, rate: float, seconds: float,
                            entities: int) -> tuple[int, float]:
    """Transitions straight onto the transitions topic, each stamped with its produce time
    (profile ``ts``)."""

    def hop(n: int) -> tuple[str, EntityRef, bytes]:
        ref = EntityRef("user_id", f"hop-{n % entities}")
        kind: Literal["enter", "exit"] = "enter" if (n // entities) % 2 == 0 else "exit"
        now = int(time.time() * 1000)
        t = Transition(transition_id=transition_id(ref, SEGMENT_ID, kind, f"hop/{n}"),
                       entity=ref, segment_id=SEGMENT_ID, segment_slug=SEGMENT_SLUG,
                       event=kind, at_ms=now, identifiers={"user_id": ref.id},
                       profile={"user_id": ref.id, "ts": now})
        return settings.transitions_topic, ref, t.to_json()

    return await paced(settings, rate, seconds, hop)


async def delivery_latency(args: argparse.Namespace) -> None:
    """The delivery worker alone: transitions produced at ``--rate``/s onto its topic ->
    webhook receipt, so the figure is not bounded by the event worker."""
    settings = bench_settings(args.redis_db)
    await kafka.ensure_topics(settings)
    with latency_receiver(args) as receiver:
        await reset_registry(settings, [{"id": "bench-hop", "channel": "webhook",
                                         "segment_ids": [SEGMENT_ID], "webhook_url": receiver.url}])
        files = stage_files(args, "delivery")
        delivery = spawn("delivery", settings, stages=files["delivery"])
        try:
            producer = kafka.producer(settings)  # warm-up: proves the worker is assigned
            await producer.start()
            warm = Transition(transition_id="warmup", entity=EntityRef("user_id", "warmup"),
                              segment_id=SEGMENT_ID, segment_slug=SEGMENT_SLUG, event="enter",
                              at_ms=int(time.time() * 1000))
            await producer.send_and_wait(settings.transitions_topic, warm.to_json(), key=b"w")
            await producer.stop()
            await asyncio.to_thread(receiver.wait_for, 1, 120.0)
            receiver.clear()
            cpu_start, busy_start = (proc_cpu(delivery), self_cpu(), receiver_cpu(receiver)), machine_busy()
            count, produce_s = await paced_transitions(settings, args.rate, args.seconds,
                                                       args.users)
            deadline = time.monotonic() + max(60.0, 2 * args.seconds)
            while receiver.count < count and time.monotonic() < deadline:
                await asyncio.sleep(0.1)
            cpu_line_ = cpu_per("delivery", proc_cpu(delivery) - cpu_start[0], count)
            busy = busy_line(busy_start, proc_cpu(delivery) + self_cpu() + receiver_cpu(receiver)
                             - sum(cpu_start))
            requests = receiver.requests
        finally:
            await stop_child(delivery)
    lat, seen = [], set()
    for r in requests:
        if r.json is None or r.header("webhook-id") in seen:
            continue
        seen.add(r.header("webhook-id"))
        lat.append(r.received_at * 1000 - float(r.json["data"]["ts"]))
    print(f"delivery alone: {count:,} transitions produced at {count / produce_s:,.0f}/s "
          f"(target {args.rate:,.0f}/s) straight onto the transitions topic; {len(seen):,} "
          f"received; produce->webhook receipt p50 {percentile(lat, 0.5):.1f} ms, p90 "
          f"{percentile(lat, 0.9):.1f} ms, p99 {percentile(lat, 0.99):.1f} ms, max "
          f"{max(lat, default=float('nan')):.1f} ms")
    print(f"  process CPU from the first paced send until all were received: {cpu_line_}")
    print(busy)
    if args.stages:
        stage_report(files, requests)


async def latency(args: argparse.Namespace) -> float:
    settings = bench_settings(args.redis_db)
    await kafka.ensure_topics(settings)
    with latency_receiver(args) as receiver:
        await reset_registry(settings, [{"id": "bench-latency", "channel": "webhook",
                                         "segment_ids": [SEGMENT_SLUG], "webhook_url": receiver.url}],
                             demo=True)
        files = stage_files(args, "worker", "delivery")
        worker = spawn("worker", settings, stages=files["worker"])
        delivery = spawn("delivery", settings, stages=files["delivery"])
        try:
            # warm-up: one flip end to end proves both processes are assigned and loaded
            producer = kafka.producer(settings)
            await producer.start()
            await producer.send_and_wait(settings.events_topic, orjson.dumps(
                {"user_id": "warmup", "cart_items": 1, "ts": int(time.time() * 1000)}),
                key=b"user_id:warmup")
            await producer.stop()
            await asyncio.to_thread(receiver.wait_for, 1, 120.0)
            receiver.clear()
            cpu_start = proc_cpu(worker), proc_cpu(delivery)
            own_start, busy_start = self_cpu() + receiver_cpu(receiver), machine_busy()
            count, produce_s = await paced_flips(settings, args.rate, args.seconds, args.users)
            produced_at = time.time()
            deadline = time.monotonic() + max(60.0, 2 * args.seconds)
            while receiver.count < count and time.monotonic() < deadline:
                await asyncio.sleep(0.1)
            drained_s = time.time() - produced_at
            cpu_lines = (cpu_per("worker", proc_cpu(worker) - cpu_start[0], count) + "; "
                         + cpu_per("delivery", proc_cpu(delivery) - cpu_start[1], count))
            busy = busy_line(busy_start, proc_cpu(worker) + proc_cpu(delivery) + self_cpu()
                             + receiver_cpu(receiver) - sum(cpu_start) - own_start)
            requests = receiver.requests
        finally:
            await stop_child(delivery)
            await stop_child(worker)
    lat, seen = [], set()
    for r in requests:
        if r.json is None or r.header("webhook-id") in seen:
            continue
        seen.add(r.header("webhook-id"))
        data = r.json["data"]
        sent = data.get("ts", data.get("sent_ms"))
        if sent is not None:
            lat.append(r.received_at * 1000 - float(sent))
    p50, p99 = percentile(lat, 0.5), percentile(lat, 0.99)
    print(f"latency: {count:,} flip events produced at {count / produce_s:,.0f}/s "
          f"(target {args.rate:,.0f}/s) over {produce_s:.1f}s to {args.users:,} users; "
          f"{len(seen):,}/{count:,} transitions received "
          f"{'within' if len(seen) >= count else 'NOT ALL within'} {drained_s:.1f}s after the "
          f"last send")
    print("  measured: webhook receipt time (receiver, after reading the body) - the event's "
          "'ts' (producer wall ms just before send), read back from the payload's data; one "
          "EventWorker + one DeliveryWorker process")
    print(f"  p50 {p50:.1f} ms, p90 {percentile(lat, 0.9):.1f} ms, p99 {p99:.1f} ms, "
          f"max {max(lat, default=float('nan')):.1f} ms")
    print(f"  process CPU from the first paced send until all were received: {cpu_lines}")
    print(busy)
    if args.stages:
        stage_report(files, requests)

    return p99


async def main_async(args: argparse.Namespace) -> None:
    print(f"machine: {load()}")
    if args.transitions:
        await throughput(args)
    if args.rate <= 0:
        return
    print(f"machine: {load()}")
    await delivery_latency(args)
    p99s = []
    for run in range(args.runs):
        print(f"machine: {load()}" + (f" (end-to-end run {run + 1} of {args.runs})"
                                      if args.runs > 1 else ""))
        p99s.append(await latency(args))
    print(f"machine: {load()}")
    if args.runs > 1:  # one run's p99 swings with whatever else the 2 cores did meanwhile
        print(f"end-to-end p99 per run: {', '.join(f'{p:.0f}' for p in p99s)} ms")
    print(f"delivery p99 produce->webhook: {statistics.median(p99s):.1f} ms"
          + (f" (median of {args.runs} runs)" if args.runs > 1 else ""))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--transitions", type=int, default=20_000,
                        help="backlog size for the throughput phases (0 skips them)")
    parser.add_argument("--entities", type=int, default=5_000, help="entities of the backlog")
    parser.add_argument("--rate", type=float, default=5_000.0,
                        help="events/s of the latency phases (0 skips them)")
    parser.add_argument("--seconds", type=float, default=10.0, help="length of the latency phase")
    parser.add_argument("--runs", type=int, default=1,
                        help="end-to-end latency runs (the last line gives their median p99)")
    parser.add_argument("--users", type=int, default=5_000, help="users flipped in the latency phase")
    parser.add_argument("--redis-db", type=int, default=14, help="flushed at start")
    parser.add_argument("--receiver", choices=("process", "thread"), default="process",
                        help="where the latency phases' webhook receiver runs")
    parser.add_argument("--stages", action="store_true",
                        help="stamp every event at each pipeline stage; print where the time goes")
    parser.add_argument("--child", choices=("worker", "delivery"), help=argparse.SUPPRESS)
    parser.add_argument("--expect", type=int, default=0, help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.child:
        profile_to = os.environ.get("BENCH_PROFILE_DIR")
        if profile_to:  # CPU profile of each child, e.g. for `python -m pstats`
            import cProfile

            profiler = cProfile.Profile(time.process_time)
            profiler.enable()
            try:
                asyncio.run(child(args.child, args.expect))
            finally:
                profiler.disable()
                profiler.dump_stats(f"{profile_to}/{args.child}-{os.getpid()}.prof")
        else:
            asyncio.run(child(args.child, args.expect))
    else:
        asyncio.run(main_async(args))


if __name__ == "__main__":
    main()
