"""The Signals data model accepts the SDK's captured bodies and rejects invalid definitions."""

from __future__ import annotations

import copy
from datetime import timedelta
from typing import Any

import pytest
from hypothesis import given
from hypothesis import strategies as st
from pydantic import ValidationError

from processor.domain.definitions import (
    BUILTIN_ATTRIBUTE_KEYS,
    Attribute,
    AttributeGroup,
    AttributeKey,
    EventLog,
    InterventionCriteriaAll,
    InterventionCriteriaNone,
    InterventionCriterion,
    InterventionInstance,
    RuleIntervention,
    Service,
    attribute_group_response,
    resolve_attribute_key,
    to_wire,
)
from processor.domain.durations import format_duration, parse_duration
from processor.domain.properties import parse_path

PV = {"name": "page_view", "vendor": "com.snowplowanalytics.snowplow", "version": "1-0-0"}
ECOM = "com.snowplowanalytics.snowplow.ecommerce"

# The stream-group body captured from snowplow-signals 0.4.10 (spec §1.2).
GROUP: dict[str, Any] = {
    "name": "user_stats",
    "version": 1,
    "attribute_key": {
        "name": "domain_userid",
        "description": "The domain user ID for the user.",
        "key": "domain_userid",
        "is_published": False,
    },
    "ttl": "P90D",
    "online": True,
    "offline": False,
    "owner": "me@example.com",
    "is_published": True,
    "attributes": [
        {"name": "page_views_7d", "type": "int32", "events": [PV], "aggregation": "counter",
         "period": "P7D", "default_value": 0},
        {"name": "last_url", "type": "string", "events": [], "aggregation": "last",
         "property": {"type": "atomic", "name": "page_url"},
         "criteria": {"all": [
             {"property": {"type": "atomic", "name": "page_url"}, "operator": "like", "value": "%/prod%"},
             {"property": {"type": "atomic", "name": "page_title"}, "operator": "is not null"}]}},
        {"name": "cart_total", "type": "double",
         "events": [{"name": "snowplow_ecommerce_action", "vendor": ECOM, "version": "1-0-2"}],
         "aggregation": "sum",
         "property": {"vendor": ECOM, "name": "product", "major_version": 1, "path": "price",
                      "type": "entity", "index": 0},
         "criteria": {"any": [{"property": {"vendor": ECOM, "name": "snowplow_ecommerce_action",
                                            "major_version": 1, "path": "type", "type": "event"},
                               "operator": "=", "value": "add_to_cart"}]},
         "ttl": "P30D"},
        {"name": "mins_since_pv", "type": "double", "events": [PV],
         "aggregation": "time_since_last", "time_unit": "min"},
        {"name": "peak_hour", "type": "int32", "events": [PV], "aggregation": "most_frequent",
         "property": {"type": "atomic", "name": "derived_tstamp", "date_part": "hour_of_day"}},
        {"name": "full_loc", "type": "string", "events": [], "aggregation": "last",
         "property": {"type": "calculated", "operation": "concat", "separator": "/",
                      "properties": [{"type": "atomic", "name": "geo_country"},
                                     {"type": "atomic", "name": "geo_city"}]}},
    ],
}  # fmt: skip

INTERVENTION: dict[str, Any] = {
    "name": "hello",
    "version": 1,
    "owner": "me@example.com",
    "is_published": True,
    "criteria": {"all": [
        {"attribute": "user_stats:page_views_7d", "operator": ">=", "value": 3},
        {"none": [{"attribute": "user_stats:last_url", "operator": "like", "value": "%checkout%"}]},
    ]},
    "target_attribute_keys": [{"name": "domain_userid"}],
    "payload_attribute_groups": [{"name": "user_stats", "version": 1}],
}  # fmt: skip

EVENT_LOG: dict[str, Any] = {
    "name": "ctx",
    "version": 1,
    "prompt": "be nice",
    "attribute_key": {"name": "domain_sessionid"},
    "events": [{"event": PV, "properties": [
        {"type": "atomic", "name": "page_url"},
        {"vendor": "com.acme", "name": "x", "major_version": 1, "path": "$.foo", "type": "event",
         "output_name": "foo"}]}],
    "max_events": 50,
    "max_age_seconds": 1800,
}  # fmt: skip


