"""Running Signalbox workers in tests: in-process tasks and real subprocesses."""

from __future__ import annotations

import asyncio
import contextlib
import subprocess
import sys
import threading
import time
from collections.abc import AsyncIterator, Awaitable, Callable, Iterator
from pathlib import Path
from typing import Any

import uvicorn
from redis.asyncio import Redis

from processor.api.app import create_app
from processor.settings import Settings
from processor.state.registry import Registry
from processor.state.tokens import TokenStore
from processor.streams.worker import EventWorker

ROOT = Path(__file__).resolve().parents[2]


@contextlib.asynccontextmanager
async def running(make: Callable[[asyncio.Event], Awaitable[Any]]) -> AsyncIterator[None]:
    """Run ``make(stop)`` as a task for the duration of the block; re-raise its failure."""
    stop = asyncio.Event()
    task = asyncio.create_task(make(stop))
    try:
        yield
    finally:
        stop.set()
        await asyncio.wait_for(task, timeout=30)


async def wait_loaded(settings: Settings, version: int | None = None, *, workers: int = 1,
                      timeout: float = 30.0, pid: int | None = None) -> None:
    """Probe until ``workers`` live workers (or the one with ``pid``) have loaded the current
    registry version."""
    redis = Redis.from_url(settings.redis_url)
    try:
        registry = Registry(redis)
        target = version if version is not None else await registry.version()
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            live = await registry.live_worker_versions(int(time.time() * 1000))
            if pid is not None:
                live = {k: v for k, v in live.items() if k.endswith(f"-{pid}")}
            if len([v for v in live.values() if v >= target]) >= workers:
                return
            await asyncio.sleep(0.05)
        raise AssertionError(f"workers did not load registry version {target}: {live}")
    finally:
        await redis.aclose()


def spawn(command: str, env: dict[str, str], log: Path) -> subprocess.Popen[bytes]:
    """Start ``python -m processor <command>`` as a real process, output to ``log``."""
    handle = log.open("ab")
    return subprocess.Popen([sys.executable, "-m", "processor", command], env=env, cwd=ROOT,
                            stdout=handle, stderr=subprocess.STDOUT)


async def run_worker(settings: Settings, stop: asyncio.Event) -> None:
    """An in-process EventWorker until ``stop`` (use with ``running``)."""
    redis = Redis.from_url(settings.redis_url)
    try:
        await EventWorker(settings, redis).run(stop)
    finally:
        await redis.aclose()


async def create_token(settings: Settings, name: str = "test") -> str:
    """A fresh API token in the test's Redis database."""
    redis = Redis.from_url(settings.redis_url)
    try:
        return (await TokenStore(redis).create(name))[1]
    finally:
        await redis.aclose()


@contextlib.contextmanager
def served(settings: Settings) -> Iterator[str]:
    """The whole API on a real loopback port (uvicorn in a thread), for clients that need a URL."""
    server = uvicorn.Server(uvicorn.Config(create_app(settings), host="127.0.0.1", port=0,
                                           log_level="warning", lifespan="on"))
    thread = threading.Thread(target=server.run, name="api", daemon=True)
    thread.start()
    deadline = time.monotonic() + 15
    while not server.started:
        assert time.monotonic() < deadline and thread.is_alive(), "the API did not start"
        time.sleep(0.02)
    try:
        yield f"http://127.0.0.1:{server.servers[0].sockets[0].getsockname()[1]}"
    finally:
        server.should_exit = True
        thread.join(15)
