"""The benchmark's fixed synthetic workload: a topology and Snowplow-enriched-JSON events.

Shared by ``bench_engine.py`` (the engine run) and ``baseline.py`` (the raw loop), so both
consume the very same bytes. Events are in the Analytics SDK "transformed" JSON shape that
Snowplow enrich emits (atomic columns as keys, the self-describing event as
``unstruct_event_<vendor>_<name>_<major>``), keyed in Kafka by ``domain_userid``.

The topology has 5 attribute groups / 24 attributes over ``domain_userid``, with every
aggregation family (counters, sums, min/max/mean, first/last, unique lists, frequencies,
category counts, approximate distinct counts, time since) and two windowed attributes
(``period``). ``segments(n)`` adds ``n`` SegmentQL segments over those attributes.

Generation is deterministic for a seed; event times are spread over the ``spread_ms`` before
``now_ms`` (mostly increasing, 2 % up to 2 minutes late), so windowed attributes count them
and the engine's lateness bound does not drop them.
"""

from __future__ import annotations

import random
import uuid
from datetime import UTC, datetime
from typing import Any

import orjson

KEY = "domain_userid"
ACME = "com.acme"
EVENT_MIX = (("page_view", 0.6), ("add_to_cart", 0.25), ("transaction", 0.1), ("search", 0.05))
PAGES = [f"https://shop.example.com/p/{i}" for i in range(200)]
SKUS = [f"sku-{i:04d}" for i in range(500)]
COUNTRIES = ("US", "GB", "DE", "FR", "ES", "IT", "NL", "PL", "SE", "BR", "IN", "JP")
BROWSERS = ("Chrome", "Firefox", "Safari", "Edge", "Opera")
SOURCES = ("google", "bing", "newsletter", "facebook", "direct", "partner")
CAMPAIGNS = tuple(f"campaign-{i}" for i in range(30))


def _atomic(name: str) -> dict[str, str]:
    return {"type": "atomic", "name": name}


def _acme(event: str, path: str) -> dict[str, Any]:
    return {"type": "event", "vendor": ACME, "name": event, "major_version": 1, "path": path}


def _attr(name: str, type_: str, aggregation: str, events: list[str] | None = None,
          prop: dict[str, Any] | None = None, **extra: Any) -> dict[str, Any]:
    doc: dict[str, Any] = {"name": name, "type": type_, "aggregation": aggregation,
                           "events": [{"name": e} for e in events or []]}
    if prop is not None:
        doc["property"] = prop
    doc.update(extra)
    return doc


def _group(name: str, attributes: list[dict[str, Any]]) -> dict[str, Any]:
    return {"name": name, "version": 1, "is_published": True, "owner": "bench@example.com",
            "attribute_key": {"name": KEY}, "attributes": attributes}


def attribute_groups() -> list[dict[str, Any]]:
    """5 groups, 24 attributes; ``page_views_1h`` and ``revenue_7d`` are windowed."""
    return [
        _group("engagement", [
            _attr("page_views", "int64", "counter", ["page_view"]),
            _attr("page_views_1h", "int64", "counter", ["page_view"], period="PT1H"),
            _attr("first_page", "string", "first", ["page_view"], _atomic("page_url")),
            _attr("last_page", "string", "last", ["page_view"], _atomic("page_url")),
            _attr("recent_pages", "string_list", "unique_list", ["page_view"], _atomic("page_url")),
        ]),
        _group("commerce", [
            _attr("cart_adds", "int64", "counter", ["add_to_cart"]),
            _attr("cart_value", "double", "sum", ["add_to_cart"], _acme("add_to_cart", "price")),
            _attr("max_price", "double", "max", ["add_to_cart"], _acme("add_to_cart", "price")),
            _attr("min_price", "double", "min", ["add_to_cart"], _acme("add_to_cart", "price")),
            _attr("mean_price", "double", "mean", ["add_to_cart"], _acme("add_to_cart", "price")),
            _attr("top_sku", "string", "most_frequent", ["add_to_cart"],
                  _acme("add_to_cart", "sku")),
        ]),
        _group("transactions", [
            _attr("orders", "int64", "counter", ["transaction"]),
            _attr("revenue", "double", "sum", ["transaction"], _atomic("tr_total")),
            _attr("revenue_7d", "double", "sum", ["transaction"], _atomic("tr_total"),
                  period="P7D"),
            _attr("last_order_total", "double", "last", ["transaction"], _atomic("tr_total")),
        ]),
        _group("context", [
            _attr("countries", "string_list", "unique_list", [], _atomic("geo_country")),
            _attr("browser", "string", "most_frequent", [], _atomic("br_name")),
            _attr("browsers", "dict", "category_count", [], _atomic("br_name")),
            _attr("sessions", "int64", "approx_count_distinct", [], _atomic("domain_sessionid")),
            _attr("minutes_since_first", "double", "time_since_first", [], time_unit="min"),
        ]),
        _group("marketing", [
            _attr("sources", "dict", "category_count", [], _atomic("mkt_source")),
            _attr("first_campaign", "string", "first", [], _atomic("mkt_campaign")),
            _attr("last_referrer", "string", "last", [], _atomic("refr_urlhost")),
            _attr("searches", "int64", "counter", ["search"],
                  criteria={"all": [{"property": _atomic("se_label"), "operator": "is not null"}]}),
        ]),
    ]