def attribute(**fields: Any) -> dict[str, Any]:
    base: dict[str, Any] = {"name": "a", "type": "int32", "events": [], "aggregation": "counter"}
    base.update(fields)
    return base


def error_of(model: Any, body: dict[str, Any]) -> str:
    with pytest.raises(ValidationError) as info:
        model.model_validate(body)
    return str(info.value)


@pytest.mark.parametrize(
    ("model", "body"),
    [(AttributeGroup, GROUP), (RuleIntervention, INTERVENTION), (EventLog, EVENT_LOG)],
)
def test_captured_sdk_bodies_round_trip_unchanged(model: Any, body: dict[str, Any]) -> None:
    assert to_wire(model.model_validate(body)) == body


def test_models_are_frozen_and_extra_sdk_fields_are_ignored() -> None:
    body = {**INTERVENTION, "target_agents": ["x"], "script_uri": "s3://x"}
    intervention = RuleIntervention.model_validate(body)
    assert "target_agents" not in to_wire(intervention)
    with pytest.raises(ValidationError):
        intervention.name = "other"  # type: ignore[misc]


def test_external_batch_group_accepts_schema_and_schema_underscore() -> None:
    body = {
        "name": "wh_group", "version": 1, "is_published": True,
        "attribute_key": {"name": "CUSTOMER_ID", "external_column": "CUSTOMER_ID"},
        "batch_source": {"name": "src", "timestamp_field": "UPDATED_AT", "database": "DB",
                         "schema": "SC", "table": "TB"},
        "online": True, "offline": True, "owner": "me@example.com",
        "fields": [{"name": "LTV", "type": "double"}],
        "backfill_since_tstamp": "2026-01-01T00:00:00Z",
    }  # fmt: skip
    group = AttributeGroup.model_validate(body)
    assert group.batch_source is not None and group.batch_source.schema_ == "SC"
    assert to_wire(group)["batch_source"]["schema"] == "SC"
    body["batch_source"] = {**body["batch_source"], "schema_": "SC2"}
    del body["batch_source"]["schema"]
    assert AttributeGroup.model_validate(body).batch_source.schema_ == "SC2"  # type: ignore[union-attr]


def test_group_response_adds_the_output_fields_the_sdk_requires() -> None:
    body = attribute_group_response(AttributeGroup.model_validate(GROUP))
    assert body["attribute_key"]["blobl_path"] == "domain_userid"
    assert body["attribute_key_or_name"] == "domain_userid"
    assert (body["full_name"], body["feast_name"]) == ("user_stats_1", "user_stats_v1")
    assert body["stream_source_name"] == "events"
    assert body["attribute_group_or_attribute_key_ttl"] == "P90D"
    assert body["attributes"][1]["property"] == {"type": "atomic", "name": "page_url"}


def test_group_response_for_entity_keyed_offline_group() -> None:
    key = {"property": {"type": "entity", "vendor": "com.acme", "name": "user", "major_version": 1,
                        "path": "$.profile.id", "index": 1}}  # fmt: skip
    group = AttributeGroup(name="g", attribute_key=AttributeKey.model_validate(key), offline=True)
    body = attribute_group_response(group)
    assert body["attribute_key"]["name"] == "id"  # derived from the path tail
    assert body["attribute_key"]["blobl_path"] == "contexts_com_acme_user_1[1].profile.id"
    assert body["stream_source_name"] is None
    assert body["attribute_group_or_attribute_key_ttl"] is None


def test_attribute_key_name_is_derived_like_the_sdk() -> None:
    assert AttributeKey.model_validate({"external_column": "CUST"}).name == "CUST"
    atomic = AttributeKey.model_validate({"property": {"type": "atomic", "name": "app_id"}})
    assert atomic.name == "app_id"


@pytest.mark.parametrize(
    ("body", "message"),
    [
        ({"name": "k", "external_column": "other"}, "external_column must equal name"),
        ({"name": "k", "property": {"type": "atomic", "name": "derived_tstamp",
                                    "date_part": "hour_of_day"}}, "cannot have date_part"),
        ({"name": "bad name"}, "String should match pattern"),
        ({"name": "x" * 129}, "at most 128"),
        ({"name": "k", "description": "nul\x00"}, "String should match pattern"),
        ({"name": "k", "property": {"type": "atomic", "name": "nope"}}, "unknown atomic property"),
        ({"name": "k", "ttl": "P0D"}, "duration must be positive"),
    ],
)  # fmt: skip
def test_attribute_key_rejections(body: dict[str, Any], message: str) -> None:
    assert message in error_of(AttributeKey, body)


