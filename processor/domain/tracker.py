"""The Snowplow tracker protocol: tracker payloads -> Snowplow enriched JSON objects.

Pure: no I/O. The collector (``processor.api.collector``) calls :func:`payloads_from_post` or
takes the query string of ``GET /i``, then :func:`to_enriched` for each payload. The output is
the plain enriched-JSON shape (atomic columns as keys, ``unstruct_event`` and ``contexts`` as
self-describing JSON) that :func:`processor.domain.events.decode` accepts.

What enrich would do and we do here (so that attribute definitions written for Snowplow
pipelines work on our events): the parameter -> column mapping of the tracker protocol, event
type names and ``event_vendor/name/format/version``, ``derived_tstamp`` (Snowplow's rule, see
:func:`derived_tstamp_ms`), page/referrer URL components, ``utm_*`` campaign fields, screen and
viewport dimensions. What we do not do: IP lookups, user-agent parsing, PII pseudonymisation,
schema validation against Iglu (only the self-describing *shape* is checked).

A payload that enrich would turn into a bad row raises :class:`TrackerPayloadError`; the
collector answers 400 with its ``reason`` and produces nothing.
"""

from __future__ import annotations

import base64
import binascii
import hashlib
import uuid
from collections.abc import Mapping
from datetime import UTC, datetime
from typing import Any
from urllib.parse import parse_qsl, urlsplit

import orjson

from processor.domain.events import SNOWPLOW_VENDOR, parse_iglu

PAYLOAD_DATA_PREFIX = "iglu:com.snowplowanalytics.snowplow/payload_data/jsonschema/1-"
ANONYMOUS_NUID = "00000000-0000-0000-0000-000000000000"
PLATFORMS = frozenset({"web", "mob", "pc", "srv", "app", "tv", "cnsl", "iot", "headset"})

# e=... -> (event, vendor, name, version); unstruct takes the last three from its schema.
EVENT_TYPES: dict[str, tuple[str, str | None, str | None, str | None]] = {
    "pv": ("page_view", SNOWPLOW_VENDOR, "page_view", "1-0-0"),
    "pp": ("page_ping", SNOWPLOW_VENDOR, "page_ping", "1-0-0"),
    "se": ("struct", "com.google.analytics", "event", "1-0-0"),
    "ev": ("struct", "com.google.analytics", "event", "1-0-0"),  # pre-2013 trackers
    "ue": ("unstruct", None, None, None),
    "tr": ("transaction", SNOWPLOW_VENDOR, "transaction", "1-0-0"),
    "ti": ("transaction_item", SNOWPLOW_VENDOR, "transaction_item", "1-0-0"),
}

# fmt: off
_TEXT = {
    "aid": "app_id", "tna": "name_tracker", "tv": "v_tracker", "uid": "user_id",
    "duid": "domain_userid", "sid": "domain_sessionid", "fp": "user_fingerprint",
    "ua": "useragent", "url": "page_url", "page": "page_title", "refr": "page_referrer",
    "lang": "br_lang", "cs": "doc_charset", "tz": "os_timezone", "cd": "br_colordepth",
    "se_ca": "se_category", "se_ac": "se_action", "se_la": "se_label", "se_pr": "se_property",
    "tr_id": "tr_orderid", "tr_af": "tr_affiliation", "tr_ci": "tr_city", "tr_st": "tr_state",
    "tr_co": "tr_country", "tr_cu": "tr_currency", "ti_id": "ti_orderid", "ti_sk": "ti_sku",
    "ti_nm": "ti_name", "ti_ca": "ti_category", "ti_cu": "ti_currency",
}
_INT = {
    "vid": "domain_sessionidx", "tid": "txn_id", "ti_qu": "ti_quantity",
    "pp_mix": "pp_xoffset_min", "pp_max": "pp_xoffset_max",
    "pp_miy": "pp_yoffset_min", "pp_may": "pp_yoffset_max",
}
_FLOAT = {
    "se_va": "se_value", "tr_tt": "tr_total", "tr_tx": "tr_tax", "tr_sh": "tr_shipping",
    "ti_pr": "ti_price",
}
_BOOL = {
    "cookie": "br_cookies", "f_pdf": "br_features_pdf", "f_fla": "br_features_flash",
    "f_java": "br_features_java", "f_dir": "br_features_director",
    "f_qt": "br_features_quicktime", "f_realp": "br_features_realplayer",
    "f_wma": "br_features_windowsmedia", "f_gears": "br_features_gears",
    "f_ag": "br_features_silverlight",
}
_DIMENSIONS = {
    "res": ("dvce_screenwidth", "dvce_screenheight"),
    "vp": ("br_viewwidth", "br_viewheight"),
    "ds": ("doc_width", "doc_height"),
}
_CAMPAIGN = {
    "utm_medium": "mkt_medium", "utm_source": "mkt_source", "utm_term": "mkt_term",
    "utm_content": "mkt_content", "utm_campaign": "mkt_campaign",
}
# fmt: on