ATTRIBUTE_COUNT = sum(len(g["attributes"]) for g in attribute_groups())


def segments(n: int) -> list[dict[str, Any]]:
    """``n`` SegmentQL segments over the attributes above, thresholds varied per index."""
    shapes = (
        "FILTER page_views >= {k}",
        "FILTER AND(cart_adds >= {k}, cart_value > {v})",
        "FILTER revenue_7d > {v}",
        'FILTER AND(browser = "Chrome", page_views_1h >= {k})',
        "FILTER OR(orders >= {k}, max_price > {v})",
    )
    out = []
    for i in range(n):
        ql = shapes[i % len(shapes)].format(k=1 + i % 7, v=20 * (1 + i % 9))
        out.append({"segment_ql": f"{ql}\nALIAS bench_segment_{i}", "attribute_key": KEY,
                    "name": f"Bench segment {i}"})
    return out


def _iso(ms: int) -> str:
    return datetime.fromtimestamp(ms / 1000, tz=UTC).isoformat(timespec="milliseconds")[:-6] + "Z"


def _event(rng: random.Random, user: int, ts_ms: int) -> dict[str, Any]:
    kind = rng.choices([k for k, _ in EVENT_MIX], [w for _, w in EVENT_MIX])[0]
    stamp = _iso(ts_ms)
    event: dict[str, Any] = {
        "app_id": "shop", "platform": "web", "event_id": str(uuid.UUID(int=rng.getrandbits(128))),
        "collector_tstamp": stamp, "dvce_created_tstamp": stamp, "derived_tstamp": stamp,
        "event_vendor": "com.snowplowanalytics.snowplow", "event_name": kind,
        "event_format": "jsonschema", "event_version": "1-0-0",
        "event": "page_view" if kind == "page_view" else "unstruct",
        KEY: f"du-{user:07d}", "domain_sessionid": f"s-{user}-{rng.randint(0, 9)}",
        "user_ipaddress": "10.0.0.1", "geo_country": COUNTRIES[user % len(COUNTRIES)],
        "br_name": BROWSERS[user % len(BROWSERS)] if rng.random() < 0.9 else rng.choice(BROWSERS),
        "useragent": "Mozilla/5.0 (X11; Linux x86_64) AppleWebKit/537.36",
        "page_url": rng.choice(PAGES), "page_title": "Shop",
        "refr_urlhost": rng.choice(("www.google.com", "t.co", "news.example.com")),
        "mkt_source": rng.choice(SOURCES), "mkt_campaign": rng.choice(CAMPAIGNS),
    }
    if kind == "add_to_cart":
        event["event_vendor"] = ACME
        event["unstruct_event_com_acme_add_to_cart_1"] = {
            "sku": rng.choice(SKUS), "price": round(rng.uniform(2, 400), 2), "quantity": 1}
    elif kind == "transaction":
        event["tr_orderid"] = f"o-{rng.getrandbits(40)}"
        event["tr_total"] = round(rng.uniform(10, 900), 2)
    elif kind == "search":
        event["se_category"] = "search"
        event["se_label"] = rng.choice(("shoes", "hat", "coat", "bag"))
    return event


def events(n: int, entities: int, *, now_ms: int, spread_ms: int = 1_800_000,
           seed: int = 7) -> tuple[list[bytes], list[bytes]]:
    """``n`` encoded events over ``entities`` users and their Kafka keys.

    The key is the entity as the engine names it (``domain_userid:<id>``): Kafka's default
    partitioner then puts each event on its owner's partition (see ``processor.streams.routing``),
    as a producer that keys by entity does, so no event needs forwarding."""
    rng = random.Random(seed)
    start = now_ms - spread_ms
    values, keys = [], []
    for i in range(n):
        user = i % entities if i < entities else rng.randrange(entities)  # every user appears
        ts = start + spread_ms * i // n
        if rng.random() < 0.02:
            ts -= rng.randint(0, 120_000)  # a late arrival
        event = _event(rng, user, ts)
        values.append(orjson.dumps(event))
        keys.append(f"{KEY}:{event[KEY]}".encode())
    return values, keys


def to_tsv(value: bytes) -> bytes:
    """The same event as an enriched TSV line (131 columns; shredded event data becomes the
    self-describing ``unstruct_event`` column, timestamps the TSV form)."""
    from processor.domain.events import ATOMIC_COLUMNS

    event = orjson.loads(value)
    columns: dict[str, str] = {}
    for name, field in event.items():
        if name.startswith("unstruct_event_"):
            schema = f"iglu:{ACME}/{event['event_name']}/jsonschema/1-0-0"
            columns["unstruct_event"] = orjson.dumps({
                "schema": "iglu:com.snowplowanalytics.snowplow/unstruct_event/jsonschema/1-0-0",
                "data": {"schema": schema, "data": field}}).decode()
        elif name.endswith("_tstamp"):
            columns[name] = field.replace("T", " ").rstrip("Z")
        else:
            columns[name] = str(field)
    return "\t".join(columns.get(c, "") for c in ATOMIC_COLUMNS).encode()
