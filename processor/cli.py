"""The ``processor`` command: run workers and the API, publish topologies, manage tokens."""

from __future__ import annotations

import asyncio
import logging
import sys
from collections.abc import Awaitable, Callable
from pathlib import Path
from typing import TypeVar

import typer
from redis.asyncio import Redis

from processor import cli_delivery
from processor.errors import SignalboxError
from processor.settings import Settings, get_settings

app = typer.Typer(no_args_is_help=True, add_completion=False, help=__doc__)
token_app = typer.Typer(no_args_is_help=True, help="Create, list and revoke API tokens.")
app.add_typer(token_app, name="token")
apikey_app = typer.Typer(no_args_is_help=True, help="API keys that service clients exchange for JWTs.")
app.add_typer(apikey_app, name="apikey")
app.add_typer(cli_delivery.app, name="dlq")
T = TypeVar("T")


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
    logging.getLogger("httpx").setLevel(logging.WARNING)  # one INFO line per webhook POST
    return settings


def _redis(settings: Settings) -> Redis:
    return Redis.from_url(settings.redis_url, health_check_interval=10)


@app.command()
def worker() -> None:
    """Consume events, update entity state, emit transitions (a faust worker)."""
    from processor.streams import runtime
    from processor.streams.worker import EventWorker

    settings = _settings()

    async def main(stop: asyncio.Event) -> None:
        redis = _redis(settings)
        try:
            await EventWorker(settings, redis).run(stop)
        finally:
            await redis.aclose()

    runtime.run(settings, settings.worker_group, main)


@app.command()
def delivery() -> None:
    """Consume transitions and deliver them to every matching subscription (a faust worker)."""
    from processor.sinks.lane import LanePolicy
    from processor.streams import runtime
    from processor.streams.delivery import DeliveryWorker

    settings = _settings()

    async def main(stop: asyncio.Event) -> None:
        redis = _redis(settings)
        try:
            policy = LanePolicy(max_attempts=settings.delivery_max_attempts,
                                retry_budget_s=settings.delivery_retry_budget_s)
            await DeliveryWorker(settings, redis, metrics_port=settings.delivery_metrics_port,
                                 metrics_addr=settings.delivery_metrics_addr,
                                 policy=policy).run(stop)
        finally:
            await redis.aclose()

    runtime.run(settings, settings.delivery_group, main)


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
        # No access log: a line per request costs a real share of a ~1 ms read, and uvicorn's
        # line carries the query string, where Lytics clients may put ?access_token=.
        access_log=False,
        # uvloop and httptools (uvicorn[standard]) when installed, else asyncio and h11.
        loop="auto",
        http="auto",
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


def _with_redis(settings: Settings, work: Callable[[Redis], Awaitable[T]]) -> T:
    async def main() -> T:
        redis = _redis(settings)
        try:
            return await work(redis)
        finally:
            await redis.aclose()

    return asyncio.run(main())


@token_app.command("create")
def token_create(name: str) -> None:
    """Create an API token and print it once (it is stored hashed)."""
    from processor.state.tokens import TokenStore

    _, token = _with_redis(_settings(), lambda r: TokenStore(r).create(name))
    typer.echo(token)


@token_app.command("list")
def token_list() -> None:
    from processor.state.tokens import TokenStore

    for info in _with_redis(_settings(), lambda r: TokenStore(r).list()):
        typer.echo(f"{info.id}\t{info.name}\t{info.created_ms}")


@token_app.command("revoke")
def token_revoke(token_id: str) -> None:
    from processor.state.tokens import TokenStore

    if not _with_redis(_settings(), lambda r: TokenStore(r).revoke(token_id)):
        typer.echo(f"no token with id {token_id}", err=True)
        raise typer.Exit(1)
    typer.echo(f"revoked {token_id}")


@apikey_app.command("create")
def apikey_create(name: str) -> None:
    """Create an API key for service clients; prints its id and the key once."""
    from processor.state.apikeys import ApiKeyStore

    info, key = _with_redis(_settings(), lambda r: ApiKeyStore(r).create(name))
    typer.echo(f"api_key_id={info.id}\napi_key={key}")


@apikey_app.command("list")
def apikey_list() -> None:
    from processor.state.apikeys import ApiKeyStore

    for info in _with_redis(_settings(), lambda r: ApiKeyStore(r).list()):
        typer.echo(f"{info.id}\t{info.name}\t{info.created_ms}")


@apikey_app.command("revoke")
def apikey_revoke(key_id: str) -> None:
    from processor.state.apikeys import ApiKeyStore

    if not _with_redis(_settings(), lambda r: ApiKeyStore(r).revoke(key_id)):
        typer.echo(f"no API key with id {key_id}", err=True)
        raise typer.Exit(1)
    typer.echo(f"revoked {key_id}")


def main() -> None:
    app()
