"""A record of the events topic as the decoders see it, and the choice of decoder.

The worker and the testing endpoint's preview decode the same way: the ``stream`` header
says what a record is (our collector sets ``snowplow``; Lytics ``/collect/json/{stream}`` sets
the stream's name and maybe ``timestamp_field``).
"""

from __future__ import annotations

from typing import NamedTuple

from processor.domain.events import (
    Event,
    decode,
    decode_generic_json,
    decode_snowplow_json,
    decode_snowplow_tsv,
)

SNOWPLOW_STREAM = "snowplow"  # the value of the ``stream`` header our collector sets


class RawRecord(NamedTuple):
    """What a preview needs of one stream record: its bytes and how the worker would decode it.

    A named tuple rather than a frozen dataclass: the worker builds one per record, and a tuple
    is built in a third of the time."""

    value: bytes
    timestamp_ms: int  # the record's produce time (<= 0: unknown)
    stream: str | None = None  # the ``stream`` header
    timestamp_field: str | None = None  # the ``timestamp_field`` header


def decode_record(record: RawRecord, *, now_ms: int, max_bytes: int = 1_000_000) -> Event:
    """The worker's decoder choice: ``snowplow`` stream -> enriched JSON or TSV, another
    stream -> generic JSON (with its ``timestamp_field``), no stream -> auto-detect. A generic
    event without a time of its own gets the record's produce time. Raises
    ``EventDecodeError``."""
    raw = record.value
    if record.stream == SNOWPLOW_STREAM:
        if raw.lstrip().startswith(b"{"):
            return decode_snowplow_json(raw, now_ms=now_ms, max_bytes=max_bytes)
        return decode_snowplow_tsv(raw, now_ms=now_ms, max_bytes=max_bytes)
    stamp = record.timestamp_ms if record.timestamp_ms > 0 else now_ms
    if record.stream is None:
        return decode(raw, now_ms=stamp, max_bytes=max_bytes)
    return decode_generic_json(raw, stream=record.stream, now_ms=stamp, max_bytes=max_bytes,
                               timestamp_field=record.timestamp_field or "ts")
