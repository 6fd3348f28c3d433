"""What each channel sends for one (subscription, transition): bodies, keys and delivery ids.

Shapes (spec §3):

v2, the Lytics "new" format (default)::

    {"id": "<entity id>",
     "data": {<user fields: identifiers then profile, or only ``user_fields``>,
              "segment_events": [{"id": "<segment id>", "event": "enter", "slug": "<slug>",
                                  "enter": "<ts>"}]},          # "exit": "<ts>" on an exit
     "meta": {"object": "user", "source": "signalbox", "subscription_id": "<subscription id>"}}

v1, the single-segment "old" format. Its public body could not be retrieved (spec §3.2), so
this is our documented choice: one segment, the event and its time at the top level, the user
fields under ``data``::

    {"id": "<entity id>", "subscription_id": "<id>",
     "segment": {"id": "<segment id>", "slug": "<slug>"},
     "event": "enter", "enter": "<ts>",                         # "exit": "<ts>" on an exit
     "data": {<user fields>}}

Choices where the contract is silent, and why:

- ``segment_events`` is always sent, even when ``user_fields`` does not list it. Lytics drops it
  in that case (spec §3.1, PUSH) and integrators are told to work around that; a trigger payload
  without its trigger helps nobody.
- ``meta.object`` is the table (``user``), ``meta.source`` names the sender.
- Timestamps are RFC 3339 UTC with milliseconds (``format_ms``), which any RFC3339Nano parser
  reads.
- The delivery id is ``msg_`` + a hash of (subscription id, transition id): the same for every
  retry and every re-production of the same transition, so receivers de-duplicate on it (it is
  the Standard Webhooks ``webhook-id``, a Kafka header and part of each Kinesis document's meta).
"""

from __future__ import annotations

import hashlib
from dataclasses import dataclass
from typing import Any

import orjson

from processor.domain.subscriptions import PayloadFormat, Subscription
from processor.domain.transitions import Transition, format_ms

META_OBJECT = "user"
META_SOURCE = "signalbox"
# Kinesis partition keys are at most 256 Unicode characters.
_MAX_PARTITION_KEY = 256
def delivery_id(subscription_id: str, transition_id: str) -> str:
    """Stable id of one transition delivered to one subscription (``msg_`` + 32 hex)."""
    digest = hashlib.blake2b(f"{subscription_id}\x00{transition_id}".encode(), digest_size=16)
    return "msg_" + digest.hexdigest()


@dataclass(frozen=True, slots=True)
class Delivery:
    """One transition to deliver to one subscription: the record every sink ``add``s."""

    subscription: Subscription
    transition: Transition

    @property
    def id(self) -> str:
        return delivery_id(self.subscription.id, self.transition.transition_id)

    @property
    def ordering_key(self) -> tuple[str, str]:
        """Records with the same key are delivered strictly in the order they were added."""
        return (self.subscription.id, str(self.transition.entity))


def user_fields(subscription: Subscription, transition: Transition) -> dict[str, Any]:
    """The user's fields as sent: identifiers, then profile (which wins), filtered.

    Identifiers are included so a receiver always learns who the user is (``user_id``,
    ``email``...) even when the profile does not repeat them. With ``user_fields`` set, only
    those fields that exist are sent.
    """
    fields: dict[str, Any] = {**transition.identifiers, **transition.profile}
    if subscription.user_fields:
        return {name: fields[name] for name in subscription.user_fields if name in fields}
    return fields


def segment_event(transition: Transition) -> dict[str, str]:
    """One ``segment_events`` entry: id, event, slug and the time under the event's name."""
    return {
        "id": transition.segment_id,
        "event": transition.event,
        "slug": transition.segment_slug,
        transition.event: format_ms(transition.at_ms),
    }


def lytics_payload(subscription: Subscription, transition: Transition, *,
                   version: PayloadFormat) -> dict[str, Any]:
    """The webhook/Kinesis document for ``transition`` in the ``version`` format (see module doc)."""
    data = user_fields(subscription, transition)
    if version == "v2":
        data["segment_events"] = [segment_event(transition)]
        return {
            "id": transition.entity.id,
            "data": data,
            "meta": {"object": META_OBJECT, "source": META_SOURCE,
                     "subscription_id": subscription.id},
        }
    return {
        "id": transition.entity.id,
        "subscription_id": subscription.id,
        "segment": {"id": transition.segment_id, "slug": transition.segment_slug},
        "event": transition.event,
        transition.event: format_ms(transition.at_ms),
        "data": data,
    }


def payload_bytes(delivery: Delivery) -> bytes:
    """The JSON body of ``delivery`` in its subscription's ``payload_format``."""
    sub = delivery.subscription
    return orjson.dumps(lytics_payload(sub, delivery.transition, version=sub.payload_format))


@dataclass(frozen=True, slots=True)
class KinesisRecord:
    data: bytes
    partition_key: str


def partition_key(subscription: Subscription, transition: Transition) -> str:
    """``identifier_field``'s value (identifiers first, then a scalar profile field), else the
    entity id. Keys longer than Kinesis allows are replaced by a stable hash of themselves."""
    key: str | None = None
    name = subscription.identifier_field
    if name:
        if transition.identifiers.get(name):
            key = transition.identifiers[name]
        else:
            value = transition.profile.get(name)
            if isinstance(value, str | int | float) and not isinstance(value, bool) and value != "":
                key = str(value)
    if key is None:
        key = transition.entity.id or str(transition.entity)
    if len(key) > _MAX_PARTITION_KEY:
        key = hashlib.blake2b(key.encode(), digest_size=32).hexdigest()
    return key


def kinesis_record(subscription: Subscription, transition: Transition) -> KinesisRecord:
    """The Kinesis record: the same document the webhook gets, keyed by ``partition_key``."""
    body = lytics_payload(subscription, transition, version=subscription.payload_format)
    return KinesisRecord(data=orjson.dumps(body), partition_key=partition_key(subscription, transition))


@dataclass(frozen=True, slots=True)
class KafkaRecord:
    topic: str
    key: bytes
    value: bytes
    headers: tuple[tuple[str, bytes], ...]


def kafka_record(subscription: Subscription, transition: Transition) -> KafkaRecord:
    """The Kafka-channel record: the transition JSON plus ``subscription_id`` and
    ``delivery_id``, keyed by the entity (``key:id``) so one entity stays on one partition."""
    if subscription.topic is None:
        raise ValueError(f"subscription {subscription.id} has no kafka topic")
    value = orjson.loads(transition.to_json())
    value["subscription_id"] = subscription.id
    value["delivery_id"] = delivery_id(subscription.id, transition.transition_id)
    return KafkaRecord(
        topic=subscription.topic,
        key=str(transition.entity).encode(),
        value=orjson.dumps(value),
        headers=(("delivery-id", value["delivery_id"].encode()),
                 ("event", transition.event.encode())),
    )
