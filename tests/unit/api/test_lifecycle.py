"""The pure lifecycle rules of signals-api §3.5 (processor.domain.lifecycle)."""

from __future__ import annotations

from typing import Any

import pytest

from processor.domain import lifecycle
from processor.domain.definitions import AttributeGroup, RuleIntervention, Service
from processor.domain.lifecycle import LifecycleError


def group(version: int = 1, published: bool = True, attrs: tuple[str, ...] = ("views",)) -> AttributeGroup:
    return AttributeGroup.model_validate({
        "name": "user_stats", "version": version, "owner": "me@example.com",
        "is_published": published, "attribute_key": {"name": "domain_userid"},
        "attributes": [{"name": a, "type": "int32", "events": [], "aggregation": "counter"} for a in attrs],
    })  # fmt: skip


def service(version: int = 1, published: bool = True) -> Service:
    return Service.model_validate({
        "name": "svc", "owner": "me@example.com", "is_published": published,
        "attribute_groups": [{"name": "user_stats", "version": version}],
    })  # fmt: skip


def intervention(attribute: str = "views", published: bool = True, **extra: Any) -> RuleIntervention:
    return RuleIntervention.model_validate({
        "name": "hello", "owner": "me@example.com", "is_published": published,
        "criteria": {"attribute": f"user_stats:{attribute}", "operator": ">=", "value": 3}, **extra,
    })  # fmt: skip


def stored(g: AttributeGroup) -> dict[str, Any]:
    return g.model_dump(mode="json", exclude_none=True)


def test_published_version_may_only_flip_is_published() -> None:
    current = stored(group())
    lifecycle.check_group_update(current, stored(group(published=False)))  # the SDK's unpublish
    lifecycle.check_group_update(current, stored(group()))  # idempotent re-publish
    with pytest.raises(LifecycleError, match="immutable"):
        lifecycle.check_group_update(current, stored(group(attrs=("views", "clicks"))))


def test_unpublished_version_and_new_versions_may_change() -> None:
    lifecycle.check_group_update(stored(group(published=False)), stored(group(attrs=("clicks",))))
    lifecycle.check_group_update(None, stored(group(version=2, attrs=("clicks",))))


def test_inline_key_flag_is_not_a_definition_change() -> None:
    a = stored(group())
    b = {**a, "attribute_key": {**a["attribute_key"], "is_published": True}}
    assert not lifecycle.definition_changed(a, b)


def test_published_service_blocks_unpublish_a_draft_one_does_not() -> None:
    with pytest.raises(LifecycleError, match="svc"):
        lifecycle.check_group_unpublish("user_stats", 1, [service()])
    lifecycle.check_group_unpublish("user_stats", 1, [service(published=False)])
    lifecycle.check_group_unpublish("user_stats", 2, [service(version=1)])


def test_delete_needs_unpublish_and_no_service() -> None:
    with pytest.raises(LifecycleError, match="unpublish it first"):
        lifecycle.check_group_delete(group(), [])
    with pytest.raises(LifecycleError, match="svc"):
        lifecycle.check_group_delete(group(published=False), [service(published=False)])
    lifecycle.check_group_delete(group(published=False), [service(version=2)])


def test_check_unpublished_and_key_use() -> None:
    with pytest.raises(LifecycleError):
        lifecycle.check_unpublished("event log", "ctx", {"is_published": True})
    lifecycle.check_unpublished("event log", "ctx", {"is_published": False})
    with pytest.raises(LifecycleError, match="user_stats:1"):
        lifecycle.check_key_delete("domain_userid", [group()])
    lifecycle.check_key_delete("app_key", [group()])


def test_unpublishing_the_only_provider_unpublishes_the_intervention() -> None:
    after = [group(published=False)]
    affected = lifecycle.interventions_to_unpublish("user_stats", 1, after, [intervention()])
    assert [i.name for i in affected] == ["hello"]


def test_another_published_version_keeps_the_intervention_alive() -> None:
    after = [group(version=1, published=False), group(version=2)]
    assert lifecycle.interventions_to_unpublish("user_stats", 1, after, [intervention()]) == []
    # ... unless v2 dropped the attribute the criteria read
    after = [group(version=1, published=False), group(version=2, attrs=("clicks",))]
    assert len(lifecycle.interventions_to_unpublish("user_stats", 1, after, [intervention()])) == 1


def test_payload_pin_and_unpublished_interventions() -> None:
    pinned = intervention(
        attribute="views", payload_attribute_groups=[{"name": "user_stats", "version": 1}]
    )
    after = [group(version=1, published=False), group(version=2)]
    assert lifecycle.interventions_to_unpublish("user_stats", 1, after, [pinned]) == [pinned]
    draft = intervention(published=False)
    assert lifecycle.interventions_to_unpublish("user_stats", 1, [], [draft]) == []
    other = RuleIntervention.model_validate({
        "name": "other", "owner": "me@example.com", "is_published": True,
        "criteria": {"attribute": "cart:total", "operator": ">", "value": 1},
    })  # fmt: skip
    assert lifecycle.interventions_to_unpublish("user_stats", 1, [], [other]) == []
