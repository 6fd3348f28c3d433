"""The Snowplow collector endpoints and the events-topic producer the collect endpoints share.

``POST /com.snowplowanalytics.snowplow/tp2`` (JSON ``payload_data``) and ``GET /i`` (query
string, answered with a 1x1 GIF) take what the official trackers send, turn each payload into
an enriched JSON event (:mod:`processor.domain.tracker`) and produce it to the events topic,
keyed by ``domain_userid`` (else ``user_id``, else ``network_userid``), with header
``stream=snowplow``.

Why these endpoints need no token: trackers run in browsers and apps and carry no secret (a
Snowplow collector is public for the same reason: any key shipped to a browser is public
anyway). What protects the system is that the collector can only *append events*: no read, no
definition change. Abuse limits (body size here, rate limits at the ingress) belong in front.

Guarantees: a request is validated whole before anything is produced, so a 400 means nothing
of it reached the topic; 200 is answered only after Kafka acknowledged every event (acks=all);
Kafka unavailable -> 503, and the tracker retries.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import AsyncIterator, Mapping
from contextlib import asynccontextmanager
from typing import Any

import orjson
from aiokafka import AIOKafkaProducer
from aiokafka.errors import KafkaError
from fastapi import APIRouter, FastAPI, HTTPException, Request, Response, status

from processor.api.limits import read_body
from processor.domain.events import EventDecodeError, decode_snowplow_json
from processor.domain.records import SNOWPLOW_STREAM
from processor.domain.tracker import TrackerPayloadError, payloads_from_post, to_enriched
from processor.settings import Settings
from processor.streams import kafka
from processor.streams.routing import STREAM_HEADER

log = logging.getLogger(__name__)

TP2_PATH = "/com.snowplowanalytics.snowplow/tp2"
# The smallest transparent GIF, as the Snowplow collector returns for GET /i.
PIXEL = (
    b"GIF89a\x01\x00\x01\x00\x80\x00\x00\x00\x00\x00\x00\x00\x00!\xf9\x04\x01\x00\x00\x00\x00"
    b",\x00\x00\x00\x00\x01\x00\x01\x00\x00\x02\x02D\x01\x00;"
)
_KEY_FIELDS = ("domain_userid", "user_id", "network_userid")


class EventProducer:
    """The API's one producer to the events topic, started on first use (so the registry API
    keeps working while Kafka is down) and stopped with the app."""

    def __init__(self, settings: Settings) -> None:
        self._settings = settings
        self._producer: AIOKafkaProducer | None = None
        self._lock = asyncio.Lock()

    async def send(
        self, records: list[tuple[bytes | None, bytes]], headers: list[tuple[str, bytes]]
    ) -> None:
        """Produce ``(key, value)`` records and wait until Kafka acknowledged all of them.
        Raises HTTP 503 when Kafka cannot be reached; some records may then have been written
        (at-least-once: a tracker that retries after a 503 may send an event twice)."""
        try:
            producer = await self._started()
            futures = [
                await producer.send(self._settings.events_topic, value, key=key, headers=headers)
                for key, value in records
            ]
            await asyncio.gather(*futures)
        except KafkaError as exc:
            log.warning("producing to %s failed: %s", self._settings.events_topic, exc)
            raise HTTPException(status.HTTP_503_SERVICE_UNAVAILABLE, "event stream unavailable") from None

    async def stop(self) -> None:
        async with self._lock:
            if self._producer is not None:
                await self._producer.stop()
                self._producer = None

    async def _started(self) -> AIOKafkaProducer:
        async with self._lock:
            if self._producer is None:
                producer = kafka.producer(self._settings)
                try:
                    await asyncio.wait_for(producer.start(), timeout=10)
                except (KafkaError, TimeoutError, OSError):
                    await producer.stop()
                    raise KafkaError("cannot connect to Kafka") from None
                self._producer = producer
            return self._producer


@asynccontextmanager
async def _lifespan(app: FastAPI) -> AsyncIterator[None]:
    # Runs inside app.py's lifespan, so app.state.settings is already set.
    app.state.event_producer = EventProducer(app.state.settings)
    try:
        yield
    finally:
        await app.state.event_producer.stop()


router = APIRouter(lifespan=_lifespan)


def event_producer(request: Request) -> EventProducer:
    return request.app.state.event_producer  # type: ignore[no-any-return]


def cors_headers(request: Request, *, preflight: bool = False) -> dict[str, str]:
    """CORS for browser trackers, which send credentials (the ``sp`` cookie), so the origin is
    echoed rather than ``*``. Allowed origins: ``SIGNALBOX_CORS_ORIGINS`` (comma-separated,
    ``*`` = any). Unset, any origin is allowed *for the collector*, as the Snowplow collector
    does: its responses carry no data, so reading them cross-origin reveals nothing."""
    origin = request.headers.get("origin")
    if not origin:
        return {}
    allowed = [o.strip() for o in request.app.state.settings.cors_origins.split(",") if o.strip()]
    if allowed and "*" not in allowed and origin not in allowed:
        return {}
    headers = {"Access-Control-Allow-Origin": origin, "Access-Control-Allow-Credentials": "true",
               "Vary": "Origin"}
    if preflight:
        headers["Access-Control-Allow-Methods"] = "POST, GET, OPTIONS"
        headers["Access-Control-Allow-Headers"] = request.headers.get(
            "access-control-request-headers", "Content-Type, SP-Anonymous")
        headers["Access-Control-Max-Age"] = "3600"
    return headers


@router.options(TP2_PATH, include_in_schema=False)
@router.options("/i", include_in_schema=False)
async def preflight(request: Request) -> Response:
    return Response(status_code=status.HTTP_200_OK, headers=cors_headers(request, preflight=True))


@router.post(TP2_PATH, response_class=Response, responses={
    200: {"content": {"text/plain": {}}, "description": "ok"},
    400: {"description": "invalid payload; nothing was produced"},
    413: {"description": "body too large"},
})
async def collect_tp2(request: Request) -> Response:
    """Snowplow tracker protocol 2, POST: ``{"schema": ".../payload_data/...", "data": [...]}``.
    Public: trackers send no token (see the module docstring)."""
    cors = cors_headers(request)
    try:
        body = await read_body(request)
        try:
            payloads = payloads_from_post(orjson.loads(body))
        except orjson.JSONDecodeError:
            raise TrackerPayloadError("body is not valid JSON") from None
        await _produce(request, payloads)
    except TrackerPayloadError as exc:
        return _error(status.HTTP_400_BAD_REQUEST, exc.reason, cors)
    except HTTPException as exc:
        return _error(exc.status_code, str(exc.detail), cors)
    return Response(b"ok", media_type="text/plain", headers=cors)


@router.get("/i", response_class=Response, responses={
    200: {"content": {"image/gif": {}}, "description": "1x1 transparent GIF"},
    400: {"description": "invalid payload; nothing was produced"},
})
async def collect_pixel(request: Request) -> Response:
    """Snowplow tracker protocol, GET: the event's fields are the query parameters.
    Public: trackers send no token (see the module docstring)."""
    cors = cors_headers(request)
    try:
        await _produce(request, [dict(request.query_params)])
    except TrackerPayloadError as exc:
        return _error(status.HTTP_400_BAD_REQUEST, exc.reason, cors)
    except HTTPException as exc:
        return _error(exc.status_code, str(exc.detail), cors)
    return Response(PIXEL, media_type="image/gif",
                    headers=cors | {"Cache-Control": "no-cache, no-store, must-revalidate"})


async def _produce(request: Request, payloads: list[dict[str, Any]]) -> None:
    """Convert and validate every payload, then produce them all (nothing on any error)."""
    settings: Settings = request.app.state.settings
    now_ms = time.time_ns() // 1_000_000
    context = _request_context(request)
    records: list[tuple[bytes | None, bytes]] = []
    for i, params in enumerate(payloads):
        try:
            enriched = to_enriched(params, collector_ms=now_ms, **context)
            value = orjson.dumps(enriched)
            # The worker's decoder is the judge: what it would dead-letter is refused here.
            decode_snowplow_json(value, now_ms=now_ms, max_bytes=settings.max_event_bytes)
        except TrackerPayloadError as exc:
            raise TrackerPayloadError(_where(i, len(payloads), exc.reason)) from None
        except EventDecodeError as exc:
            raise TrackerPayloadError(_where(i, len(payloads), exc.reason)) from None
        records.append((_key(enriched), value))
    await event_producer(request).send(records, [(STREAM_HEADER, SNOWPLOW_STREAM.encode())])


def _request_context(request: Request) -> dict[str, Any]:
    forwarded = request.headers.get("x-forwarded-for", "").split(",")[0].strip()
    return {
        "useragent": request.headers.get("user-agent"),
        "ip": forwarded or (request.client.host if request.client else None),
        "network_userid": request.cookies.get("sp"),
        "anonymous": "sp-anonymous" in request.headers,
    }


def _key(enriched: Mapping[str, Any]) -> bytes | None:
    for name in _KEY_FIELDS:
        value = enriched.get(name)
        if value:
            return f"{name}:{value}".encode()
    return None


def _where(index: int, count: int, reason: str) -> str:
    return reason if count == 1 else f"event {index}: {reason}"


def _error(code: int, reason: str, headers: dict[str, str]) -> Response:
    return Response(reason, status_code=code, media_type="text/plain", headers=headers)
