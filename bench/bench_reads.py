"""Benchmark: Profiles Store reads (``POST /api/v1/get-online-attributes``) over real HTTP.

Each request asks for 20 attributes (counters, windowed counters, sums, last values, unique
lists, category counts) of 10 identifiers, a different 10 of 1,000 entities each time. The
entities are seeded directly in Redis with the worker's own aggregation code and hash layout
(the read path is what is measured, not ingestion). Target: p99 < 5 ms.

Two kinds of client, each at every ``--concurrency`` level (connections kept open, each
sending its next request when the previous answer arrives):

- ``wrk`` (``--wrk SECONDS``; Debian's C client): its latency is the server's, with almost no
  client cost. This is the figure the target is about.
- a Python client (``--client httpx`` or ``aiohttp``): what a Python caller sees. On a small
  machine the client's own CPU competes with the server's and is counted in its latency.

One ``summary`` line per mode and level: p50 / p90 / p99, requests/s, the server's CPU per
request (when this script started the server: robust to other load, unlike latency) and the
load average. Without ``--api-url`` it starts ``python -m processor api`` itself (the real CLI,
with its uvicorn settings; ``WEB_CONCURRENCY=N`` in the environment gives it N worker
processes) on a free loopback port against ``--redis-url``, whose database is flushed first:
do not point it at one in use.

    python bench/bench_reads.py [--redis-db 6 | --redis-url URL] [--concurrency 1,4,16]
                                [--wrk SECONDS] [--client httpx,aiohttp | --client none]
                                [--requests 3000] [--api-url URL --token TOKEN]
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import shutil
import socket
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable, Coroutine
from pathlib import Path
from typing import Any
from urllib.parse import urlparse

import httpx
import orjson
from redis.asyncio import Redis

from processor.domain import aggregations
from processor.domain.definitions import AttributeGroup
from processor.domain.topology import spec_for
from processor.state import keys
from processor.state.tokens import TokenStore

ROOT = Path(__file__).resolve().parents[1]
PATH = "/api/v1/get-online-attributes"
ENTITIES = 1000
IDS_PER_REQUEST = 10
ATTRIBUTES = [f"bench_v1:a{i}" for i in range(20)]
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


def request_body(n: int) -> dict[str, Any]:
    """The n-th request: 10 consecutive entities, moving on by 10 each request."""
    ids = [f"u{(n * IDS_PER_REQUEST + k) % ENTITIES}" for k in range(IDS_PER_REQUEST)]
    return {"attribute_keys": {"domain_userid": ids}, "attributes": ATTRIBUTES}


async def seed(redis: Redis, group: AttributeGroup, now_ms: int) -> None:
    """Write 20 attribute states (one group field) for each of ENTITIES entities, as the worker would."""
    async with redis.pipeline(transaction=False) as pipe:
        for e in range(ENTITIES):
            states: dict[str, Any] = {}
            for attribute in group.attributes or ():
                spec = spec_for(attribute, group)
                state = aggregations.new_state(spec)
                for j in range(20):
                    value: Any = f"/page/{j % 7}" if attribute.aggregation != "sum" else j * 1.5
                    state = aggregations.apply(spec, state, value, now_ms - j * 60_000)
                states[attribute.name] = state
            fields = {keys.IDENTIFIERS_FIELD: orjson.dumps({"domain_userid": f"u{e}"}),
                      keys.group_field(group.name, group.version): orjson.dumps(states)}
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


def cpu_seconds(pid: int | None) -> tuple[float, float] | None:
    """User and system CPU time so far of a process and its live descendants (the workers of
    ``WEB_CONCURRENCY=N processor api``), from Linux /proc; None when unknown."""
    if pid is None:
        return None
    user = system = 0.0
    pending = [pid]
    try:
        while pending:
            current = pending.pop()
            stat = Path(f"/proc/{current}/stat").read_text().rsplit(")", 1)[1].split()
            user += int(stat[11]) / os.sysconf("SC_CLK_TCK")
            system += int(stat[12]) / os.sysconf("SC_CLK_TCK")
            for task in Path(f"/proc/{current}/task").iterdir():
                pending += [int(child) for child in (task / "children").read_text().split()]
    except OSError:
        return None
    return user, system


def cpu_used(before: tuple[float, float] | None, after: tuple[float, float] | None) -> tuple[float, float] | None:
    """User and system CPU seconds between two :func:`cpu_seconds` readings."""
    if before is None or after is None:
        return None
    return after[0] - before[0], after[1] - before[1]


def _check(status: int, body: bytes) -> None:
    if status != 200:
        raise SystemExit(f"bad response {status}: {body[:200]!r}")
    decoded = orjson.loads(body)
    if len(decoded["a0"]) != IDS_PER_REQUEST or len(decoded) != 21:
        raise SystemExit(f"unexpected body: {body[:200]!r}")


# A Python client: (url, token, requests, concurrency) -> latencies in seconds.
Client = Callable[[str, str, int, int], Coroutine[Any, Any, list[float]]]


async def run_httpx(url: str, token: str, requests: int, concurrency: int) -> list[float]:
    headers = {"Authorization": f"Bearer {token}"}
    latencies: list[float] = []
    counter = iter(range(requests))
    limits = httpx.Limits(max_connections=concurrency, max_keepalive_connections=concurrency)
    async with httpx.AsyncClient(base_url=url, headers=headers, limits=limits) as client:

        async def one_connection() -> None:
            checked = False
            for n in counter:
                body = request_body(n)
                start = time.perf_counter()
                response = await client.post(PATH, json=body)
                latencies.append(time.perf_counter() - start)
                if response.status_code != 200 or not checked:
                    _check(response.status_code, response.content)
                    checked = True

        await asyncio.gather(*(one_connection() for _ in range(concurrency)))
    return latencies


async def run_aiohttp(url: str, token: str, requests: int, concurrency: int) -> list[float]:
    import aiohttp  # installed with faust-streaming; optional here

    headers = {"Authorization": f"Bearer {token}", "Content-Type": "application/json"}
    latencies: list[float] = []
    counter = iter(range(requests))
    connector = aiohttp.TCPConnector(limit=concurrency)
    async with aiohttp.ClientSession(url, headers=headers, connector=connector) as session:

        async def one_connection() -> None:
            checked = False
            for n in counter:
                data = orjson.dumps(request_body(n))
                start = time.perf_counter()
                async with session.post(PATH, data=data) as response:
                    content = await response.read()
                latencies.append(time.perf_counter() - start)
                if response.status != 200 or not checked:
                    _check(response.status, content)
                    checked = True

        await asyncio.gather(*(one_connection() for _ in range(concurrency)))
    return latencies


CLIENTS: dict[str, Client] = {"httpx": run_httpx, "aiohttp": run_aiohttp}

# wrk varies the identifiers like the Python clients and prints exact percentiles (in us).
WRK_SCRIPT = """
wrk.method = "POST"
wrk.headers["Content-Type"] = "application/json"
wrk.headers["Authorization"] = "Bearer %(token)s"
local n = 0
local attributes = '%(attributes)s'
request = function()
  local ids = {}
  for k = 0, %(per)d - 1 do ids[#ids + 1] = string.format('"u%%d"', (n * %(per)d + k) %% %(entities)d) end
  n = n + 1
  return wrk.format(nil, nil, nil, '{"attribute_keys":{"domain_userid":[' .. table.concat(ids, ",")
    .. ']},"attributes":' .. attributes .. '}')
end
done = function(summary, latency, requests)
  local e = summary.errors
  io.write(string.format("WRK %%d %%d %%d %%d %%d %%d %%d\\n", summary.requests,
    e.connect + e.read + e.write + e.status + e.timeout, summary.duration,
    latency:percentile(50), latency:percentile(90), latency:percentile(99), latency.max))
end
"""


def run_wrk(url: str, token: str, concurrency: int, seconds: int) -> dict[str, float]:
    """Latency percentiles (ms) and rate of wrk at ``concurrency`` connections (one thread)."""
    wrk = shutil.which("wrk")
    if wrk is None:
        raise SystemExit("wrk is not installed (apt-get install wrk)")
    script = WRK_SCRIPT % {"token": token, "attributes": json.dumps(ATTRIBUTES),
                           "per": IDS_PER_REQUEST, "entities": ENTITIES}  # fmt: skip
    with tempfile.NamedTemporaryFile("w", suffix=".lua") as file:
        file.write(script)
        file.flush()
        done = subprocess.run([wrk, "-t1", f"-c{concurrency}", f"-d{seconds}s", "-s", file.name,
                               f"{url}{PATH}"], capture_output=True, text=True, check=True)  # fmt: skip
    line = next(x for x in done.stdout.splitlines() if x.startswith("WRK "))
    requests, errors, duration_us, p50, p90, p99, worst = (int(x) for x in line.split()[1:])
    if errors:
        raise SystemExit(f"wrk saw {errors} errors or non-2xx answers:\n{done.stdout}")
    return {"n": requests, "p50": p50 / 1000, "p90": p90 / 1000, "p99": p99 / 1000,
            "max": worst / 1000, "rate": requests / (duration_us / 1e6)}  # fmt: skip


def percentiles(latencies: list[float], elapsed: float) -> dict[str, float]:
    ordered = sorted(latencies)

    def at(q: float) -> float:
        return ordered[min(len(ordered) - 1, int(len(ordered) * q))] * 1000

    return {"n": len(ordered), "p50": at(0.50), "p90": at(0.90), "p99": at(0.99),
            "max": ordered[-1] * 1000, "rate": len(ordered) / elapsed}  # fmt: skip


def summary(mode: str, concurrency: int, stats: dict[str, float], cpu: tuple[float, float] | None) -> str:
    server = ""
    if cpu is not None:
        per = [seconds * 1000 / stats["n"] for seconds in cpu]
        server = f"  server cpu {sum(per):.2f} ms/req (user {per[0]:.2f} sys {per[1]:.2f})"
    return (f"summary {mode:<8} c={concurrency:<3} n={int(stats['n']):<6} p50 {stats['p50']:6.2f} ms"
            f"  p90 {stats['p90']:6.2f} ms  p99 {stats['p99']:6.2f} ms  max {stats['max']:6.1f} ms"
            f"  {stats['rate']:6.0f} req/s{server}  load {os.getloadavg()[0]:.2f}")  # fmt: skip


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


def default_redis_url(db: int) -> str:
    """The services' Redis (``REDIS_URL``, as in .run/services.env) with database ``db``."""
    base = urlparse(os.environ.get("REDIS_URL", "redis://127.0.0.1:16379/0"))
    return f"redis://{base.hostname}:{base.port or 6379}/{db}"


def main() -> None:
    parser = argparse.ArgumentParser(description=(__doc__ or "").split("\n\n")[0])
    parser.add_argument("--redis-db", type=int, default=6,
                        help="database of the services' Redis to flush and use (default 6)")
    parser.add_argument("--redis-url", help="full Redis URL instead of --redis-db")
    parser.add_argument("--api-url", help="an API already running (nothing is flushed then)")
    parser.add_argument("--token")
    parser.add_argument("--requests", type=int, default=3000, help="per Python-client run")
    parser.add_argument("--concurrency", default="1,4,16",
                        help="comma-separated connection counts (default 1,4,16)")
    parser.add_argument("--client", default="httpx",
                        help="Python clients to run: httpx, aiohttp, both comma-separated, or none")
    parser.add_argument("--wrk", type=int, metavar="SECONDS", default=0,
                        help="also measure with wrk for this many seconds per level")
    args = parser.parse_args()
    redis_url = args.redis_url or default_redis_url(args.redis_db)
    levels = [int(c) for c in args.concurrency.split(",")]
    clients = [c for c in args.client.split(",") if c and c != "none"]
    if unknown := set(clients) - set(CLIENTS):
        raise SystemExit(f"unknown client(s) {sorted(unknown)}; choose from {sorted(CLIENTS)}")
    proc = None
    if args.api_url is None:
        import redis as sync_redis

        sync_redis.Redis.from_url(redis_url).flushdb()
        proc, args.api_url = start_api(redis_url)
    pid = proc.pid if proc is not None else None
    lines = [f"get-online-attributes: {IDS_PER_REQUEST} ids x {len(ATTRIBUTES)} attributes; "
             f"{os.cpu_count()} cpus; server {'started here' if proc else args.api_url}"]  # fmt: skip
    try:
        token = asyncio.run(prepare(redis_url, args.api_url, args.token))
        asyncio.run(run_httpx(args.api_url, token, 300, 2))  # warm-up
        for concurrency in levels:
            if args.wrk:
                before = cpu_seconds(pid)
                stats = run_wrk(args.api_url, token, concurrency, args.wrk)
                lines.append(summary("wrk", concurrency, stats, cpu_used(before, cpu_seconds(pid))))
                print(lines[-1], flush=True)
            for name in clients:
                before = cpu_seconds(pid)
                start = time.perf_counter()
                latencies = asyncio.run(CLIENTS[name](args.api_url, token, args.requests, concurrency))
                stats = percentiles(latencies, time.perf_counter() - start)
                lines.append(summary(name, concurrency, stats, cpu_used(before, cpu_seconds(pid))))
                print(lines[-1], flush=True)
    finally:
        if proc is not None:
            proc.terminate()
            proc.wait(10)
    print("\n".join(lines))


if __name__ == "__main__":
    main()
