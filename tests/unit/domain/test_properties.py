"""Resolving properties on events, date parts, event selectors, criteria and key values."""

from __future__ import annotations

from typing import Any

import pytest
from hypothesis import given
from hypothesis import strategies as st

from processor.domain.definitions import BUILTIN_ATTRIBUTE_KEYS, AttributeKey, Criteria
from processor.domain.events import Event, decode_generic_json
from processor.domain.properties import (
    AtomicProperty,
    CalculatedProperty,
    EntityProperty,
    EventProperty,
    EventSelector,
    attribute_key_value,
    compare,
    date_part,
    like_pattern,
    matches_criteria,
    matches_events,
    resolve,
)

ECOM = "com.snowplowanalytics.snowplow.ecommerce"
PRODUCT = f"iglu:{ECOM}/product/jsonschema/1-0-0"
ACTION = f"iglu:{ECOM}/snowplow_ecommerce_action/jsonschema/1-0-2"
NOW = 1_767_268_800_000


def make_event(**overrides: Any) -> Event:
    fields: dict[str, Any] = {
        "event_id": "e1",
        "timestamp_ms": NOW,
        "name": "snowplow_ecommerce_action",
        "vendor": ECOM,
        "version": "1-0-2",
        "atomic": {
            "app_id": "web",
            "page_url": "https://shop.example/products/42",
            "derived_tstamp": "2026-01-01T13:45:00.000Z",  # a Thursday
            "domain_userid": "duid",
            "user_id": "",
            "geo_country": "GB",
            "tr_total": 10.0,
            "tr_tax": 2,
            "se_value": 3.5,
        },
        "unstruct": {
            "schema": ACTION,
            "data": {"type": "add_to_cart", "meta": {"tags": ["a", "b"]}},
        },
        "contexts": (
            {"schema": PRODUCT, "data": {"id": "p1", "price": 9.5}},
            {"schema": "iglu:com.acme/other/jsonschema/1-0-0", "data": {"price": 100}},
            {"schema": f"iglu:{ECOM}/product/jsonschema/1-1-0", "data": {"id": "p2", "price": 0.5}},
            {"schema": f"iglu:{ECOM}/product/jsonschema/2-0-0", "data": {"id": "p3"}},
        ),
    }
    fields.update(overrides)
    return Event(**fields)


def entity(path: str, index: int = 0, **kw: Any) -> EntityProperty:
    return EntityProperty(
        vendor=ECOM, name="product", major_version=1, path=path, index=index, **kw
    )


def event_prop(path: str) -> EventProperty:
    return EventProperty(vendor=ECOM, name="snowplow_ecommerce_action", major_version=1, path=path)


def test_atomic_event_and_entity_properties() -> None:
    event = make_event()
    assert resolve(event, AtomicProperty(name="app_id")) == "web"
    assert resolve(event, AtomicProperty(name="page_title")) is None
    assert resolve(event, event_prop("type")) == "add_to_cart"
    assert resolve(event, event_prop("$.meta.tags[1]")) == "b"
    assert resolve(event, event_prop("$.meta.tags[5]")) is None
    assert resolve(event, event_prop("type.deeper")) is None
    # index counts entities of the same vendor/name/major only; minor versions match.
    assert resolve(event, entity("price")) == 9.5
    assert resolve(event, entity("$.id", index=1)) == "p2"
    assert resolve(event, entity("id", index=2)) is None
    other_major = EventProperty(
        vendor=ECOM, name="snowplow_ecommerce_action", major_version=2, path="type"
    )
    assert resolve(event, other_major) is None


def test_shredded_entities_match_by_column_name() -> None:
    event = make_event(
        unstruct={"schema": None, "shred_key": f"{ECOM.replace('.', '_')}_snowplow_ecommerce_action_1",
                  "data": {"type": "remove"}},
        contexts=({"schema": None, "shred_key": "com_snowplowanalytics_snowplow_ecommerce_product_1",
                   "data": {"price": 4}},),
    )  # fmt: skip
    assert resolve(event, entity("price")) == 4
    assert resolve(event, event_prop("type")) == "remove"


