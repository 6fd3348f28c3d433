"""Lytics segment subscriptions: who gets told about which enter/exit transitions, and how.

A ``Subscription`` is the validated, frozen form of a ``POST /api/subscription`` body (Lytics
field names, spec §2.3) plus the ``webhook_triggers`` options Lytics keeps in its v2 job config
(``audience_events``, ``user_fields``) and our own ``payload_format`` and ``signing_secret``.
Unknown fields are ignored (clients send ``table``, ``segmentio_writekey``...). Rules enforced,
each with a readable message (pydantic prefixes them with "Value error, "):

- a subscription names its segments: ``segment_ids`` and/or inline ``segmentql``; no duplicates;
- ``withbackfill`` allows a single segment only (Lytics: "only a single segment can be
  specified");
- channel ``webhook`` needs an absolute ``http(s)`` ``webhook_url``; ``headers`` are valid HTTP
  header names/values and may not override what the sink sets itself (``Content-Type``,
  ``Content-Length``, ``Host``, the Standard Webhooks ``webhook-*`` headers);
- channel ``kinesis`` needs ``region`` and ``stream`` (AWS name rules), ``role_arn`` is an IAM
  role ARN; channel ``kafka`` needs a legal ``topic``;
- a field that belongs to another channel is refused rather than silently ignored;
- ``signing_secret`` is ``whsec_`` + base64 of 24-64 bytes (Standard Webhooks).

Whether the webhook URL may be a private or loopback address is a *deployment* decision checked
at delivery (``processor.sinks.urlguard``), not here.

``matches`` consults ``segment_ids`` only: whoever stores a subscription with inline
``segmentql`` resolves its ALIAS to the segment id and puts it in ``segment_ids``.
"""

from __future__ import annotations

import base64
import binascii
import re
from typing import Any, Literal
from urllib.parse import urlsplit

from pydantic import BaseModel, ConfigDict, Field, field_validator, model_validator

from processor.domain.transitions import Transition

Channel = Literal["webhook", "kinesis", "kafka"]
AudienceEvents = Literal["both", "enters_only", "exits_only"]
PayloadFormat = Literal["v2", "v1"]

SECRET_PREFIX = "whsec_"
_SECRET_MIN_BYTES, _SECRET_MAX_BYTES = 24, 64

# A header name is RFC 9110 token characters; a value has no control characters but tab (a CR
# or LF would inject headers). Match with fullmatch: ``$`` would accept a trailing newline.
# The webhook client checks what it sends against the same patterns.
HEADER_NAME = re.compile(r"[!#$%&'*+\-.^_`|~0-9A-Za-z]+")
HEADER_VALUE = re.compile(r"[\t\x20-\x7e\x80-\xff]*")
_RESERVED_HEADERS = frozenset(
    {"content-type", "content-length", "host", "transfer-encoding", "connection",
     "webhook-id", "webhook-timestamp", "webhook-signature"}
)
_KINESIS_STREAM = re.compile(r"^[a-zA-Z0-9_.-]{1,128}$")
_AWS_REGION = re.compile(r"^[a-z]{2}(-[a-z]+)+-\d$")
_ROLE_ARN = re.compile(r"^arn:aws[a-zA-Z-]*:iam::\d{12}:role/[\w+=,.@/-]{1,512}$")
_KAFKA_TOPIC = re.compile(r"^[a-zA-Z0-9._-]{1,249}$")

_CHANNEL_FIELDS: dict[str, tuple[str, ...]] = {
    "webhook": ("webhook_url", "headers"),
    "kinesis": ("region", "stream", "role_arn", "identifier_field"),
    "kafka": ("topic",),
}


