"""The event model and the decoders that build it from raw bytes.

Three wire shapes become one frozen :class:`Event`:

- the Snowplow **enriched TSV** (131 tab-separated columns in the order of ``ATOMIC_COLUMNS``;
  ``contexts``, ``derived_contexts`` and ``unstruct_event`` hold self-describing JSON);
- Snowplow **enriched JSON**, either the Analytics SDK "transformed" shape (atomic columns as
  keys, ``contexts_<vendor>_<name>_<major>`` lists and ``unstruct_event_<vendor>_<name>_<major>``
  objects) or the plain shape (``unstruct_event`` / ``contexts`` as self-describing JSON);
- **generic JSON** objects (Lytics-style ``/collect/json/{stream}``).

Every decoder either returns an Event or raises :class:`EventDecodeError` whose ``reason`` is
meant for the dead-letter topic. Rejected, never silently repaired:

- input larger than ``max_bytes`` ("event is N bytes, limit M"), input that is not UTF-8;
- JSON that does not parse or is not an object; a TSV line without exactly 131 fields;
- a missing or unparseable event time, or one more than a day after ``now_ms``;
- an atomic column (or a generic top-level field) holding a string longer than
  ``MAX_FIELD_CHARS``: truncating would silently change values that keys and criteria compare
  on, so such an event is rejected. Strings nested inside contexts/unstruct are bounded only by
  ``max_bytes`` (walking every nested value would cost more than it protects).

Entities decoded from the transformed JSON shape have lost their full Iglu URI (the column name
keeps only vendor/name/major, with dots turned into underscores); they are stored as
``{"schema": None, "shred_key": "com_acme_product_1", "data": {...}}`` and matched by that key.
Timestamps stay strings in ``atomic`` (TSV ``"2026-01-01 12:00:00.123"`` becomes
``"2026-01-01T12:00:00.123Z"``, as the Analytics SDK does); ``timestamp_ms`` is the parsed time.
"""

from __future__ import annotations

import contextlib
import hashlib
import math
import re
from collections.abc import Mapping, Sequence
from datetime import UTC, datetime
from functools import lru_cache
from itertools import compress
from types import MappingProxyType
from typing import Any, NamedTuple

import orjson

MAX_FIELD_CHARS = 65_536
FUTURE_TOLERANCE_MS = 86_400_000
SNOWPLOW_VENDOR = "com.snowplowanalytics.snowplow"

