"""Payload shapes against the spec's §3 examples, partition keys, Kafka records, delivery ids."""

from __future__ import annotations

from typing import Any

import orjson

from processor.domain.payloads import (
    Delivery,
    delivery_id,
    kafka_record,
    kinesis_record,
    lytics_payload,
    partition_key,
    payload_bytes,
)
from processor.domain.subscriptions import Subscription
from processor.domain.transitions import EntityRef, Transition

SEGMENT = "42976a269a5e6b9d06c681b1c27292df"
AT_MS = 1_602_707_253_916  # 2020-10-14T20:27:33.916Z, the D-trig example's enter time


def sub(**overrides: Any) -> Subscription:
    body: dict[str, Any] = {"id": "sub1", "channel": "webhook", "segment_ids": [SEGMENT],
                            "webhook_url": "https://hooks.example.com/"}
    body.update(overrides)
    return Subscription.model_validate(body)


def transition(event: str = "enter", **overrides: Any) -> Transition:
    fields: dict[str, Any] = dict(
        transition_id="abc123", entity=EntityRef("user_id", "7076027172059065053"),
        segment_id=SEGMENT, segment_slug="emailzz5", event=event, at_ms=AT_MS,
        identifiers={"user_id": "7076027172059065053", "email": "beth@example.com"},
        profile={"first_name": "Beth", "score_quantity": 100, "hourly": {"15": 1},
                 "channels": ["web"], "email": "beth@example.com"},
    )
    fields.update(overrides)
    return Transition(**fields)


def test_v2_enter_matches_the_new_format_example() -> None:
    body = lytics_payload(sub(), transition(), version="v2")
    assert body == {
        "id": "7076027172059065053",
        "data": {
            "user_id": "7076027172059065053", "email": "beth@example.com", "first_name": "Beth",
            "score_quantity": 100, "hourly": {"15": 1}, "channels": ["web"],
            "segment_events": [{"id": SEGMENT, "event": "enter", "slug": "emailzz5",
                                "enter": "2020-10-14T20:27:33.916Z"}],
        },
        "meta": {"object": "user", "source": "signalbox", "subscription_id": "sub1"},
    }


def test_v2_exit_carries_the_exit_time_and_no_enter_time() -> None:
    events = lytics_payload(sub(), transition("exit"), version="v2")["data"]["segment_events"]
    assert events == [{"id": SEGMENT, "event": "exit", "slug": "emailzz5",
                       "exit": "2020-10-14T20:27:33.916Z"}]


def test_user_fields_restrict_data_but_segment_events_always_travel() -> None:
    body = lytics_payload(sub(user_fields=["email", "first_name", "missing"]), transition(),
                          version="v2")
    assert set(body["data"]) == {"email", "first_name", "segment_events"}


def test_profile_wins_over_identifiers_and_segment_events_is_ours() -> None:
    t = transition(identifiers={"user_id": "u1"},
                   profile={"user_id": "u1-merged", "segment_events": "spoofed"})
    data = lytics_payload(sub(), t, version="v2")["data"]
    assert data["user_id"] == "u1-merged"
    assert data["segment_events"][0]["id"] == SEGMENT


def test_v1_single_segment_shape() -> None:
    body = lytics_payload(sub(user_fields=["email"]), transition("exit"), version="v1")
    assert body == {
        "id": "7076027172059065053", "subscription_id": "sub1",
        "segment": {"id": SEGMENT, "slug": "emailzz5"},
        "event": "exit", "exit": "2020-10-14T20:27:33.916Z",
        "data": {"email": "beth@example.com"},
    }


def test_payload_bytes_follow_the_subscription_format() -> None:
    t = transition()
    assert orjson.loads(payload_bytes(Delivery(sub(), t))) == lytics_payload(sub(), t, version="v2")
    v1 = sub(payload_format="v1")
    assert orjson.loads(payload_bytes(Delivery(v1, t))) == lytics_payload(v1, t, version="v1")


def test_delivery_id_is_stable_per_subscription_and_transition() -> None:
    first = delivery_id("sub1", "abc123")
    assert first == delivery_id("sub1", "abc123")
    assert first.startswith("msg_") and len(first) == 36
    assert first != delivery_id("sub2", "abc123")
    assert first != delivery_id("sub1", "abc124")
    assert Delivery(sub(), transition()).id == first
    assert Delivery(sub(), transition()).ordering_key == ("sub1", "user_id:7076027172059065053")


def kinesis_sub(**overrides: Any) -> Subscription:
    return Subscription.model_validate({"id": "k1", "channel": "kinesis", "segment_ids": [SEGMENT],
                                        "region": "us-east-1", "stream": "s", **overrides})


def test_kinesis_record_is_the_webhook_document_keyed_by_identifier_field() -> None:
    subscription = kinesis_sub(identifier_field="email")
    record = kinesis_record(subscription, transition())
    assert record.partition_key == "beth@example.com"
    assert orjson.loads(record.data) == lytics_payload(subscription, transition(), version="v2")
    assert orjson.loads(record.data)["meta"]["subscription_id"] == "k1"


def test_partition_key_fallbacks() -> None:
    t = transition(identifiers={}, profile={"account": 42, "flag": True})
    assert partition_key(kinesis_sub(identifier_field="account"), t) == "42"
    assert partition_key(kinesis_sub(identifier_field="flag"), t) == "7076027172059065053"
    assert partition_key(kinesis_sub(identifier_field="absent"), t) == "7076027172059065053"
    assert partition_key(kinesis_sub(), t) == "7076027172059065053"
    long = transition(identifiers={"email": "x" * 300})
    key = partition_key(kinesis_sub(identifier_field="email"), long)
    assert len(key) == 64 and key == partition_key(kinesis_sub(identifier_field="email"), long)


def test_kafka_record_is_the_transition_plus_subscription() -> None:
    kafka_sub = Subscription.model_validate({"id": "q1", "channel": "kafka",
                                             "segment_ids": [SEGMENT], "topic": "interventions"})
    t = transition()
    record = kafka_record(kafka_sub, t)
    assert record.topic == "interventions"
    assert record.key == b"user_id:7076027172059065053"
    value = orjson.loads(record.value)
    assert value == orjson.loads(t.to_json()) | {"subscription_id": "q1",
                                                 "delivery_id": delivery_id("q1", "abc123")}
    assert Transition.from_json(record.value) == t  # still readable as a transition
    assert dict(record.headers)["delivery-id"] == delivery_id("q1", "abc123").encode()
