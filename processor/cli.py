"""The ``processor`` command: run workers and the API, publish topologies, manage tokens."""

from __future__ import annotations

import asyncio
import logging
import signal
import sys
from collections.abc import Awaitable, Callable
from pathlib import Path
from typing import Any

import typer
from redis.asyncio import Redis

from processor.errors import SignalboxError
from processor.settings import Settings, get_settings

app = typer.Typer(no_args_is_help=True, add_completion=False, help=__doc__)
token_app = typer.Typer(no_args_is_help=True, help="Create, list and revoke API tokens.")
app.add_typer(token_app, name="token")


def _settings() -> Settings:
    try:
        settings = get_settings()
    except SignalboxError as exc:
        typer.echo(str(exc), err=True)
        raise typer.Exit(2) from None
    logging.basicConfig(
        level=settings.log_level,
        format="%(asctime)s %(levelname)s %(name)s %(message)s",
        stream=sys.stderr,
    )
    logging.getLogger("aiokafka").setLevel(logging.WARNING)
    return settings


def _redis(settings: Settings) -> Redis:
    return Redis.from_url(settings.redis_url, health_check_interval=10)


def _run_until_signal(main: Callable[[asyncio.Event], Awaitable[Any]]) -> None:
    async def runner() -> None:
        stop = asyncio.Event()
        loop = asyncio.get_running_loop()
        for sig in (signal.SIGINT, signal.SIGTERM):
            loop.add_signal_handler(sig, stop.set)
        await main(stop)

    asyncio.run(runner())


@app.command()
def worker() -> None:
    """Consume events, update entity state, emit transitions."""
    from processor.streams.worker import EventWorker

    settings = _settings()

    async def main(stop: asyncio.Event) -> None:
        redis = _redis(settings)
        try:
            await EventWorker(settings, redis).run(stop)
        finally:
            await redis.aclose()

    _run_until_signal(main)


@app.command()
def delivery() -> None:
    """Consume transitions and deliver them to every matching subscription."""
    from processor.streams.delivery import DeliveryWorker

    settings = _settings()

    async def main(stop: asyncio.Event) -> None:
        redis = _redis(settings)
        try:
            await DeliveryWorker(settings, redis).run(stop)
        finally:
            await redis.aclose()

    _run_until_signal(main)


@app.command()
def api() -> None:
    """Serve the HTTP API."""
    import uvicorn

    settings = _settings()
    uvicorn.run(
        "processor.api.app:create_app",
        factory=True,
        host=settings.api_host,
        port=settings.api_port,
        log_level=settings.log_level.lower(),
    )


@app.command()
def topics() -> None:
    """Create the project's Kafka topics (explicit partition counts) if missing."""
    from processor.streams.kafka import ensure_topics

    settings = _settings()
    asyncio.run(ensure_topics(settings))
    typer.echo("topics ready")


@app.command()
def publish(files: list[Path]) -> None:
    """Publish topology YAML files (attribute keys, groups, segments, subscriptions)."""
    from processor.publishing import publish_file
    from processor.state.registry import Registry

    settings = _settings()

    async def main() -> None:
        redis = _redis(settings)
        try:
            for path in files:
                counts = await publish_file(Registry(redis), path)
                typer.echo(f"published {path}: " + ", ".join(f"{v} {k}" for k, v in counts.items()))
        finally:
            await redis.aclose()

    try:
        asyncio.run(main())
    except SignalboxError as exc:
        typer.echo(f"error: {exc}", err=True)
        raise typer.Exit(1) from None


@app.command()
def produce(file: Path, stream: str = "default") -> None:
    """Produce JSON events (one per line; '-' for stdin) to the events topic."""
    from processor.streams.producing import produce_lines

    settings = _settings()
    lines = sys.stdin.buffer.read().splitlines() if str(file) == "-" else file.read_bytes().splitlines()
    count = asyncio.run(produce_lines(settings, [ln for ln in lines if ln.strip()], stream=stream))
    typer.echo(f"produced {count} events")


@token_app.command("create")
def token_create(name: str) -> None:
    """Create a token and print it once."""
    from processor.state.tokens import TokenStore

    settings = _settings()

    async def main() -> str:
        redis = _redis(settings)
        try:
            _, token = await TokenStore(redis).create(name)
            return token
        finally:
            await redis.aclose()

    typer.echo(asyncio.run(main()))


@token_app.command("list")
def token_list() -> None:
    from processor.state.tokens import TokenStore

    settings = _settings()

    async def main() -> None:
        redis = _redis(settings)
        try:
            for info in await TokenStore(redis).list():
                typer.echo(f"{info.id}\t{info.name}\t{info.created_ms}")
        finally:
            await redis.aclose()

    asyncio.run(main())


@token_app.command("revoke")
def token_revoke(token_id: str) -> None:
    from processor.state.tokens import TokenStore

    settings = _settings()

    async def main() -> bool:
        redis = _redis(settings)
        try:
            return await TokenStore(redis).revoke(token_id)
        finally:
            await redis.aclose()

    if not asyncio.run(main()):
        typer.echo(f"no token with id {token_id}", err=True)
        raise typer.Exit(1)
    typer.echo(f"revoked {token_id}")


def main() -> None:
    app()