# fmt: off
# Field order of the Snowplow enriched event (TSV), i.e. the atomic.events columns.
ATOMIC_COLUMNS: tuple[str, ...] = (
    "app_id", "platform", "etl_tstamp", "collector_tstamp", "dvce_created_tstamp", "event",
    "event_id", "txn_id", "name_tracker", "v_tracker", "v_collector", "v_etl", "user_id",
    "user_ipaddress", "user_fingerprint", "domain_userid", "domain_sessionidx", "network_userid",
    "geo_country", "geo_region", "geo_city", "geo_zipcode", "geo_latitude", "geo_longitude",
    "geo_region_name", "ip_isp", "ip_organization", "ip_domain", "ip_netspeed", "page_url",
    "page_title", "page_referrer", "page_urlscheme", "page_urlhost", "page_urlport",
    "page_urlpath", "page_urlquery", "page_urlfragment", "refr_urlscheme", "refr_urlhost",
    "refr_urlport", "refr_urlpath", "refr_urlquery", "refr_urlfragment", "refr_medium",
    "refr_source", "refr_term", "mkt_medium", "mkt_source", "mkt_term", "mkt_content",
    "mkt_campaign", "contexts", "se_category", "se_action", "se_label", "se_property",
    "se_value", "unstruct_event", "tr_orderid", "tr_affiliation", "tr_total", "tr_tax",
    "tr_shipping", "tr_city", "tr_state", "tr_country", "ti_orderid", "ti_sku", "ti_name",
    "ti_category", "ti_price", "ti_quantity", "pp_xoffset_min", "pp_xoffset_max",
    "pp_yoffset_min", "pp_yoffset_max", "useragent", "br_name", "br_family", "br_version",
    "br_type", "br_renderengine", "br_lang", "br_features_pdf", "br_features_flash",
    "br_features_java", "br_features_director", "br_features_quicktime",
    "br_features_realplayer", "br_features_windowsmedia", "br_features_gears",
    "br_features_silverlight", "br_cookies", "br_colordepth", "br_viewwidth", "br_viewheight",
    "os_name", "os_family", "os_manufacturer", "os_timezone", "dvce_type", "dvce_ismobile",
    "dvce_screenwidth", "dvce_screenheight", "doc_charset", "doc_width", "doc_height",
    "tr_currency", "tr_total_base", "tr_tax_base", "tr_shipping_base", "ti_currency",
    "ti_price_base", "base_currency", "geo_timezone", "mkt_clickid", "mkt_network", "etl_tags",
    "dvce_sent_tstamp", "refr_domain_userid", "refr_device_tstamp", "derived_contexts",
    "domain_sessionid", "derived_tstamp", "event_vendor", "event_name", "event_format",
    "event_version", "event_fingerprint", "true_tstamp",
)
ATOMIC_COLUMN_SET = frozenset(ATOMIC_COLUMNS)
TIMESTAMP_COLUMNS = frozenset(c for c in ATOMIC_COLUMNS if c.endswith("_tstamp"))
_INT_COLUMNS = frozenset({
    "txn_id", "domain_sessionidx", "page_urlport", "refr_urlport", "ti_quantity",
    "pp_xoffset_min", "pp_xoffset_max", "pp_yoffset_min", "pp_yoffset_max", "br_viewwidth",
    "br_viewheight", "dvce_screenwidth", "dvce_screenheight", "doc_width", "doc_height",
})
_FLOAT_COLUMNS = frozenset({
    "geo_latitude", "geo_longitude", "se_value", "tr_total", "tr_tax", "tr_shipping", "ti_price",
    "tr_total_base", "tr_tax_base", "tr_shipping_base", "ti_price_base",
})
_BOOL_COLUMNS = frozenset(c for c in ATOMIC_COLUMNS if c.startswith("br_features_")) | {
    "br_cookies", "dvce_ismobile",
}
# fmt: on
_JSON_COLUMNS = frozenset({"contexts", "derived_contexts", "unstruct_event"})
# TSV columns whose text becomes another value (number, boolean, ISO timestamp).
_TYPED_COLUMNS = _INT_COLUMNS | _FLOAT_COLUMNS | _BOOL_COLUMNS | TIMESTAMP_COLUMNS
# Atomic columns a JSON event keeps as they are: any other key may be an entity column.
_PLAIN_COLUMNS = ATOMIC_COLUMN_SET - _JSON_COLUMNS
# Built-in attribute-key fields, in the order identifiers() reports them.
IDENTIFIER_FIELDS: tuple[str, ...] = (
    "domain_userid",
    "domain_sessionid",
    "user_id",
    "network_userid",
)
# Events tracked before enrich filled event_vendor/name/version: derive them from `event`.
_LEGACY_EVENTS: dict[str, tuple[str, str, str]] = {
    "page_view": (SNOWPLOW_VENDOR, "page_view", "1-0-0"),
    "page_ping": (SNOWPLOW_VENDOR, "page_ping", "1-0-0"),
    "struct": ("com.google.analytics", "event", "1-0-0"),
    "transaction": (SNOWPLOW_VENDOR, "transaction", "1-0-0"),
    "transaction_item": (SNOWPLOW_VENDOR, "transaction_item", "1-0-0"),
}
_IGLU = re.compile(
    r"^iglu:([a-zA-Z0-9_.\-]+)/([a-zA-Z0-9_\-]+)/([a-zA-Z0-9_\-]+)/(\d+)-(\d+)-(\d+)$"
)
_CAMEL = re.compile(r"([^A-Z_])([A-Z])")
_SCHEMA_VERSION = re.compile(r"\d+-\d+-\d+")
_EPOCH = datetime(1970, 1, 1, tzinfo=UTC)
# The usual timestamp, "2026-01-01T12:00:00.123Z", is read by parts (see parse_timestamp_ms).
_MINUTE = re.compile(r"\d{4}-\d{2}-\d{2}T\d{2}:\d{2}", re.ASCII)
_SECOND_MS = {f"{s:02d}": s * 1000 for s in range(60)}
_MILLISECOND = {f"{ms:03d}": ms for ms in range(1000)}
# The keys of a JSON event, in order -> those that are not plain atomic columns (see
# ``_from_snowplow_object``). Emptied whole when full.
SHAPES_MAX = 1024
_SHAPES: dict[tuple[str, ...], tuple[str, ...]] = {}


