"""Which worker owns an entity, and what a record asks this worker to do.

An entity ``key:id`` is owned by partition ``murmur2("key:id") % P`` of the co-partitioned
topics ``events`` and ``events.by-key`` (the default Kafka partitioner, so producers that key
events by entity put them straight on the owner's partition). The worker holding partition p of
both topics is the single writer of those entities. An event read from ``events`` is applied
here for the entities this partition owns and forwarded on ``events.by-key`` for the others,
carrying its source coordinates: watermarks and transition ids use the *source* offset, so a
record forwarded twice (router crash before commit) is still applied once.
"""

from __future__ import annotations

from typing import NamedTuple

from aiokafka.partitioner import murmur2
from aiokafka.structs import ConsumerRecord

from processor.domain.events import Event
from processor.domain.transitions import EntityRef

SOURCE_HEADER = "src"
STREAM_HEADER = "stream"
TIMESTAMP_FIELD_HEADER = "timestamp_field"


class Source(NamedTuple):
    """Where an event first entered Signalbox (topic, partition, offset of ``events``)."""

    topic: str
    partition: int
    offset: int

    def __str__(self) -> str:
        return f"{self.topic}/{self.partition}/{self.offset}"

    @classmethod
    def parse(cls, text: str) -> Source:
        topic, partition, offset = text.rsplit("/", 2)
        return cls(topic, int(partition), int(offset))


class WorkItem(NamedTuple):
    """Apply ``event`` to ``refs`` here; ``source`` gives the watermark and ``cause`` (its text
    form) the transition ids; ``event_refs``, when known, are every entity the event carries
    (``engine.entities_of``: its identifiers). Tuples: one is made per event."""

    record: ConsumerRecord[bytes, bytes]
    event: Event
    refs: list[EntityRef]
    source: Source
    cause: str
    event_refs: list[EntityRef] | None = None


class Forward(NamedTuple):
    """Send ``record``'s event to the owner of ``ref``."""

    record: ConsumerRecord[bytes, bytes]
    ref: EntityRef
    partition: int
    source: Source


class Ownership:
    """Owner partitions of entities, memoised: murmur2 in Python costs ~17 µs a call."""

    def __init__(self, partitions: int) -> None:
        self.partitions = partitions
        self._owner: dict[EntityRef, int] = {}

    def owner(self, ref: EntityRef) -> int:
        owner = self._owner.get(ref)
        if owner is None:
            if len(self._owner) > 1_000_000:
                self._owner.clear()
            owner = (murmur2(str(ref).encode()) & 0x7FFFFFFF) % self.partitions
            self._owner[ref] = owner
        return owner


def header(record: ConsumerRecord[bytes, bytes], name: str) -> str | None:
    for key, value in record.headers or ():
        if key == name:
            return value.decode(errors="replace")
    return None


def decoding_headers(record: ConsumerRecord[bytes, bytes]) -> tuple[str | None, str | None]:
    """The ``stream`` and ``timestamp_field`` headers of ``record``, in one pass."""
    stream = field = None
    for key, value in record.headers or ():
        if key == STREAM_HEADER:
            stream = value.decode(errors="replace")
        elif key == TIMESTAMP_FIELD_HEADER:
            field = value.decode(errors="replace")
    return stream, field


def parse_ref(raw: bytes | None) -> EntityRef | None:
    if not raw:
        return None
    key, sep, entity_id = raw.decode(errors="replace").partition(":")
    return EntityRef(key, entity_id) if sep else None
