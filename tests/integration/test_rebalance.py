"""Scale-out: two worker processes in one consumer group on a 4-partition events topic.

While events flow, a second worker joins (partitions move to it) and later the first one is
stopped with SIGTERM (its partitions move back): every counter must still be exact, i.e. no
event lost and none applied twice across both rebalances.
"""

from __future__ import annotations

import asyncio
import re
import signal
import time
from pathlib import Path

import orjson
import pytest

from processor.settings import Settings
from processor.streams.kafka import ensure_topics
from tests.conftest import settings_env
from tests.integration.test_worker import publish_demo
from tests.integration.test_worker_crash import counters
from tests.support.kafka_io import produce
from tests.support.running import spawn, wait_loaded

pytestmark = pytest.mark.integration

USERS = 200  # the helpers imported from test_worker_crash read users "crash-0" .. "crash-199"
EVENTS = 20_000


def workload() -> tuple[list[bytes], list[bytes]]:
    values, keys = [], []
    for i in range(EVENTS):
        user = f"crash-{i % USERS}"
        values.append(orjson.dumps({"user_id": user, "cart_items": i % 3}))
        keys.append(user.encode())  # by raw id: some events are forwarded to their owner
    return values, keys


async def produce_slowly(
    settings: Settings, values: list[bytes], keys: list[bytes], joined: asyncio.Event
) -> None:
    """~15 s of traffic; the last third waits until the second worker has joined, so the
    leave that follows is mid-stream however long a worker process takes to start."""
    chunk = 250
    for start in range(0, len(values), chunk):
        if start >= 2 * len(values) // 3:
            await joined.wait()
        await produce(settings, values[start:start + chunk], keys=keys[start:start + chunk])
        await asyncio.sleep(0.15)


async def wait_applied(settings: Settings, total: int, timeout: float = 120.0) -> int:
    deadline = time.monotonic() + timeout
    applied = 0
    while time.monotonic() < deadline:
        applied = sum((await counters(settings)).values())
        if applied >= total:
            break
        await asyncio.sleep(0.5)
    return applied


def test_join_and_leave_mid_stream_keep_counters_exact(settings: Settings, tmp_path: Path) -> None:
    settings = settings.model_copy(update={"partitions": 4})
    env = settings_env(settings)
    values, keys = workload()
    first_log, second_log = tmp_path / "worker-1.log", tmp_path / "worker-2.log"

    async def scenario() -> None:
        await ensure_topics(settings)
        await publish_demo(settings)
        first = spawn("worker", env, first_log)
        second = None
        try:
            await wait_loaded(settings, timeout=60, pid=first.pid)
            joined = asyncio.Event()
            producing = asyncio.create_task(produce_slowly(settings, values, keys, joined))
            await asyncio.sleep(1.0)
            at_join = sum((await counters(settings)).values())
            second = spawn("worker", env, second_log)
            await wait_loaded(settings, timeout=60, pid=second.pid)
            await asyncio.sleep(1.5)  # let the group settle with both members working
            joined.set()
            await asyncio.sleep(0.5)
            at_leave = sum((await counters(settings)).values())
            first.send_signal(signal.SIGTERM)
            assert first.wait(timeout=60) is not None
            await producing
            applied = await wait_applied(settings, EVENTS)
        finally:
            for proc in (first, second):
                if proc is not None and proc.poll() is None:
                    proc.terminate()
                    proc.wait(timeout=30)
        logs = f"--- worker 1\n{first_log.read_text()[-2000:]}\n--- worker 2\n" \
               f"{second_log.read_text()[-2000:]}"
        print(f"applied at join: {at_join}, at leave: {at_leave}, at end: {applied}")
        assert 0 < at_join < at_leave < EVENTS, (at_join, at_leave)  # both moves were mid-stream
        assert re.search(r"assigned \[.+\]", second_log.read_text()), logs  # it got partitions
        assert await counters(settings) == {f"crash-{u}": EVENTS // USERS for u in range(USERS)}, logs

    asyncio.run(scenario())
