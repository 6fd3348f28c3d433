"""Benchmark: Profiles Store reads (``POST /api/v1/get-online-attributes``) over real HTTP.

Each request asks for 20 attributes (counters, windowed counters, sums, last values, unique
lists, category counts) of 10 identifiers. The entities are seeded directly in Redis with the
worker's own aggregation code and hash layout (the read path is what is measured, not
ingestion). Prints p50 / p99 latency and requests/s. Target: p99 < 5 ms.

    python bench/bench_reads.py [--redis-url redis://127.0.0.1:16379/3] [--requests 5000]
                                [--concurrency 8] [--api-url URL --token TOKEN]

Without ``--api-url`` it starts ``python -m processor api`` itself on a free loopback port
against ``--redis-url`` (that database is flushed first: do not point it at one in use).
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import shutil
import socket
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

import httpx
import orjson
from redis.asyncio import Redis

from processor.domain import aggregations
from processor.domain.definitions import AttributeGroup
from processor.domain.topology import spec_for
from processor.state import keys
from processor.state.tokens import TokenStore

ROOT = Path(__file__).resolve().parents[1]
ENTITIES = 1000
IDS_PER_REQUEST = 10
KINDS = [
    ("counter", None, {}),
    ("counter", None, {"period": "P7D"}),
    ("sum", "page_url_len", {}),
    ("last", "page_url", {}),
    ("unique_list", "page_url", {}),
    ("category_count", "page_url", {}),
]


def group_doc() -> dict[str, Any]:
    attributes = []
    for i in range(20):
        kind, prop, extra = KINDS[i % len(KINDS)]
        name = "page_url" if prop else None
        types = {"counter": "int64", "sum": "double", "last": "string",
                 "unique_list": "string_list", "category_count": "dict"}  # fmt: skip
        attribute: dict[str, Any] = {"name": f"a{i}", "type": types[kind], "events": [],
                                     "aggregation": kind, **extra}  # fmt: skip
        if name:
            attribute["property"] = {"type": "atomic", "name": "page_url"}
        attributes.append(attribute)
    return {"name": "bench", "version": 1, "owner": "bench@example.com", "is_published": True,
            "attribute_key": {"name": "domain_userid"}, "attributes": attributes}  # fmt: skip


async def seed(redis: Redis, group: AttributeGroup, now_ms: int) -> None:
    """Write 20 attribute states for each of ENTITIES entities, as the worker would."""
    async with redis.pipeline(transaction=False) as pipe:
        for e in range(ENTITIES):
            fields: dict[str, bytes] = {keys.IDENTIFIERS_FIELD: orjson.dumps({"domain_userid": f"u{e}"})}
            for attribute in group.attributes or ():
                spec = spec_for(attribute, group)
                state = aggregations.new_state(spec)
                for j in range(20):
                    value: Any = f"/page/{j % 7}" if attribute.aggregation != "sum" else j * 1.5
                    state = aggregations.apply(spec, state, value, now_ms - j * 60_000)
                fields[keys.attribute_field(group.name, group.version, attribute.name)] = orjson.dumps(state)
            pipe.hset(keys.entity_state("domain_userid", f"u{e}"), mapping=fields)  # type: ignore[arg-type]
        await pipe.execute()


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def start_api(redis_url: str) -> tuple[subprocess.Popen[bytes], str]:
    port = _free_port()
    env = dict(os.environ, SIGNALBOX_REDIS_URL=redis_url, SIGNALBOX_API_PORT=str(port),
               SIGNALBOX_LOG_LEVEL="WARNING")  # fmt: skip
    env.pop("REDIS_URL", None)
    proc = subprocess.Popen([sys.executable, "-m", "processor", "api"], env=env, cwd=ROOT)
    url = f"http://127.0.0.1:{port}"
    deadline = time.monotonic() + 20
    while time.monotonic() < deadline:
        try:
            if httpx.get(f"{url}/health-all", timeout=1).status_code == 200:
                return proc, url
        except httpx.HTTPError:
            pass
        time.sleep(0.1)
    proc.terminate()
    raise SystemExit("the API did not start")


async def run(url: str, token: str, requests: int, concurrency: int) -> list[float]:
    headers = {"Authorization": f"Bearer {token}"}
    attributes = [f"bench_v1:a{i}" for i in range(20)]
    latencies: list[float] = []
    counter = iter(range(requests))
    limits = httpx.Limits(max_connections=concurrency, max_keepalive_connections=concurrency)
    async with httpx.AsyncClient(base_url=url, headers=headers, limits=limits) as client:

        async def one_client(offset: int) -> None:
            for n in counter:
                ids = [f"u{(n * IDS_PER_REQUEST + k + offset) % ENTITIES}" for k in range(IDS_PER_REQUEST)]
                body = {"attribute_keys": {"domain_userid": ids}, "attributes": attributes}
                start = time.perf_counter()
                response = await client.post("/api/v1/get-online-attributes", json=body)
                latencies.append(time.perf_counter() - start)
                if response.status_code != 200 or len(response.json()["a0"]) != IDS_PER_REQUEST:
                    raise SystemExit(f"bad response {response.status_code}: {response.text[:200]}")

        await asyncio.gather(*(one_client(c) for c in range(concurrency)))
    return latencies


async def prepare(redis_url: str, api_url: str, token: str | None) -> str:
    redis = Redis.from_url(redis_url)
    try:
        if token is None:
            token = (await TokenStore(redis).create("bench-reads"))[1]
        doc = group_doc()
        async with httpx.AsyncClient(base_url=api_url, headers={"Authorization": f"Bearer {token}"}) as c:
            response = await c.post("/api/v1/registry/attribute_groups/", json=doc)
            if response.status_code == 400:
                response = await c.put("/api/v1/registry/attribute_groups/bench/versions/1", json=doc)
            response.raise_for_status()
        await seed(redis, AttributeGroup.model_validate(doc), time.time_ns() // 1_000_000)
        return token
    finally:
        await redis.aclose()


def run_wrk(url: str, token: str, concurrency: int, seconds: int) -> str:
    """The same request from wrk (a C client, Debian's `wrk`), so that the Python client's own
    per-request cost is not counted: wrk's latency distribution is the server's."""
    wrk = shutil.which("wrk")
    if wrk is None:
        raise SystemExit("wrk is not installed (apt-get install wrk)")
    ids = [f"u{k}" for k in range(IDS_PER_REQUEST)]
    body = json.dumps({"attribute_keys": {"domain_userid": ids},
                       "attributes": [f"bench_v1:a{i}" for i in range(20)]})
    with tempfile.NamedTemporaryFile("w", suffix=".lua", delete=False) as script:
        script.write(f"wrk.method = 'POST'\nwrk.body = {json.dumps(body)}\n"
                     f"wrk.headers['Content-Type'] = 'application/json'\n"
                     f"wrk.headers['Authorization'] = 'Bearer {token}'\n")
    done = subprocess.run([wrk, "-t1", f"-c{concurrency}", f"-d{seconds}s", "--latency", "-s",
                           script.name, f"{url}/api/v1/get-online-attributes"],
                          capture_output=True, text=True, check=True)
    return done.stdout


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--redis-url", default="redis://127.0.0.1:16379/3")
    parser.add_argument("--api-url")
    parser.add_argument("--token")
    parser.add_argument("--requests", type=int, default=5000)
    parser.add_argument("--concurrency", type=int, default=8)
    parser.add_argument("--wrk", type=int, metavar="SECONDS", default=0,
                        help="also measure with wrk for this many seconds")
    args = parser.parse_args()
    proc = None
    if args.api_url is None:
        import redis as sync_redis

        sync_redis.Redis.from_url(args.redis_url).flushdb()
        proc, args.api_url = start_api(args.redis_url)
    try:
        token = asyncio.run(prepare(args.redis_url, args.api_url, args.token))
        asyncio.run(run(args.api_url, token, 200, args.concurrency))  # warm-up
        start = time.perf_counter()
        latencies = asyncio.run(run(args.api_url, token, args.requests, args.concurrency))
        elapsed = time.perf_counter() - start
        wrk_report = run_wrk(args.api_url, token, args.concurrency, args.wrk) if args.wrk else ""
    finally:
        if proc is not None:
            proc.terminate()
            proc.wait(10)
    latencies.sort()
    p50 = statistics.median(latencies) * 1000
    p99 = latencies[int(len(latencies) * 0.99) - 1] * 1000
    print(f"get-online-attributes: {IDS_PER_REQUEST} ids x 20 attributes, "
          f"{len(latencies)} requests, concurrency {args.concurrency}")  # fmt: skip
    print(f"p50 {p50:.2f} ms  p99 {p99:.2f} ms  {len(latencies) / elapsed:.0f} req/s (httpx client)")
    if wrk_report:
        print(f"wrk, same request, {args.concurrency} connections, {args.wrk}s:")
        print(wrk_report.rstrip())


if __name__ == "__main__":
    main()