class EventDecodeError(ValueError):
    """Raised when bytes cannot become an Event; ``reason`` is a one-line, human-readable cause."""

    def __init__(self, reason: str) -> None:
        super().__init__(reason)
        self.reason = reason


_NO_FIELDS: Mapping[str, Any] = MappingProxyType({})


class Event(NamedTuple):
    """One decoded event. Immutable by contract: callers must not mutate the mappings inside.

    A named tuple rather than a frozen dataclass: the worker builds one per record, and a
    frozen dataclass sets each of its ten fields through ``object.__setattr__`` (four times
    the time of building the tuple)."""

    event_id: str
    timestamp_ms: int
    name: str | None
    vendor: str | None
    version: str | None
    atomic: Mapping[str, Any]
    unstruct: Mapping[str, Any] | None = None
    contexts: tuple[Mapping[str, Any], ...] = ()
    stream: str | None = None
    fields: Mapping[str, Any] = _NO_FIELDS  # a generic event's top-level fields


# ``Event(*fields)`` for the decoders, which give every field: the tuple without the named
# tuple's Python-level ``__new__`` (a third of the cost of building an event).
_new_event = tuple.__new__
assert Event._fields[-2:] == ("stream", "fields") and len(Event._fields) == 10


def parse_iglu(uri: str) -> tuple[str, str, str, int, int, int] | None:
    """Split ``iglu:vendor/name/format/M-R-A`` into its parts, or None when it is not one."""
    m = _IGLU.match(uri)
    if m is None:
        return None
    return m[1], m[2], m[3], int(m[4]), int(m[5]), int(m[6])


@lru_cache(maxsize=4096)
def shred_key(vendor: str, name: str, major: int) -> str:
    """The Analytics SDK column suffix for a schema: ``com.acme``/``myEvent``/1 -> ``com_acme_my_event_1``."""
    vendor_part = vendor.replace(".", "_").replace("-", "_").lower()
    name_part = _CAMEL.sub(r"\1_\2", name).replace("-", "_").lower()
    return f"{vendor_part}_{name_part}_{major}"


def parse_timestamp_ms(value: str) -> int:
    """Parse an ISO-8601 / Snowplow timestamp to epoch ms; naive times are UTC. Raises ValueError.

    The form Snowplow writes, ``YYYY-MM-DDThh:mm:ss.fffZ``, is read by parts (the minute from a
    cache, seconds and milliseconds from tables): the same result as ``fromisoformat``, several
    times faster. Anything else goes through ``fromisoformat``.
    """
    ms = _usual_ms(value)
    if ms is not None:
        return ms
    dt = datetime.fromisoformat(value)
    if dt.tzinfo is None:
        dt = dt.replace(tzinfo=UTC)
    return _epoch_ms(dt)


def _usual_ms(value: str) -> int | None:
    """Epoch ms of a ``YYYY-MM-DDThh:mm:ss.fffZ`` timestamp, None when it is not one."""
    if len(value) == 24 and value[16] == ":" and value[19] == "." and value[23] == "Z":
        minute = _minute_ms(value[:16])
        second = _SECOND_MS.get(value[17:19])
        millisecond = _MILLISECOND.get(value[20:23])
        if minute is not None and second is not None and millisecond is not None:
            return minute + second + millisecond
    return None


def _epoch_ms(dt: datetime) -> int:
    # Integer arithmetic: float timestamps can turn .123 into 122.99999 and lose a millisecond.
    delta = dt - _EPOCH
    return (delta.days * 86_400 + delta.seconds) * 1000 + delta.microseconds // 1000


