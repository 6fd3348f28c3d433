"""Publishing definitions: the one code path the CLI (topology files) and the API share.

Everything is validated and compiled together with what is already published before it is
stored, so an INCLUDE of an unknown segment or a cycle is refused at publish, never found by a
worker.
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any

import yaml
from pydantic import ValidationError

from processor.domain.definitions import AttributeGroup, AttributeKey
from processor.domain.segments import SegmentDefinition, segment_id_for, slugify
from processor.domain.subscriptions import Subscription, with_signing_secret
from processor.domain.topology import compile_topology
from processor.errors import DefinitionError
from processor.segmentql import SegmentQLError, parse
from processor.state.registry import Registry


def group_id(name: str, version: int) -> str:
    return f"{name}:{version}"


async def publish_attribute_key(registry: Registry, doc: dict[str, Any]) -> AttributeKey:
    key = _validate(AttributeKey, doc)
    await registry.put("attribute_keys", key.name, key.model_dump(mode="json", exclude_none=True))
    return key


async def publish_attribute_group(registry: Registry, doc: dict[str, Any]) -> AttributeGroup:
    group = _validate(AttributeGroup, doc)
    await registry.put(
        "attribute_groups",
        group_id(group.name, group.version),
        group.model_dump(mode="json", exclude_none=True),
    )
    return group


async def publish_segment(registry: Registry, doc: dict[str, Any]) -> SegmentDefinition:
    """Validate SegmentQL and INCLUDE references against the published segments, then store."""
    doc = dict(doc)
    ql = str(doc.get("segment_ql", ""))
    try:
        statement = parse(ql)
    except SegmentQLError as exc:
        raise DefinitionError(f"invalid SegmentQL: {exc}") from None
    name = doc.get("name") or statement.alias or doc.get("slug_name")
    if not name:
        raise DefinitionError("a segment needs a name, a slug_name or an ALIAS")
    doc.setdefault("name", name)
    doc.setdefault("slug_name", statement.alias or slugify(str(name)))
    doc.setdefault("id", segment_id_for(str(doc["slug_name"])))
    segment = _validate(SegmentDefinition, doc)
    others = [
        SegmentDefinition.model_validate(d)
        for sid, d in (await registry.all("segments")).items()
        if sid != segment.id
    ]
    compile_topology(0, [], [*others, segment])  # raises on unknown INCLUDE or a cycle
    await registry.put("segments", segment.id, segment.model_dump(mode="json"))
    return segment


async def publish_subscription(registry: Registry, doc: dict[str, Any]) -> Subscription:
    """Store a subscription; one without a signing secret gets a fresh random one."""
    subscription = with_signing_secret(_validate(Subscription, doc), os.urandom(32))
    await registry.put(
        "subscriptions", subscription.id, subscription.model_dump(mode="json", exclude_none=True)
    )
    return subscription


async def publish_file(registry: Registry, path: Path) -> dict[str, int]:
    """Publish a topology YAML file: attribute_keys, attribute_groups, segments, subscriptions."""
    try:
        doc = yaml.safe_load(path.read_text()) or {}
    except yaml.YAMLError as exc:
        raise DefinitionError(f"{path}: not valid YAML: {exc}") from None
    if not isinstance(doc, dict):
        raise DefinitionError(f"{path}: expected a mapping at the top level")
    counts = {}
    for kind, publish in (
        ("attribute_keys", publish_attribute_key),
        ("attribute_groups", publish_attribute_group),
        ("segments", publish_segment),
        ("subscriptions", publish_subscription),
    ):
        items = doc.get(kind) or []
        for item in items:
            await publish(registry, item)  # type: ignore[operator]
        counts[kind] = len(items)
    return counts


def _validate(model: Any, doc: dict[str, Any]) -> Any:
    try:
        return model.model_validate(doc)
    except ValidationError as exc:
        problems = "; ".join(
            f"{'.'.join(str(p) for p in e['loc']) or model.__name__}: {e['msg']}"
            for e in exc.errors()
        )
        raise DefinitionError(f"invalid {model.__name__}: {problems}") from None