def test_calculated_properties() -> None:
    event = make_event()
    country_city = [AtomicProperty(name="geo_country"), AtomicProperty(name="geo_city")]
    concat = CalculatedProperty(operation="concat", properties=country_city, separator="/")
    assert resolve(event, concat) == "GB"  # nulls skipped
    both = make_event(atomic={**make_event().atomic, "geo_city": "London"})
    assert resolve(both, concat) == "GB/London"
    money = [AtomicProperty(name="tr_total"), AtomicProperty(name="tr_tax")]
    assert resolve(event, CalculatedProperty(operation="sum", properties=money)) == 12.0
    assert resolve(event, CalculatedProperty(operation="product", properties=money)) == 20.0
    assert resolve(event, CalculatedProperty(operation="min", properties=money)) == 2
    assert resolve(event, CalculatedProperty(operation="max", properties=money)) == 10.0
    with_null = [*money, AtomicProperty(name="tr_shipping")]
    assert resolve(event, CalculatedProperty(operation="sum", properties=with_null)) is None
    first = [AtomicProperty(name="geo_city"), AtomicProperty(name="app_id")]
    assert resolve(event, CalculatedProperty(operation="coalesce", properties=first)) == "web"


@pytest.mark.parametrize(
    ("part", "expected"),
    [
        ("hour_of_day", 13),
        ("day_of_week", 4),
        ("month_of_year", 1),
        ("active_day", "2026-01-01"),
        ("active_week", "2025-12-29"),
        ("active_month", "2026-01-01"),
    ],
)
def test_date_parts_of_derived_tstamp(part: str, expected: int | str) -> None:
    prop = AtomicProperty(name="derived_tstamp", date_part=part)  # type: ignore[arg-type]
    assert resolve(make_event(), prop) == expected


def test_date_part_inputs() -> None:
    assert date_part("2026-03-08T23:30:00+02:00", "hour_of_day") == 21  # converted to UTC
    assert date_part(1_767_225_600, "active_day") == "2026-01-01"  # epoch seconds
    assert date_part(1_767_225_600_000, "day_of_week") == 4  # epoch ms
    assert date_part("not a date", "hour_of_day") is None
    assert date_part(True, "hour_of_day") is None
    assert date_part("2026-01-04", "day_of_week") == 7  # Sunday


@given(st.datetimes(min_value=__import__("datetime").datetime(1971, 1, 1)))
def test_active_week_is_the_monday_on_or_before(dt: Any) -> None:
    from datetime import date

    monday = date.fromisoformat(str(date_part(dt.isoformat(), "active_week")))
    assert monday.isoweekday() == 1 and 0 <= (dt.date() - monday).days < 7


def test_matches_events_with_wildcards() -> None:
    event = make_event()
    assert matches_events(event, [])
    assert matches_events(event, [EventSelector(vendor=ECOM)])
    assert matches_events(event, [EventSelector(name="page_view"), EventSelector(version="1-0-2")])
    assert not matches_events(
        event, [EventSelector(name="snowplow_ecommerce_action", version="1-0-0")]
    )
    assert not matches_events(event, [EventSelector(vendor="com.acme")])


def test_event_specification_id_selector() -> None:
    spec = {
        "schema": "iglu:com.snowplowanalytics.snowplow/event_specification/jsonschema/1-0-2",
        "data": {"id": "spec-1"},
    }
    event = make_event(contexts=(spec,))
    assert matches_events(event, [EventSelector(event_specification_id="spec-1")])
    assert not matches_events(event, [EventSelector(event_specification_id="spec-2")])
    assert not matches_events(make_event(), [EventSelector(event_specification_id="spec-1")])


def criteria(body: dict[str, Any]) -> Criteria:
    return Criteria.model_validate(body)


def crit(name: str, operator: str, value: Any = None) -> dict[str, Any]:
    body: dict[str, Any] = {"property": {"type": "atomic", "name": name}, "operator": operator}
    if value is not None:
        body["value"] = value
    return body


def test_matches_criteria_all_and_any() -> None:
    event = make_event()
    assert matches_criteria(event, None)
    assert matches_criteria(event, criteria({"all": [crit("page_url", "like", "%/products/%"),
                                                     crit("page_url", "is not null")]}))  # fmt: skip
    assert not matches_criteria(event, criteria({"all": [crit("page_title", "is not null")]}))
    assert matches_criteria(event, criteria({"any": [crit("app_id", "=", "ios"),
                                                     crit("app_id", "in", ["web", "ios"])]}))  # fmt: skip
    assert not matches_criteria(event, criteria({"all": [crit("app_id", "=", "web")],
                                                 "any": [crit("tr_total", ">", 100)]}))  # fmt: skip
    on_event = {"all": [{"property": {"type": "event", "vendor": ECOM, "major_version": 1,
                                      "name": "snowplow_ecommerce_action", "path": "type"},
                         "operator": "=", "value": "add_to_cart"}]}  # fmt: skip
    assert matches_criteria(event, criteria(on_event))