@lru_cache(maxsize=4096)
def _minute_ms(text: str) -> int | None:
    """Epoch ms of a UTC ``YYYY-MM-DDThh:mm`` (ASCII digits, a real date and time), else None.
    Cached: events come roughly in time order, so most share their minute with many others."""
    if _MINUTE.fullmatch(text) is None:
        return None
    try:
        dt = datetime(
            int(text[:4]), int(text[5:7]), int(text[8:10]), int(text[11:13]), int(text[14:16]),
            tzinfo=UTC,
        )
    except ValueError:
        return None
    return _epoch_ms(dt)


def _text(raw: bytes, max_bytes: int) -> str:
    if len(raw) > max_bytes:
        raise EventDecodeError(f"event is {len(raw)} bytes, limit {max_bytes}")
    try:
        return raw.decode("utf-8")
    except UnicodeDecodeError as exc:
        raise EventDecodeError(f"event is not valid UTF-8 (byte {exc.start})") from None


def _json(text: str | bytes, what: str) -> Any:
    try:
        return orjson.loads(text)
    except orjson.JSONDecodeError as exc:
        raise EventDecodeError(f"{what} is not valid JSON: {exc}") from None


def _object(raw: bytes, max_bytes: int) -> dict[str, Any]:
    if len(raw) > max_bytes:
        raise EventDecodeError(f"event is {len(raw)} bytes, limit {max_bytes}")
    try:
        # orjson reads the bytes and rejects bad UTF-8 itself, so no str copy is needed ...
        value = orjson.loads(raw)
    except orjson.JSONDecodeError:
        # ... but on failure the reason is the one the text gives (bad UTF-8 at byte N, or the
        # JSON error with character positions).
        value = _json(_text(raw, max_bytes), "event")
    if not isinstance(value, dict):
        raise EventDecodeError(f"event must be a JSON object, got {type(value).__name__}")
    return value


def _check_time(ts_ms: int, now_ms: int | None, column: str) -> int:
    if now_ms is not None and ts_ms > now_ms + FUTURE_TOLERANCE_MS:
        when = datetime.fromtimestamp(ts_ms / 1000, tz=UTC).isoformat()
        raise EventDecodeError(f"{column} {when} is more than 1 day in the future")
    return ts_ms


def _event_time(atomic: Mapping[str, Any], now_ms: int | None) -> int:
    """derived_tstamp (what Signals orders by), falling back to collector_tstamp."""
    value = atomic.get("derived_tstamp")
    if value.__class__ is str:  # the usual case first, without the general rules' calls
        ts_ms = _usual_ms(value)
        if ts_ms is not None:
            return _check_time(ts_ms, now_ms, "derived_tstamp")
    for column in ("derived_tstamp", "collector_tstamp"):
        value = atomic.get(column)
        if value is None or value == "":
            continue
        if not isinstance(value, str):
            raise EventDecodeError(f"bad timestamp in {column}: {value!r}")
        try:
            ts_ms = parse_timestamp_ms(value)
        except ValueError:
            raise EventDecodeError(f"bad timestamp in {column}: {value!r}") from None
        return _check_time(ts_ms, now_ms, column)
    raise EventDecodeError("event has neither derived_tstamp nor collector_tstamp")


def _convert_column(column: str, value: str) -> Any:
    """TSV text -> the value type of the atomic.events column."""
    if len(value) > MAX_FIELD_CHARS:
        raise EventDecodeError(
            f"field {column} is {len(value)} characters, limit {MAX_FIELD_CHARS}"
        )
    if column in TIMESTAMP_COLUMNS:  # the usual typed column, so tested first
        return value.replace(" ", "T", 1) + ("" if value.endswith("Z") else "Z")
    try:
        if column in _INT_COLUMNS:
            return int(value)
        if column in _FLOAT_COLUMNS:
            return float(value)
    except ValueError:
        raise EventDecodeError(f"field {column}: invalid number {value[:40]!r}") from None
    if column in _BOOL_COLUMNS:
        if value not in ("0", "1"):
            raise EventDecodeError(f"field {column}: invalid boolean {value[:40]!r}")
        return value == "1"
    return value


