"""Subscription validation (spec §2.3) and which transitions a subscription receives."""

from __future__ import annotations

import base64
from typing import Any

import pytest
from pydantic import ValidationError
from standardwebhooks import Webhook

from processor.domain.subscriptions import (
    Subscription,
    matches,
    secret_bytes,
    signing_secret_from,
    with_signing_secret,
)
from processor.domain.transitions import EntityRef, Transition

SEGMENT = "4a5c1d2e3f4a5b6c7d8e9f0a1b2c3d4e"


def webhook(**overrides: Any) -> dict[str, Any]:
    body: dict[str, Any] = {"id": "sub1", "channel": "webhook", "segment_ids": [SEGMENT],
                            "webhook_url": "https://hooks.example.com/lytics"}
    body.update(overrides)
    return body


def refused(body: dict[str, Any], message: str) -> None:
    with pytest.raises(ValidationError) as caught:
        Subscription.model_validate(body)
    assert message in str(caught.value), str(caught.value)


def test_lytics_webhook_body_is_accepted_with_defaults() -> None:
    sub = Subscription.model_validate(webhook(
        name="demo", headers={"best_number": "47", "X-Test": "1"}, table="user",
        segmentio_writekey=None, audience_events=""))
    assert sub.channel == "webhook"
    assert sub.segment_ids == (SEGMENT,)
    assert sub.headers == {"best_number": "47", "X-Test": "1"}
    assert sub.audience_events == "both"  # Lytics spells "both" as ""
    assert sub.payload_format == "v2"
    assert sub.withbackfill is False
    assert sub.user_fields == ()
    with pytest.raises(ValidationError):
        sub.name = "changed"  # type: ignore[misc]  # frozen


def test_kinesis_and_kafka_bodies() -> None:
    kin = Subscription.model_validate({
        "id": "k1", "channel": "kinesis", "segment_ids": [SEGMENT], "region": "us-east-1",
        "stream": "lytics-out", "role_arn": "arn:aws:iam::123456789012:role/lytics-writer",
        "identifier_field": "email"})
    assert (kin.region, kin.stream, kin.identifier_field) == ("us-east-1", "lytics-out", "email")
    kafka = Subscription.model_validate({"id": "q1", "channel": "kafka", "segmentql":
                                         "FILTER * ALIAS everyone", "topic": "interventions"})
    assert kafka.topic == "interventions" and kafka.segment_ids == ()


@pytest.mark.parametrize(("overrides", "message"), [
    ({"webhook_url": None}, "channel webhook needs a webhook_url"),
    ({"webhook_url": "ftp://x.example.com/"}, "must be an http or https URL"),
    ({"webhook_url": "https:///nohost"}, "webhook_url needs a host"),
    ({"webhook_url": "http://x.example.com:99999/"}, "invalid port"),
    ({"segment_ids": []}, "needs segment_ids or segmentql"),
    ({"segment_ids": [SEGMENT, "b" * 32], "withbackfill": True}, "withbackfill allows a single segment"),
    ({"segment_ids": [SEGMENT, SEGMENT]}, "lists '4a5c"),
    ({"segment_ids": [" "]}, "may not contain empty ids"),
    ({"channel": "pubsub"}, "channel"),
    ({"headers": {"Content-Type": "text/plain"}}, "cannot be overridden"),
    ({"headers": {"webhook-signature": "v1,x"}}, "cannot be overridden"),
    ({"headers": {"bad header": "1"}}, "not a valid HTTP header name"),
    ({"headers": {"X-A": "1\r\nX-Injected: 1"}}, "control characters"),
    ({"headers": {"X-A": "1\n"}}, "control characters"),
    ({"headers": {"Transfer-Encoding\n": "chunked"}}, "not a valid HTTP header name"),
    ({"headers": {"X-A": "1", "x-a": "2"}}, "given twice"),
    ({"stream": "s"}, "stream is only used by the kinesis channel"),
    ({"topic": "t"}, "topic is only used by the kafka channel"),
    ({"audience_events": "enters"}, "audience_events"),
    ({"payload_format": "v3"}, "payload_format"),
    ({"user_fields": ["email", "email"]}, "lists 'email' twice"),
    ({"signing_secret": "nope"}, "must start with 'whsec_'"),
    ({"signing_secret": "whsec_!!!"}, "not valid base64"),
    ({"signing_secret": "whsec_" + base64.b64encode(b"short").decode()}, "24-64 bytes, got 5"),
    ({"id": ""}, "id"),
])
def test_invalid_webhook_subscriptions_are_refused(overrides: dict[str, Any], message: str) -> None:
    refused(webhook(**overrides), message)