class TrackerPayloadError(ValueError):
    """A payload enrich would reject; ``reason`` is one line, safe to return to the caller."""

    def __init__(self, reason: str) -> None:
        super().__init__(reason)
        self.reason = reason


def payloads_from_post(body: Any) -> list[dict[str, Any]]:
    """The events of a ``POST /com.snowplowanalytics.snowplow/tp2`` body (already JSON-parsed):
    ``{"schema": "iglu:com.snowplowanalytics.snowplow/payload_data/jsonschema/1-0-x",
    "data": [{...}, ...]}``. Raises TrackerPayloadError for any other shape."""
    if not isinstance(body, dict):
        raise TrackerPayloadError("body must be a self-describing JSON object {schema, data}")
    schema = body.get("schema")
    if not isinstance(schema, str) or not schema.startswith(PAYLOAD_DATA_PREFIX):
        raise TrackerPayloadError(f"schema must be {PAYLOAD_DATA_PREFIX}x-y, got {str(schema)[:100]!r}")
    data = body.get("data")
    if not isinstance(data, list) or not data:
        raise TrackerPayloadError("data must be a non-empty list of events")
    for i, item in enumerate(data):
        if not isinstance(item, dict):
            raise TrackerPayloadError(f"data[{i}] must be an object")
    return data


def to_enriched(
    params: Mapping[str, Any],
    *,
    collector_ms: int,
    collector_name: str = "signalbox",
    useragent: str | None = None,
    ip: str | None = None,
    network_userid: str | None = None,
    anonymous: bool = False,
) -> dict[str, Any]:
    """One tracker payload -> one enriched JSON object (None values left out).

    ``collector_ms`` is the server receive time. ``useragent``/``ip``/``network_userid`` come
    from the HTTP request and lose to the payload's own ``ua``/``ip``/``tnuid``/``nuid``.
    ``anonymous`` (the ``SP-Anonymous`` header) drops the IP address and network user id,
    as the Snowplow collector does. Raises TrackerPayloadError.
    """
    p = {str(k): _text(k, v) for k, v in params.items() if v is not None}
    out: dict[str, Any] = {}
    kind = p.get("e")
    if kind not in EVENT_TYPES:
        raise TrackerPayloadError(f"unknown event type e={str(kind)[:20]!r}")
    event, vendor, name, version = EVENT_TYPES[kind]
    unstruct = _self_describing_param(p, "ue_pr", "ue_px")
    if kind == "ue":
        vendor, name, version = _unstruct_naming(unstruct)
    out |= {"event": event, "event_vendor": vendor, "event_name": name,
            "event_version": version, "event_format": "jsonschema" if name else None}
    out["event_id"] = _event_id(p)
    platform = p.get("p")
    if platform is not None and platform not in PLATFORMS:
        raise TrackerPayloadError(f"unknown platform p={platform[:20]!r}")
    out["platform"] = platform
    out |= _mapped(p)
    out |= _timestamps(p, collector_ms)
    out |= _url_parts(out.get("page_url"), "page")
    out |= _url_parts(out.get("page_referrer"), "refr")
    out |= _campaign(out.get("page_url"))
    out["useragent"] = out.get("useragent") or useragent
    out["user_ipaddress"] = None if anonymous else (p.get("ip") or ip)
    nuid = p.get("tnuid") or p.get("nuid") or network_userid
    out["network_userid"] = ANONYMOUS_NUID if anonymous and nuid else nuid
    out["v_collector"] = collector_name
    out["unstruct_event"] = unstruct
    out["contexts"] = _contexts(_self_describing_param(p, "co", "cx"))
    return {k: v for k, v in out.items() if v is not None and v != ""}