def _self_describing(value: Any, column: str) -> Any:
    if isinstance(value, str):
        return _json(value, column)
    return value


def _entity_list(value: Any, column: str) -> list[Mapping[str, Any]]:
    """contexts / derived_contexts: ``{"schema": .../contexts/..., "data": [...]}`` or a bare list."""
    value = _self_describing(value, column)
    if value is None:
        return []
    items = value.get("data") if isinstance(value, dict) else value
    if not isinstance(items, list) or not all(
        isinstance(i, dict) and isinstance(i.get("schema"), str) for i in items
    ):
        raise EventDecodeError(f"{column} must be a list of self-describing entities")
    return items


def _unstruct(value: Any) -> Mapping[str, Any] | None:
    """unstruct_event with or without its ``unstruct_event/jsonschema/1-0-0`` wrapper."""
    value = _self_describing(value, "unstruct_event")
    if value is None:
        return None
    if isinstance(value, dict) and "/unstruct_event/" in str(value.get("schema", "")):
        value = value.get("data")
    if not (isinstance(value, dict) and isinstance(value.get("schema"), str) and "data" in value):
        raise EventDecodeError("unstruct_event must be a self-describing JSON {schema, data}")
    return value


def _naming(
    atomic: Mapping[str, Any], unstruct: Mapping[str, Any] | None
) -> tuple[str | None, str | None, str | None]:
    name, vendor, version = (
        atomic.get("event_name"),
        atomic.get("event_vendor"),
        atomic.get("event_version"),
    )
    if name:
        return name, vendor or None, version or None
    parts = (
        parse_iglu(unstruct["schema"]) if unstruct is not None and unstruct.get("schema") else None
    )
    if parts is not None:
        return parts[1], parts[0], f"{parts[3]}-{parts[4]}-{parts[5]}"
    legacy = _LEGACY_EVENTS.get(str(atomic.get("event")))
    if legacy is not None:
        return legacy[1], legacy[0], legacy[2]
    return None, None, None


def _snowplow_event(
    atomic: dict[str, Any],
    unstruct: Mapping[str, Any] | None,
    contexts: list[Mapping[str, Any]],
    now_ms: int | None,
) -> Event:
    event_id = atomic.get("event_id") or atomic.get("eid")
    if not isinstance(event_id, str) or not event_id:
        raise EventDecodeError("event has no event_id")
    name = atomic.get("event_name")
    if name:  # what enrich fills in: ``_naming``'s first case, without the call
        vendor, version = atomic.get("event_vendor") or None, atomic.get("event_version") or None
    else:
        name, vendor, version = _naming(atomic, unstruct)
    return _new_event(Event, (event_id, _event_time(atomic, now_ms), name, vendor, version, atomic,
                              unstruct, tuple(contexts), None, _NO_FIELDS))


def decode_snowplow_tsv(
    raw: bytes, *, now_ms: int | None = None, max_bytes: int = 1_000_000
) -> Event:
    """Decode one enriched TSV line (a trailing newline is allowed). Empty columns are absent."""
    line = _text(raw, max_bytes).rstrip("\r\n")
    values = line.split("\t")
    if len(values) != len(ATOMIC_COLUMNS):
        raise EventDecodeError(
            f"expected {len(ATOMIC_COLUMNS)} tab-separated fields, got {len(values)}"
        )
    # The non-empty columns (compress and filter keep the same ones), in column order.
    present = list(compress(ATOMIC_COLUMNS, values))
    atomic: dict[str, Any] = dict(zip(present, filter(None, values), strict=True))
    # No field is longer than its line: in a line within MAX_FIELD_CHARS only the typed columns
    # need a look. In column order, so that the first bad column is the one reported.
    pending = _PLAIN_COLUMNS if len(line) > MAX_FIELD_CHARS else _TYPED_COLUMNS
    for column in filter(pending.__contains__, present):
        atomic[column] = _convert_column(column, atomic[column])
    contexts = _entity_list(atomic.pop("contexts", None), "contexts")
    contexts += _entity_list(atomic.pop("derived_contexts", None), "derived_contexts")
    unstruct = _unstruct(atomic.pop("unstruct_event", None))
    return _snowplow_event(atomic, unstruct, contexts, now_ms)