@pytest.mark.parametrize(("body", "message"), [
    ({"region": "us-east-1"}, "channel kinesis needs a stream"),
    ({"stream": "s"}, "channel kinesis needs a region"),
    ({"region": "Mars", "stream": "s"}, "not an AWS region name"),
    ({"region": "eu-west-1", "stream": "bad stream"}, "not a Kinesis stream name"),
    ({"region": "eu-west-1", "stream": "s", "role_arn": "arn:aws:s3:::bucket"}, "IAM role ARN"),
    ({"region": "eu-west-1", "stream": "s", "webhook_url": "https://x.io/"},
     "webhook_url is only used by the webhook channel"),
])
def test_invalid_kinesis_subscriptions_are_refused(body: dict[str, Any], message: str) -> None:
    refused({"id": "k", "channel": "kinesis", "segment_ids": [SEGMENT], **body}, message)


@pytest.mark.parametrize(("topic", "message"), [
    (None, "channel kafka needs a topic"), ("a b", "not a legal Kafka topic"),
    ("..", "not a legal Kafka topic"), ("t" * 250, "not a legal Kafka topic"),
])
def test_invalid_kafka_subscriptions_are_refused(topic: str | None, message: str) -> None:
    refused({"id": "q", "channel": "kafka", "segment_ids": [SEGMENT], "topic": topic}, message)


def test_signing_secret_helpers_produce_a_standard_webhooks_secret() -> None:
    secret = signing_secret_from(bytes(range(32)))
    assert secret.startswith("whsec_")
    assert secret_bytes(secret) == bytes(range(32))
    Webhook(secret)  # the reference library accepts it
    sub = Subscription.model_validate(webhook())
    assert sub.signing_secret is None
    signed = with_signing_secret(sub, bytes(32))
    assert signed.signing_secret == signing_secret_from(bytes(32))
    assert with_signing_secret(signed, b"\x01" * 32) is signed  # an existing secret is kept
    with pytest.raises(ValueError, match="need 24-64 random bytes"):
        signing_secret_from(b"\x00" * 8)


def transition(event: str = "enter", segment_id: str = SEGMENT, slug: str = "demo") -> Transition:
    return Transition(transition_id="t1", entity=EntityRef("user_id", "u1"),
                      segment_id=segment_id, segment_slug=slug, event=event,  # type: ignore[arg-type]
                      at_ms=0)


def test_matches_by_segment_id_or_slug() -> None:
    by_id = Subscription.model_validate(webhook())
    by_slug = Subscription.model_validate(webhook(segment_ids=["demo"]))
    assert matches(by_id, transition())
    assert matches(by_slug, transition())
    assert not matches(by_id, transition(segment_id="other", slug="other"))


@pytest.mark.parametrize(("audience", "enter", "exit"), [
    ("both", True, True), ("enters_only", True, False), ("exits_only", False, True),
])
def test_matches_filters_audience_events(audience: str, enter: bool, exit: bool) -> None:
    sub = Subscription.model_validate(webhook(audience_events=audience))
    assert matches(sub, transition("enter")) is enter
    assert matches(sub, transition("exit")) is exit
