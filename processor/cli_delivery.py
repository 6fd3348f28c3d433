"""``processor dlq ...``: list and redeliver dead-lettered deliveries, run or inspect backfills."""

from __future__ import annotations

import asyncio
from typing import Annotated

import typer
from redis.asyncio import Redis

from processor import delivery_admin
from processor.domain.subscriptions import Subscription
from processor.errors import SignalboxError
from processor.settings import Settings, get_settings
from processor.state.registry import Registry
from processor.streams import kafka

app = typer.Typer(no_args_is_help=True, add_completion=False,
                  help="Dead-lettered deliveries and subscription backfills.")


def _settings() -> Settings:
    try:
        return get_settings()
    except SignalboxError as exc:
        typer.echo(str(exc), err=True)
        raise typer.Exit(2) from None


@app.command("list")
def list_(subscription: str | None = typer.Option(None, help="Only this subscription."),
          since_offset: int = typer.Option(0, help="Start at this offset of the DLQ topic."),
          limit: int = typer.Option(100, help="At most this many.")) -> None:
    """Print dead letters, oldest first: offset, subscription, delivery id, attempts, reason."""
    settings = _settings()
    found = asyncio.run(delivery_admin.list_dead_letters(
        settings, subscription_id=subscription, since_offset=since_offset, limit=limit))
    for dead in found:
        typer.echo(f"{dead.partition}/{dead.offset}\t{dead.subscription_id or '-'}\t"
                   f"{dead.delivery_id or '-'}\t{dead.attempts or 0}\t{dead.reason}")
    typer.echo(f"{len(found)} dead letters", err=True)


@app.command()
def redeliver(subscription: str | None = typer.Option(None, help="Only this subscription."),
              since_offset: int = typer.Option(0, help="Start at this offset of the DLQ topic."),
              delivery_id: Annotated[list[str] | None,
                                     typer.Option(help="Only these delivery ids.")] = None,
              ) -> None:
    """Send dead letters back through their subscription (same delivery ids)."""
    settings = _settings()

    async def main() -> int:
        found = await delivery_admin.list_dead_letters(settings, subscription_id=subscription,
                                                       since_offset=since_offset)
        if delivery_id:
            found = [d for d in found if d.delivery_id in set(delivery_id)]
        return await delivery_admin.redeliver(settings, found)

    typer.echo(f"redelivered {asyncio.run(main())} dead letters")


@app.command()
def backfill(subscription_id: str,
             again: bool = typer.Option(False, help="Forget finished progress and run again."),
             status: bool = typer.Option(False, help="Only print the progress.")) -> None:
    """Run (or resume) a subscription's backfill now; delivery workers skip it once done."""
    settings = _settings()

    async def main() -> dict[str, str]:
        redis = Redis.from_url(settings.redis_url)
        try:
            if status:
                return await delivery_admin.backfill_status(redis, subscription_id)
            doc = await Registry(redis).get("subscriptions", subscription_id)
            if doc is None:
                raise SignalboxError(f"no subscription {subscription_id}")
            if again:
                await delivery_admin.BackfillStore(redis).reset(subscription_id)
            producer = kafka.producer(settings)
            await producer.start()
            try:
                done = await delivery_admin.backfill(redis, producer, settings,
                                                     Subscription.model_validate(doc),
                                                     owner=f"cli-{id(producer)}")
            finally:
                await producer.stop()
            if not done:
                raise SignalboxError("another worker is running this backfill; try --status")
            return await delivery_admin.backfill_status(redis, subscription_id)
        finally:
            await redis.aclose()

    try:
        progress = asyncio.run(main())
    except SignalboxError as exc:
        typer.echo(f"error: {exc}", err=True)
        raise typer.Exit(1) from None
    typer.echo(" ".join(f"{k}={v}" for k, v in sorted(progress.items())) or "no backfill yet")