def _from_snowplow_object(obj: dict[str, Any], raw: bytes, now_ms: int | None) -> Event:
    """The Event of ``obj``, decoded from ``raw``; takes ``obj`` over: it becomes the event's
    ``atomic``, without nulls and without the entity and event columns. Every other key stays,
    checked against MAX_FIELD_CHARS."""
    atomic = obj
    if raw.find(b"null") >= 0:  # only the text null is a null: most events skip the scan
        for key in [k for k, v in atomic.items() if v is None]:
            del atomic[key]
    # A JSON string has no more characters than the bytes that encode it: in an event within
    # MAX_FIELD_CHARS bytes only the keys that are not plain atomic columns need a look. Events
    # of one kind carry the same keys in the same order, so those are found once per shape.
    if len(raw) > MAX_FIELD_CHARS:
        keys: Sequence[str] = list(atomic)
    else:
        shape = tuple(atomic)
        keys = _SHAPES.get(shape)  # type: ignore[assignment]
        if keys is None:
            if len(_SHAPES) >= SHAPES_MAX:
                _SHAPES.clear()
            keys = _SHAPES[shape] = tuple(k for k in atomic if k not in _PLAIN_COLUMNS)
    unstruct: Mapping[str, Any] | None = None
    contexts: list[Mapping[str, Any]] = []
    for key in keys:  # in the event's order, which orders contexts and errors
        value = atomic[key]
        if key in ("contexts", "derived_contexts"):
            contexts += _entity_list(value, key)
        elif key.startswith("contexts_") and isinstance(value, list):
            suffix = key[len("contexts_") :]
            contexts += [{"schema": None, "shred_key": suffix, "data": d} for d in value]
        elif key == "unstruct_event":
            unstruct = _unstruct(value)
        elif key.startswith("unstruct_event_") and isinstance(value, dict):
            unstruct = _shredded_unstruct(atomic, key[len("unstruct_event_") :], value)
        else:
            if value.__class__ is str and len(value) > MAX_FIELD_CHARS:
                raise EventDecodeError(
                    f"field {key} is {len(value)} characters, limit {MAX_FIELD_CHARS}"
                )
            continue
        del atomic[key]
    return _snowplow_event(atomic, unstruct, contexts, now_ms)


def _shredded_unstruct(obj: Mapping[str, Any], suffix: str, data: Any) -> Mapping[str, Any]:
    """Rebuild the Iglu URI from event_vendor/name/version when they agree with the column name."""
    vendor, name = obj.get("event_vendor"), obj.get("event_name")
    version = str(obj.get("event_version") or "")
    fmt = obj.get("event_format") or "jsonschema"
    schema = None
    if isinstance(vendor, str) and isinstance(name, str):
        # the same few kinds of event over and over: their URI is worked out once (the cache
        # takes text only, so that an odd event_format cannot share an entry with its text)
        uri = _shredded_schema if type(fmt) is str else _shredded_schema.__wrapped__
        schema = uri(vendor, name, version, fmt, suffix)
    if schema is not None:
        return {"schema": schema, "data": data}
    return {"schema": None, "shred_key": suffix, "data": data}


@lru_cache(maxsize=1024)
def _shredded_schema(vendor: str, name: str, version: str, fmt: Any, suffix: str) -> str | None:
    """``iglu:vendor/name/fmt/version`` when the shredded column ``suffix`` is that schema's."""
    if _SCHEMA_VERSION.fullmatch(version) and shred_key(vendor, name, int(version.split("-")[0])) == suffix:
        return f"iglu:{vendor}/{name}/{fmt}/{version}"
    return None


def decode_snowplow_json(
    raw: bytes, *, now_ms: int | None = None, max_bytes: int = 1_000_000
) -> Event:
    """Decode enriched JSON in the Analytics SDK transformed shape or the plain shape."""
    return _from_snowplow_object(_object(raw, max_bytes), raw, now_ms)