class Subscription(BaseModel):
    """One subscription, validated and frozen. See the module docstring for the rules."""

    model_config = ConfigDict(frozen=True, extra="ignore", regex_engine="python-re")

    id: str = Field(min_length=1, max_length=128, pattern=r"^[A-Za-z0-9_.:-]+$")
    name: str = ""
    description: str = ""
    channel: Channel
    segment_ids: tuple[str, ...] = ()
    segmentql: str | None = None
    withbackfill: bool = False
    webhook_url: str | None = None
    headers: dict[str, str] = Field(default_factory=dict)
    region: str | None = None
    stream: str | None = None
    role_arn: str | None = None
    identifier_field: str | None = None
    topic: str | None = None
    audience_events: AudienceEvents = "both"
    user_fields: tuple[str, ...] = ()
    payload_format: PayloadFormat = "v2"
    signing_secret: str | None = None

    @field_validator("audience_events", mode="before")
    @classmethod
    def _lytics_empty_means_both(cls, value: Any) -> Any:
        # Lytics' job config spells "both" as the empty string.
        return "both" if value in ("", None) else value

    @field_validator("segment_ids", "user_fields", mode="before")
    @classmethod
    def _null_is_empty(cls, value: Any) -> Any:
        return () if value is None else value

    @field_validator("headers", mode="before")
    @classmethod
    def _null_headers(cls, value: Any) -> Any:
        return {} if value is None else value

    @field_validator("segment_ids")
    @classmethod
    def _check_segment_ids(cls, value: tuple[str, ...]) -> tuple[str, ...]:
        if any(not s.strip() for s in value):
            raise ValueError("segment_ids may not contain empty ids")
        _refuse_duplicates("segment_ids", value)
        return value

    @field_validator("user_fields")
    @classmethod
    def _check_user_fields(cls, value: tuple[str, ...]) -> tuple[str, ...]:
        if any(not f.strip() for f in value):
            raise ValueError("user_fields may not contain empty field names")
        _refuse_duplicates("user_fields", value)
        return value

    @field_validator("webhook_url")
    @classmethod
    def _check_url(cls, value: str | None) -> str | None:
        if value is not None:
            check_webhook_url(value)
        return value

    @field_validator("headers")
    @classmethod
    def _check_headers(cls, value: dict[str, str]) -> dict[str, str]:
        seen: set[str] = set()
        for name, text in value.items():
            if not HEADER_NAME.fullmatch(name):
                raise ValueError(f"header name {name!r} is not a valid HTTP header name")
            if not HEADER_VALUE.fullmatch(text):
                raise ValueError(f"header {name!r} has a value with control characters")
            lowered = name.lower()
            if lowered in _RESERVED_HEADERS:
                raise ValueError(f"header {name!r} is set by the webhook sender and cannot be overridden")
            if lowered in seen:
                raise ValueError(f"header {name!r} is given twice (header names are case-insensitive)")
            seen.add(lowered)
        return value

    @field_validator("signing_secret")
    @classmethod
    def _check_secret(cls, value: str | None) -> str | None:
        if value is not None:
            secret_bytes(value)
        return value

    @model_validator(mode="after")
    def _check_whole(self) -> Subscription:
        if not self.segment_ids and not (self.segmentql and self.segmentql.strip()):
            raise ValueError("a subscription needs segment_ids or segmentql")
        if self.withbackfill and len(self.segment_ids) > 1:
            raise ValueError("withbackfill allows a single segment only; "
                             f"got {len(self.segment_ids)} segment_ids")
        self._check_channel()
        return self

    def _check_channel(self) -> None:
        for channel, names in _CHANNEL_FIELDS.items():
            if channel == self.channel:
                continue
            for name in names:
                if getattr(self, name):
                    raise ValueError(f"{name} is only used by the {channel} channel, "
                                     f"not by channel {self.channel}")
        if self.channel == "webhook" and not self.webhook_url:
            raise ValueError("channel webhook needs a webhook_url")
        if self.channel == "kinesis":
            _check_kinesis(self.region, self.stream, self.role_arn)
        if self.channel == "kafka":
            if not self.topic:
                raise ValueError("channel kafka needs a topic")
            if not _KAFKA_TOPIC.match(self.topic) or self.topic in (".", ".."):
                raise ValueError(f"topic {self.topic!r} is not a legal Kafka topic name "
                                 "(letters, digits, '.', '_', '-'; at most 249)")