def test_builtin_keys_and_deprecated_aliases() -> None:
    assert {"domain_userid", "domain_sessionid", "user_id", "network_userid"} <= set(
        BUILTIN_ATTRIBUTE_KEYS
    )
    assert BUILTIN_ATTRIBUTE_KEYS["user"].source_field() == "domain_userid"
    assert BUILTIN_ATTRIBUTE_KEYS["session"].source_field() == "domain_sessionid"
    inline = resolve_attribute_key(AttributeKey(name="user_id", is_published=True))
    assert inline.description and inline.is_published
    custom = AttributeKey.model_validate({"name": "user_id", "external_column": "user_id"})
    assert resolve_attribute_key(custom) is custom


@pytest.mark.parametrize(
    ("fields", "message"),
    [
        ({"aggregation": "sum"}, "aggregation requires a property to be set"),
        ({"aggregation": "unique_list", "type": "string_list"}, "aggregation requires a property"),
        ({"aggregation": "time_since_last", "type": "double"}, "requires time_unit"),
        ({"aggregation": "time_since_first", "time_unit": "h"}, "type must be float or double"),
        ({"aggregation": "time_since_last", "type": "double", "time_unit": "s",
          "property": {"type": "atomic", "name": "collector_tstamp"}}, "always uses derived_tstamp"),
        ({"time_unit": "s"}, "time_unit is only valid for time_since"),
        ({"time_unit": "weeks"}, "Input should be 's', 'min', 'h' or 'd'"),
        ({"period": "P7D", "ttl": "P1D"}, "ttl cannot be set together with period"),
        ({"period": "-P1D"}, "duration must be positive"),
        ({"aggregation": "median"}, "Input should be 'counter'"),
        ({"aggregation": "sum", "property": {"type": "atomic", "name": "derived_tstamp",
                                             "date_part": "hour_of_day"}}, "date_part is only allowed with"),
        ({"aggregation": "last", "property": {"type": "atomic", "name": "page_url",
                                              "date_part": "active_day"}, "type": "string"},
         "requires a date-time property"),
        ({"aggregation": "last", "type": "int32", "property": {
            "type": "atomic", "name": "derived_tstamp", "date_part": "active_day"}}, "produces string"),
        ({"aggregation": "unique_list", "type": "string", "property": {
            "type": "atomic", "name": "derived_tstamp", "date_part": "active_week"}}, "produces string_list"),
        ({"events": [{"name": "page view"}]}, "String should match pattern"),
        ({"events": [{"version": "1.0.0"}]}, "String should match pattern"),
        ({"events": [{"name": "x", "event_specification_id": "abc"}]}, "cannot be combined"),
        ({"aggregation": "last", "property": {"type": "event", "vendor": "v", "name": "n",
                                              "major_version": 0, "path": "a"}}, "greater than 0"),
        ({"aggregation": "last", "property": {"type": "event", "vendor": "v", "name": "n",
                                              "major_version": 1, "path": "$"}}, "String should match"),
        ({"aggregation": "last", "property": {"type": "entity", "vendor": "v", "name": "n",
                                              "major_version": 1, "path": "a['b']"}}, "String should match"),
        ({"aggregation": "last", "property": {"type": "entity", "vendor": "v", "name": "n",
                                              "major_version": 1, "path": "a[x]", "index": -1}}, "unsupported path"),
        ({"aggregation": "last", "property": {"type": "calculated", "operation": "sum",
                                              "properties": [{"type": "atomic", "name": "tr_total"}]}},
         "needs at least 2 properties"),
        ({"aggregation": "last", "property": {"type": "calculated", "operation": "max", "separator": "-",
                                              "properties": [{"type": "atomic", "name": "tr_tax"},
                                                             {"type": "atomic", "name": "tr_total"}]}},
         "separator is only valid for the concat"),
        ({"aggregation": "last", "property": {"type": "calculated", "operation": "coalesce",
                                              "properties": [{"type": "calculated", "operation": "coalesce",
                                                              "properties": []}]}}, "does not match any of the expected tags"),
        ({"criteria": {}}, "criteria need 'all' or 'any'"),
        ({"criteria": {"all": [{"property": {"type": "atomic", "name": "app_id"}, "operator": "in",
                                "value": "web"}]}}, "requires a list value"),
        ({"criteria": {"all": [{"property": {"type": "atomic", "name": "app_id"}, "operator": "like",
                                "value": 3}]}}, "requires a string value"),
        ({"criteria": {"all": [{"property": {"type": "atomic", "name": "app_id"}, "operator": "="}]}},
         "requires a single value"),
        ({"criteria": {"all": [{"property": {"type": "atomic", "name": "app_id"},
                                "operator": "is null", "value": "x"}]}}, "takes no value"),
        ({"criteria": {"all": [{"property": {"type": "atomic", "name": "app_id"},
                                "operator": "changed"}]}}, "Input should be '='"),
    ],
)  # fmt: skip
def test_attribute_rejections(fields: dict[str, Any], message: str) -> None:
    assert message in error_of(Attribute, attribute(**fields))