def _generic_time(value: Any, field_name: str, now_ms: int) -> int:
    """Epoch ms, epoch seconds (anything below 1e11 is taken as seconds), or ISO-8601 text."""
    if value is None:
        return now_ms
    if isinstance(value, str) and re.fullmatch(r"\d+(\.\d+)?", value.strip()):
        value = float(value)
    ts_ms: int | None = None
    if isinstance(value, int | float) and not isinstance(value, bool) and math.isfinite(value):
        ts_ms = int(value * 1000 if abs(value) < 1e11 else value)
    elif isinstance(value, str):
        with contextlib.suppress(ValueError):
            ts_ms = parse_timestamp_ms(value.strip())
    if ts_ms is None:
        raise EventDecodeError(f"bad timestamp in {field_name}: {str(value)[:60]!r}")
    return _check_time(ts_ms, now_ms, field_name)


def _from_generic_object(
    raw: bytes,
    obj: dict[str, Any],
    stream: str,
    timestamp_field: str,
    id_field: str | None,
    now_ms: int,
) -> Event:
    if len(raw) > MAX_FIELD_CHARS:  # smaller JSON cannot hold a longer string
        for key, value in obj.items():
            if isinstance(value, str) and len(value) > MAX_FIELD_CHARS:
                raise EventDecodeError(
                    f"field {key} is {len(value)} characters, limit {MAX_FIELD_CHARS}"
                )
    ts = _generic_time(obj.get(timestamp_field), timestamp_field, now_ms)
    given_id = obj.get(id_field) if id_field else None
    if isinstance(given_id, str | int) and not isinstance(given_id, bool) and str(given_id):
        event_id = str(given_id)
    else:
        # Deterministic, so a redelivered copy of the same bytes gets the same id.
        event_id = hashlib.blake2b(raw, digest_size=16).hexdigest()
    # Fields named like atomic columns (user_id, app_id, ...) serve built-in keys and
    # atomic properties, so Signals definitions also work on generic streams.
    atomic = {k: v for k, v in obj.items() if k in ATOMIC_COLUMN_SET and v is not None}
    name = obj.get("event") if isinstance(obj.get("event"), str) else None
    return Event(event_id, ts, name, None, None, atomic, None, (), stream, obj)


def decode_generic_json(
    raw: bytes,
    *,
    stream: str,
    timestamp_field: str = "ts",
    id_field: str | None = None,
    now_ms: int,
    max_bytes: int = 1_000_000,
) -> Event:
    """Decode a generic JSON object; a missing timestamp field means "now" (``now_ms``)."""
    return _from_generic_object(
        raw, _object(raw, max_bytes), stream, timestamp_field, id_field, now_ms
    )


def _looks_snowplow(obj: Mapping[str, Any]) -> bool:
    has_id = "event_id" in obj or "eid" in obj
    return (has_id and "collector_tstamp" in obj) or "app_id" in obj or "platform" in obj


def decode(
    raw: bytes,
    *,
    stream: str | None = None,
    timestamp_field: str = "ts",
    now_ms: int,
    max_bytes: int = 1_000_000,
) -> Event:
    """Auto-detect the shape: a JSON object is Snowplow JSON when it carries event_id and
    collector_tstamp (or app_id / platform), generic JSON otherwise (stream "default" when none
    is given); anything else is parsed as enriched TSV."""
    stripped = raw.lstrip()
    if not stripped.startswith(b"{"):
        return decode_snowplow_tsv(raw, now_ms=now_ms, max_bytes=max_bytes)
    obj = _object(raw, max_bytes)
    if _looks_snowplow(obj):
        return _from_snowplow_object(obj, raw, now_ms)
    return _from_generic_object(raw, obj, stream or "default", timestamp_field, None, now_ms)


def identifiers(event: Event) -> dict[str, str]:
    """The built-in attribute-key values the event carries (non-empty strings only)."""
    out: dict[str, str] = {}
    for key in IDENTIFIER_FIELDS:
        value = event.atomic.get(key)
        if isinstance(value, str) and value:
            out[key] = value
    return out