def derived_tstamp_ms(
    collector_ms: int, created_ms: int | None, sent_ms: int | None, true_ms: int | None
) -> int:
    """Snowplow's rule: ``true_tstamp`` when the tracker set one; otherwise the collector time
    corrected for the device's clock skew, ``collector - (sent - created)``, when both device
    times are present and created precedes sent; otherwise the collector time."""
    if true_ms is not None:
        return true_ms
    if created_ms is not None and sent_ms is not None and created_ms < sent_ms:
        return collector_ms - (sent_ms - created_ms)
    return collector_ms


def format_tstamp(ms: int) -> str:
    """Epoch ms -> ``2026-01-01T12:00:00.123Z`` (the enriched JSON timestamp format)."""
    try:
        dt = datetime.fromtimestamp(ms / 1000, tz=UTC)
    except (OverflowError, OSError, ValueError):
        raise TrackerPayloadError(f"timestamp {ms} is out of range") from None
    return dt.strftime("%Y-%m-%dT%H:%M:%S.") + f"{ms % 1000:03d}Z"


def _text(name: Any, value: Any) -> str:
    # Trackers send strings; some send numbers for dtm/stm/vid. Nested JSON is never valid here.
    if isinstance(value, bool) or not isinstance(value, str | int | float):
        raise TrackerPayloadError(f"field {str(name)[:40]} must be a string")
    return value if isinstance(value, str) else str(value)


def _event_id(p: Mapping[str, str]) -> str:
    eid = p.get("eid")
    if eid is None:
        # Deterministic, so a tracker's retry of the same payload keeps the same id.
        digest = hashlib.sha256(orjson.dumps(dict(p), option=orjson.OPT_SORT_KEYS)).digest()
        return str(uuid.UUID(bytes=digest[:16], version=4))
    try:
        return str(uuid.UUID(eid))
    except ValueError:
        raise TrackerPayloadError(f"eid {eid[:40]!r} is not a UUID") from None


def _number(name: str, value: str, kind: type[int] | type[float]) -> int | float:
    try:
        number = kind(value)
    except ValueError:
        raise TrackerPayloadError(f"field {name}: invalid number {value[:40]!r}") from None
    if number != number or number in (float("inf"), float("-inf")):
        raise TrackerPayloadError(f"field {name}: invalid number {value[:40]!r}")
    return number


def _mapped(p: Mapping[str, str]) -> dict[str, Any]:
    out: dict[str, Any] = {column: p[param] for param, column in _TEXT.items() if param in p}
    for param, column in _INT.items():
        if p.get(param):
            out[column] = _number(param, p[param], int)
    for param, column in _FLOAT.items():
        if p.get(param):
            out[column] = _number(param, p[param], float)
    for param, column in _BOOL.items():
        if param in p:
            out[column] = p[param] == "1"
    for param, (width, height) in _DIMENSIONS.items():
        if p.get(param):
            w, sep, h = p[param].partition("x")
            if not sep:
                raise TrackerPayloadError(f"field {param}: expected WIDTHxHEIGHT, got {p[param][:40]!r}")
            out[width], out[height] = _number(param, w, int), _number(param, h, int)
    return out