def test_counter_ignores_property_and_time_since_accepts_derived_tstamp() -> None:
    counter = Attribute.model_validate(attribute(property={"type": "atomic", "name": "app_id"}))
    assert counter.property is not None
    since = Attribute.model_validate(attribute(
        aggregation="time_since_first", type="float", time_unit="d",
        property={"type": "atomic", "name": "derived_tstamp"}))  # fmt: skip
    assert since.time_unit == "d"


def test_date_part_with_category_count_and_approx_count_distinct() -> None:
    prop = {"type": "atomic", "name": "derived_tstamp", "date_part": "day_of_week"}
    for aggregation, type_ in (("category_count", "dict"), ("approx_count_distinct", "int64")):
        parsed = Attribute.model_validate(
            attribute(aggregation=aggregation, type=type_, property=prop)
        )
        assert parsed.aggregation == aggregation


def test_duplicate_attribute_names_in_a_group_are_rejected() -> None:
    body = copy.deepcopy(GROUP)
    body["attributes"].append(body["attributes"][0])
    assert "duplicate attribute name 'page_views_7d'" in error_of(AttributeGroup, body)


def test_fields_need_a_batch_source() -> None:
    body = {"name": "g", "attribute_key": {"name": "user_id"},
            "fields": [{"name": "LTV", "type": "double"}]}  # fmt: skip
    assert "require a batch_source" in error_of(AttributeGroup, body)


def test_service_needs_one_to_hundred_groups() -> None:
    service = Service.model_validate(
        {"name": "svc", "attribute_groups": [{"name": "user_stats"}], "owner": "me@example.com"}
    )
    assert service.attribute_groups[0].version == 1
    assert "at least 1 item" in error_of(Service, {"name": "svc", "attribute_groups": []})
    many = [{"name": f"g{i}"} for i in range(101)]
    assert "at most 100 items" in error_of(Service, {"name": "svc", "attribute_groups": many})


def test_intervention_criteria_union_is_told_apart_by_key() -> None:
    parsed = RuleIntervention.model_validate(INTERVENTION)
    assert isinstance(parsed.criteria, InterventionCriteriaAll)
    assert isinstance(parsed.criteria.all[0], InterventionCriterion)
    assert isinstance(parsed.criteria.all[1], InterventionCriteriaNone)
    assert parsed.referenced_attributes() == [
        ("user_stats", "page_views_7d"),
        ("user_stats", "last_url"),
    ]
    single = RuleIntervention.model_validate(
        {"name": "x", "criteria": {"attribute": "g:a", "operator": "changed"}}
    )
    assert isinstance(single.criteria, InterventionCriterion) and single.version == 1