@pytest.mark.parametrize(
    ("actual", "operator", "expected", "result"),
    [
        (None, "is null", None, True),
        ("", "is null", None, False),
        (None, "!=", "x", False),
        (None, "not like", "%", False),
        (None, "not in", ["a"], False),
        (3, "=", 3.0, True),
        ("42", "=", 42, True),
        (42, ">=", "41.5", True),
        ("abc", "=", 1, False),
        ("abc", "!=", 1, True),
        ("abc", "<", 1, False),
        (True, "=", "true", True),
        (True, "=", 1, False),
        ("TRUE", "=", True, True),
        ("b", ">", "a", True),
        ("2026-01-02T00:00:00Z", ">", "2026-01-01T23:59:59Z", True),
        ("/checkout/step1", "like", "%checkout%", True),
        ("/Checkout", "like", "%checkout%", False),
        ("a_c", "like", "a\\_c", True),
        ("abc", "like", "a\\_c", False),
        ("abc", "like", "a_c", True),
        ("a.c", "like", "a.c", True),
        ("abc", "like", "a.c", False),
        ("line1\nline2", "like", "%line2", True),
        ("page-42", "rlike", r"\d+", True),
        ("page", "not rlike", r"\d+", True),
        (2, "in", ["1", "2"], True),
        ("web", "not in", ["ios"], True),
        ([1, 2], "=", [1, 2], True),
        ([1, 2], "<", [3], False),
        (3.5, "<=", 3.5, True),
        (3.5, "<", 3.5, False),
    ],
)
def test_compare_coercion_rules(actual: Any, operator: str, expected: Any, result: bool) -> None:
    assert compare(actual, operator, expected) is result


def test_compare_refuses_changed() -> None:
    with pytest.raises(ValueError, match="cannot be evaluated"):
        compare(1, "changed", None)


@given(st.text(alphabet="ab%_", max_size=6), st.text(alphabet="ab", max_size=6))
def test_like_agrees_with_a_reference_matcher(pattern: str, text: str) -> None:
    def reference(p: str, t: str) -> bool:
        if not p:
            return not t
        if p[0] == "%":
            return any(reference(p[1:], t[i:]) for i in range(len(t) + 1))
        return bool(t) and (p[0] == "_" or p[0] == t[0]) and reference(p[1:], t[1:])

    assert (like_pattern(pattern).fullmatch(text) is not None) is reference(pattern, text)


def test_attribute_key_values() -> None:
    event = make_event()
    assert attribute_key_value(event, BUILTIN_ATTRIBUTE_KEYS["domain_userid"]) == "duid"
    assert attribute_key_value(event, BUILTIN_ATTRIBUTE_KEYS["user"]) == "duid"
    assert attribute_key_value(event, BUILTIN_ATTRIBUTE_KEYS["user_id"]) is None  # empty
    app_key = AttributeKey.model_validate(
        {"name": "app_key", "property": {"type": "atomic", "name": "app_id"}}
    )
    assert attribute_key_value(event, app_key) == "web"
    product_key = AttributeKey(name="product_id", property=entity("id", index=1))
    assert attribute_key_value(event, product_key) == "p2"
    price_key = AttributeKey(name="price", property=entity("price"))
    assert attribute_key_value(event, price_key) == "9.5"
    tags_key = AttributeKey(name="tags", property=event_prop("meta.tags"))
    assert attribute_key_value(event, tags_key) is None  # lists are not ids


def test_attribute_key_values_on_generic_events() -> None:
    event = decode_generic_json(b'{"user_id": "u1", "email": "a@b.c"}', stream="s", now_ms=NOW)
    assert attribute_key_value(event, BUILTIN_ATTRIBUTE_KEYS["user_id"]) == "u1"
    assert attribute_key_value(event, AttributeKey(name="email")) == "a@b.c"
    assert attribute_key_value(event, BUILTIN_ATTRIBUTE_KEYS["domain_userid"]) is None


def test_mobile_client_session_keys_read_the_entity() -> None:
    session = {
        "schema": "iglu:com.snowplowanalytics.snowplow/client_session/jsonschema/1-0-2",
        "data": {"userId": "mob-u", "sessionId": "mob-s"},
    }
    event = make_event(contexts=(session,))
    assert attribute_key_value(event, BUILTIN_ATTRIBUTE_KEYS["client_session_user_id"]) == "mob-u"
    assert (
        attribute_key_value(event, BUILTIN_ATTRIBUTE_KEYS["client_session_session_id"]) == "mob-s"
    )
