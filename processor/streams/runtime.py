"""The process runtime: a faust worker hosting Signalbox's batch loops.

faust gives the process its lifecycle (start-up banner, signal handling, graceful stop,
logging), but not the hot path: its per-event stream costs ~175 µs/event here, so each loop
(``EventWorker.run``, ``DeliveryWorker.run``) is one faust task that drives its own aiokafka
consumer in ``getmany`` batches. faust's own consumer joins a separate group (``<group>-runtime``)
that only holds its leader-assignor topic; our loops' groups and offsets are untouched by it.

On SIGTERM/SIGINT faust stops the app and cancels the task; the loop's ``finally`` blocks stop
its clients. Nothing is committed for a batch in flight, so it is re-done after restart.
"""

from __future__ import annotations

import asyncio
import logging
import sys
import tempfile
from collections.abc import Awaitable, Callable
from pathlib import Path

import faust

from processor.settings import Settings

log = logging.getLogger(__name__)

Loop = Callable[[asyncio.Event], Awaitable[None]]


def broker_url(bootstrap_servers: str) -> str:
    return ";".join(f"kafka://{server.strip()}" for server in bootstrap_servers.split(","))


def build_app(settings: Settings, group: str, loop: Loop) -> faust.App:
    """A faust app whose only task runs ``loop``; a crash of the loop stops the worker."""
    datadir = Path(tempfile.gettempdir()) / "signalbox-faust" / group
    datadir.mkdir(parents=True, exist_ok=True)  # faust creates only the last level
    app = faust.App(
        f"{group}-runtime",
        broker=broker_url(settings.kafka_bootstrap_servers),
        web_enabled=False,
        store="memory://",
        topic_replication_factor=1,
        topic_partitions=1,
        datadir=str(datadir),
        # A killed worker's runtime membership must expire as fast as its loop's does.
        broker_session_timeout=settings.kafka_session_timeout_ms / 1000,
        broker_heartbeat_interval=max(1.0, settings.kafka_session_timeout_ms / 4000),
    )

    @app.task
    async def run_loop() -> None:
        try:
            await loop(asyncio.Event())
        except asyncio.CancelledError:
            raise
        except Exception as exc:
            log.exception("%s stopped on an error", group)
            await app.crash(exc)  # the worker stops and the process exits non-zero

    return app


def run(settings: Settings, group: str, loop: Loop) -> None:
    """Run ``loop`` inside a faust worker until a signal stops it."""
    app = build_app(settings, group, loop)
    sys.argv = [sys.argv[0], "worker", "--loglevel", settings.log_level.lower(), "--without-web"]
    app.main()