def check_webhook_url(url: str) -> None:
    """Syntax only: absolute http(s) with a host. Raises ``ValueError`` with the reason."""
    parts = urlsplit(url)
    if parts.scheme not in ("http", "https"):
        raise ValueError(f"webhook_url must be an http or https URL, got scheme {parts.scheme!r}")
    if not parts.hostname:
        raise ValueError("webhook_url needs a host")
    try:
        parts.port  # noqa: B018 - raises ValueError on a bad port
    except ValueError:
        raise ValueError("webhook_url has an invalid port") from None


def _check_kinesis(region: str | None, stream: str | None, role_arn: str | None) -> None:
    if not region:
        raise ValueError("channel kinesis needs a region")
    if not _AWS_REGION.match(region):
        raise ValueError(f"region {region!r} is not an AWS region name (e.g. us-east-1)")
    if not stream:
        raise ValueError("channel kinesis needs a stream")
    if not _KINESIS_STREAM.match(stream):
        raise ValueError(f"stream {stream!r} is not a Kinesis stream name "
                         "(1-128 of letters, digits, '_', '.', '-')")
    if role_arn is not None and not _ROLE_ARN.match(role_arn):
        raise ValueError("role_arn must be an IAM role ARN (arn:aws:iam::<account>:role/<name>)")


def _refuse_duplicates(field: str, values: tuple[str, ...]) -> None:
    seen: set[str] = set()
    for value in values:
        if value in seen:
            raise ValueError(f"{field} lists {value!r} twice")
        seen.add(value)


def secret_bytes(secret: str) -> bytes:
    """The key bytes of a ``whsec_<base64>`` secret; ``ValueError`` if it is not one."""
    if not secret.startswith(SECRET_PREFIX):
        raise ValueError(f"signing_secret must start with {SECRET_PREFIX!r}")
    try:
        raw = base64.b64decode(secret[len(SECRET_PREFIX):], validate=True)
    except (binascii.Error, ValueError):
        raise ValueError("signing_secret is not valid base64 after 'whsec_'") from None
    if not _SECRET_MIN_BYTES <= len(raw) <= _SECRET_MAX_BYTES:
        raise ValueError(f"signing_secret must encode {_SECRET_MIN_BYTES}-{_SECRET_MAX_BYTES} "
                         f"bytes, got {len(raw)}")
    return raw


def signing_secret_from(random_bytes: bytes) -> str:
    """A Standard Webhooks secret (``whsec_`` + base64) from caller-supplied random bytes.

    Pure: the caller draws the bytes (``secrets.token_bytes(32)``), so this stays testable.
    """
    if not _SECRET_MIN_BYTES <= len(random_bytes) <= _SECRET_MAX_BYTES:
        raise ValueError(f"need {_SECRET_MIN_BYTES}-{_SECRET_MAX_BYTES} random bytes, "
                         f"got {len(random_bytes)}")
    return SECRET_PREFIX + base64.b64encode(random_bytes).decode("ascii")


def with_signing_secret(subscription: Subscription, random_bytes: bytes) -> Subscription:
    """``subscription`` unchanged if it has a secret, else a copy with one made from the bytes."""
    if subscription.signing_secret is not None:
        return subscription
    return subscription.model_copy(update={"signing_secret": signing_secret_from(random_bytes)})


def matches(subscription: Subscription, transition: Transition) -> bool:
    """Whether ``transition`` is delivered to ``subscription``.

    True when the transition's segment id *or* slug is in ``segment_ids`` (Lytics asks for ids;
    slugs are accepted as ``GET /api/subscription?segment_id=`` accepts either) and
    ``audience_events`` lets its kind through.
    """
    if transition.segment_id not in subscription.segment_ids and (
        transition.segment_slug not in subscription.segment_ids
    ):
        return False
    if subscription.audience_events == "enters_only":
        return transition.event == "enter"
    if subscription.audience_events == "exits_only":
        return transition.event == "exit"
    return True
