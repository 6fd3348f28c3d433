"""Segment membership transitions: the record every sink delivers.

A transition is produced when an entity's membership of a segment really changes (enter or
exit). Its id is derived from what caused it, so a worker that crashes after producing it and
re-applies the same event (or the same due time) produces the very same id: downstream
receivers de-duplicate on it.
"""

from __future__ import annotations

import hashlib
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any, Literal, NamedTuple

import orjson

TransitionKind = Literal["enter", "exit"]


class EntityRef(NamedTuple):
    """An entity is one value of one attribute key, e.g. ``domain_userid=abc``.

    A named tuple rather than a frozen dataclass: refs key every per-entity dict of the worker
    (several lookups per event), and a tuple hashes and compares in C (~3x faster)."""

    key: str
    id: str

    def __str__(self) -> str:
        return f"{self.key}:{self.id}"


@dataclass(slots=True)  # not frozen: one is built per transition, twice (worker, delivery)
class Transition:
    transition_id: str
    entity: EntityRef
    segment_id: str
    segment_slug: str
    event: TransitionKind
    at_ms: int
    identifiers: dict[str, str] = field(default_factory=dict)
    profile: dict[str, Any] = field(default_factory=dict)

    def to_json(self) -> bytes:
        return orjson.dumps(
            {
                "transition_id": self.transition_id,
                "entity": {"key": self.entity.key, "id": self.entity.id},
                "identifiers": self.identifiers,
                "segment": {"id": self.segment_id, "slug": self.segment_slug},
                "event": self.event,
                "at": format_ms(self.at_ms),
                "at_ms": self.at_ms,
                "profile": self.profile,
            }
        )

    @classmethod
    def from_json(cls, raw: bytes) -> Transition:
        """Parse a record of the ``transitions`` topic; raises ``ValueError`` on a bad record."""
        try:
            doc = orjson.loads(raw)
            return cls(
                transition_id=str(doc["transition_id"]),
                entity=EntityRef(str(doc["entity"]["key"]), str(doc["entity"]["id"])),
                segment_id=str(doc["segment"]["id"]),
                segment_slug=str(doc["segment"]["slug"]),
                event=_kind(doc["event"]),
                at_ms=int(doc["at_ms"]),
                identifiers=dict(doc.get("identifiers") or {}),
                profile=dict(doc.get("profile") or {}),
            )
        except (orjson.JSONDecodeError, KeyError, TypeError) as exc:
            raise ValueError(f"not a transition record: {exc}") from exc


def _kind(value: object) -> TransitionKind:
    if value == "enter":
        return "enter"
    if value == "exit":
        return "exit"
    raise ValueError(f"transition event must be 'enter' or 'exit', got {value!r}")


def transition_id(entity: EntityRef, segment_id: str, kind: TransitionKind, cause: str) -> str:
    """Deterministic id from the entity, the segment, the kind and the cause.

    ``cause`` names what made membership change: ``"<topic>/<partition>/<offset>"`` for an
    event, ``"due/<epoch ms>"`` for a time boundary. Replaying the same cause gives the same id.
    """
    digest = hashlib.blake2b(
        f"{entity}\x00{segment_id}\x00{kind}\x00{cause}".encode(), digest_size=16
    ).hexdigest()
    return digest


_SECONDS_CACHED = 4096
_second_prefixes: dict[int, str] = {}  # epoch second -> "YYYY-MM-DDTHH:MM:SS."
_MILLIS = tuple(f"{ms:03d}Z" for ms in range(1000))


def format_ms(epoch_ms: int) -> str:
    """ISO-8601 UTC with milliseconds and a ``Z``, as Lytics payloads show times. Every
    transition record and webhook body carries one, and ``strftime`` costs several µs: the
    date-time part of each second is formatted once."""
    seconds, millis = divmod(epoch_ms, 1000)
    prefix = _second_prefixes.get(seconds)
    if prefix is None:
        if len(_second_prefixes) >= _SECONDS_CACHED:
            _second_prefixes.clear()
        moment = datetime.fromtimestamp(seconds, tz=UTC)
        prefix = _second_prefixes[seconds] = moment.strftime("%Y-%m-%dT%H:%M:%S.")
    return prefix + _MILLIS[millis]