@pytest.mark.parametrize(
    ("criteria", "message"),
    [
        ({"any": [{"attribute": "g:a", "operator": "changed"}]}, "only allowed alone or inside 'all'"),
        ({"all": [{"none": [{"attribute": "g:a", "operator": "changed"}]}]}, "only allowed alone"),
        ({"all": [], "any": []}, "exactly one of 'attribute', 'all', 'any', 'none'"),
        ({"foo": 1}, "exactly one of"),
        ({"all": []}, "at least 1 item"),
        ({"attribute": "g_v1_a", "operator": "="}, "String should match pattern"),
        ({"attribute": "g:a", "operator": "rlike", "value": "(["}, "invalid regular expression"),
        ({"attribute": "g:a", "operator": "not in", "value": 3}, "requires a list value"),
        ({"attribute": "g:a", "operator": "between", "value": 3}, "Input should be '='"),
    ],
)  # fmt: skip
def test_intervention_rejections(criteria: dict[str, Any], message: str) -> None:
    assert message in error_of(RuleIntervention, {"name": "x", "criteria": criteria})


def test_changed_nested_only_under_all_is_accepted() -> None:
    criteria = {"all": [{"all": [{"attribute": "g:a", "operator": "changed"}]}]}
    assert RuleIntervention.model_validate({"name": "x", "criteria": criteria}).criteria


@pytest.mark.parametrize(
    ("change", "message"),
    [
        ({"attribute_key": {"name": "domain_userid"}}, "scoped to domain_sessionid"),
        ({"max_events": 101}, "less than or equal to 100"),
        ({"max_age_seconds": 0}, "greater than 0"),
        ({"events": []}, "at least 1 item"),
        ({"prompt": "x" * 3801}, "at most 3800"),
        ({"events": [{"event": {**PV, "major_version": 1}, "properties": [
            {"type": "atomic", "name": "page_url"}]}]}, "mutually exclusive"),
        ({"events": [{"event": PV, "properties": [
            {"type": "atomic", "name": "page_url"},
            {"type": "entity", "vendor": "v", "name": "n", "major_version": 1,
             "path": "$.page_url"}]}]}, "share output key 'page_url'"),
    ],
)  # fmt: skip
def test_event_log_rejections(change: dict[str, Any], message: str) -> None:
    assert message in error_of(EventLog, {**EVENT_LOG, **change})


def test_intervention_instance_needs_string_attribute_values() -> None:
    ok = InterventionInstance.model_validate(
        {"name": "n", "version": "1", "attributes": {"a": "3"}}
    )
    assert ok.version == 1
    assert "Input should be a valid string" in error_of(
        InterventionInstance, {"name": "n", "version": 1, "attributes": {"a": 3}}
    )


@pytest.mark.parametrize(
    ("text", "delta"),
    [
        ("P7D", timedelta(days=7)),
        ("PT10M", timedelta(minutes=10)),
        ("PT1H30M", timedelta(hours=1, minutes=30)),
        ("PT0.5S", timedelta(seconds=0.5)),
        ("P1Y35D", timedelta(days=400)),
        ("P1M", timedelta(days=30)),
        ("P1W", timedelta(days=7)),
    ],
)
def test_parse_duration(text: str, delta: timedelta) -> None:
    assert parse_duration(text) == delta


@pytest.mark.parametrize("text", ["", "7d", "01:00:00", "P", "PT", "P1X", "3600"])
def test_parse_duration_rejects_non_iso(text: str) -> None:
    with pytest.raises(ValueError, match="invalid ISO-8601 duration"):
        parse_duration(text)


def test_format_duration_matches_pydantic_dumps() -> None:
    assert format_duration(timedelta(days=400)) == "P1Y35D"
    assert format_duration(timedelta(hours=1, minutes=30)) == "PT1H30M"
    assert format_duration(timedelta(seconds=0.5)) == "PT0.5S"
    assert format_duration(timedelta(days=30)) == "P30D"


@given(st.timedeltas(min_value=timedelta(microseconds=1), max_value=timedelta(days=5000)))
def test_durations_round_trip(delta: timedelta) -> None:
    assert parse_duration(format_duration(delta)) == delta


def test_parse_path_subset() -> None:
    assert parse_path("$.user.profile.name") == ("user", "profile", "name")
    assert parse_path("$.events[0].items[1].value") == ("events", 0, "items", 1, "value")
    assert parse_path("price") == ("price",)
    assert parse_path("items[2]") == ("items", 2)
    for bad in ("$", "a..b", "a[*]", "a[1"):
        with pytest.raises(ValueError, match="unsupported path"):
            parse_path(bad)
