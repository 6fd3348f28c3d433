"""Redis restarts mid-stream (``deploy/services.sh restart-redis``, AOF kept): the running
worker rides through the outage and every counter ends exact.

This test stops the project's Redis for a moment, so it must run after every other test (the
suite runs sequentially in CI; ``tests/conftest.py`` orders this module last). It refuses to
run unless the Redis it would restart is the one the tests use: export the ``SB_*`` variables
of a private service set (``SB_RUN_DIR``, ``SB_REDIS_PORT``...) together with its
``services.env`` to run it against that set instead.
"""

from __future__ import annotations

import asyncio
import os
import subprocess
import time
from pathlib import Path
from urllib.parse import urlparse

import orjson
import pytest
from redis.exceptions import ConnectionError as RedisConnectionError

from processor.settings import Settings
from processor.streams.kafka import ensure_topics
from tests.conftest import ROOT, settings_env
from tests.integration.test_worker import publish_demo
from tests.integration.test_worker_crash import counters
from tests.support.kafka_io import produce
from tests.support.running import spawn, wait_loaded

pytestmark = pytest.mark.integration

SERVICES = ROOT / "deploy" / "services.sh"
USERS = 200  # `counters` reads users "crash-0" .. "crash-199"
EVENTS = 16_000


def managed_redis() -> tuple[str | None, int | None]:
    """Host and port of the Redis that ``deploy/services.sh`` manages in this environment."""
    out = subprocess.run([str(SERVICES), "env"], capture_output=True, text=True, check=True,
                         cwd=ROOT, env=dict(os.environ)).stdout
    url = next(line.split("=", 1)[1] for line in out.splitlines() if line.startswith("REDIS_URL="))
    parsed = urlparse(url)
    return parsed.hostname, parsed.port


def restart_redis() -> float:
    started = time.monotonic()
    done = subprocess.run([str(SERVICES), "restart-redis"], capture_output=True, text=True,
                          cwd=ROOT, env=dict(os.environ))
    assert done.returncode == 0, done.stderr
    return time.monotonic() - started


async def produce_slowly(settings: Settings) -> None:
    """~8 s of traffic, cycling each user's cart through 0, 1, 2 items."""
    chunk = 400
    for start in range(0, EVENTS, chunk):
        users = [f"crash-{i % USERS}" for i in range(start, start + chunk)]
        values = [orjson.dumps({"user_id": u, "cart_items": i % 3}) for i, u in enumerate(users)]
        await produce(settings, values, keys=[u.encode() for u in users])
        await asyncio.sleep(0.15)


async def applied(settings: Settings) -> int | None:
    try:
        return sum((await counters(settings)).values())
    except (RedisConnectionError, OSError):
        return None  # Redis is restarting


def test_worker_rides_through_a_redis_restart(settings: Settings, tmp_path: Path) -> None:
    parsed = urlparse(settings.redis_url)
    assert managed_redis() == (parsed.hostname, parsed.port), (
        f"deploy/services.sh manages Redis at {managed_redis()}, the tests use "
        f"{parsed.hostname}:{parsed.port}: export the SB_* variables of the services in use")
    log = tmp_path / "worker.log"

    async def scenario() -> None:
        await ensure_topics(settings)
        await publish_demo(settings)
        worker = spawn("worker", settings_env(settings), log)
        try:
            await wait_loaded(settings, timeout=60, pid=worker.pid)
            producing = asyncio.create_task(produce_slowly(settings))
            await asyncio.sleep(2.0)
            before = await applied(settings)
            outage_s = await asyncio.to_thread(restart_redis)
            await producing
            deadline = time.monotonic() + 120
            while (await applied(settings) or 0) < EVENTS and time.monotonic() < deadline:
                assert worker.poll() is None, f"worker exited:\n{log.read_text()[-3000:]}"
                await asyncio.sleep(0.5)
            alive = worker.poll() is None
        finally:
            worker.terminate()
            worker.wait(timeout=30)
        print(f"applied before the restart: {before}; restart took {outage_s:.1f}s")
        assert before is not None and 0 < before < EVENTS, before  # the restart was mid-stream
        assert alive, f"worker exited:\n{log.read_text()[-3000:]}"
        expected = {f"crash-{u}": EVENTS // USERS for u in range(USERS)}
        assert await counters(settings) == expected, log.read_text()[-3000:]

    asyncio.run(scenario())
