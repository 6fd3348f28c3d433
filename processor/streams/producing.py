"""Producing events to the events topic (CLI, collector, demo, tests)."""

from __future__ import annotations

import orjson

from processor.settings import Settings
from processor.streams import kafka


def event_key(raw: bytes) -> bytes | None:
    """Partition generic events by their first identity field, so one entity's events stay
    in order on one partition. Undecodable input is still produced (the worker dead-letters it)."""
    try:
        doc = orjson.loads(raw)
    except orjson.JSONDecodeError:
        return None
    if not isinstance(doc, dict):
        return None
    for name in ("user_id", "domain_userid", "email", "network_userid", "domain_sessionid"):
        value = doc.get(name)
        if value:
            return f"{name}:{value}".encode()
    return None


async def produce_lines(settings: Settings, lines: list[bytes], *, stream: str) -> int:
    producer = kafka.producer(settings)
    await producer.start()
    try:
        futures = [
            await producer.send(
                settings.events_topic, line, key=event_key(line), headers=[("stream", stream.encode())]
            )
            for line in lines
        ]
        for future in futures:
            await future
    finally:
        await producer.stop()
    return len(lines)