def _timestamps(p: Mapping[str, str], collector_ms: int) -> dict[str, Any]:
    created, sent, true = (
        int(_number(name, p[name], int)) if p.get(name) else None for name in ("dtm", "stm", "ttm")
    )
    derived = derived_tstamp_ms(collector_ms, created, sent, true)
    out = {"collector_tstamp": format_tstamp(collector_ms), "derived_tstamp": format_tstamp(derived)}
    for column, ms in (("dvce_created_tstamp", created), ("dvce_sent_tstamp", sent),
                       ("true_tstamp", true)):
        if ms is not None:
            out[column] = format_tstamp(ms)
    return out


def _b64_json(name: str, value: str) -> Any:
    # Trackers use the URL-safe alphabet without padding; older ones the standard alphabet.
    text = value.strip().replace("-", "+").replace("_", "/")
    try:
        raw = base64.b64decode(text + "=" * (-len(text) % 4), validate=True)
    except (binascii.Error, ValueError):
        raise TrackerPayloadError(f"field {name} is not valid base64") from None
    return _json(name, raw)


def _json(name: str, raw: str | bytes) -> Any:
    try:
        return orjson.loads(raw)
    except orjson.JSONDecodeError:
        raise TrackerPayloadError(f"field {name} is not valid JSON") from None


def _self_describing_param(p: Mapping[str, str], plain: str, encoded: str) -> Any:
    if p.get(plain):
        return _json(plain, p[plain])
    if p.get(encoded):
        return _b64_json(encoded, p[encoded])
    return None


def _check_entity(value: Any, where: str) -> None:
    if not isinstance(value, dict) or not isinstance(value.get("schema"), str):
        raise TrackerPayloadError(f"{where} must be a self-describing JSON {{schema, data}}")
    if parse_iglu(value["schema"]) is None:
        raise TrackerPayloadError(f"{where}: {value['schema'][:100]!r} is not an Iglu URI")
    if not isinstance(value.get("data"), dict):
        raise TrackerPayloadError(f"{where}: data must be an object")


def _unstruct_naming(unstruct: Any) -> tuple[str, str, str]:
    if unstruct is None:
        raise TrackerPayloadError("a self-describing event (e=ue) needs ue_pr or ue_px")
    if not isinstance(unstruct, dict) or "/unstruct_event/" not in str(unstruct.get("schema")):
        raise TrackerPayloadError("ue_pr/ue_px must be wrapped in the unstruct_event schema")
    _check_entity(unstruct.get("data"), "unstruct_event data")
    parts = parse_iglu(unstruct["data"]["schema"])
    assert parts is not None  # checked by _check_entity
    return parts[0], parts[1], f"{parts[3]}-{parts[4]}-{parts[5]}"


def _contexts(contexts: Any) -> Any:
    if contexts is None:
        return None
    if not isinstance(contexts, dict) or "/contexts/" not in str(contexts.get("schema")):
        raise TrackerPayloadError("co/cx must be wrapped in the contexts schema")
    items = contexts.get("data")
    if not isinstance(items, list):
        raise TrackerPayloadError("co/cx data must be a list of entities")
    for i, item in enumerate(items):
        _check_entity(item, f"context {i}")
    return contexts if items else None


def _url_parts(url: str | None, prefix: str) -> dict[str, Any]:
    """page_urlscheme/host/port/path/query/fragment (refr_... for the referrer), as enrich
    fills them; an unparseable URL just leaves them out (enrich would too)."""
    if not url:
        return {}
    try:
        parts = urlsplit(url)
        port = parts.port or {"http": 80, "https": 443}.get(parts.scheme)
    except ValueError:
        return {}
    if not parts.scheme or not parts.hostname:
        return {}
    return {
        f"{prefix}_urlscheme": parts.scheme, f"{prefix}_urlhost": parts.hostname,
        f"{prefix}_urlport": port, f"{prefix}_urlpath": parts.path or None,
        f"{prefix}_urlquery": parts.query or None, f"{prefix}_urlfragment": parts.fragment or None,
    }


def _campaign(url: str | None) -> dict[str, str]:
    if not url:
        return {}
    try:
        query = parse_qsl(urlsplit(url).query)
    except ValueError:
        return {}
    return {_CAMPAIGN[k]: v for k, v in query if k in _CAMPAIGN and v}
