"""Publishing definitions: the one code path the CLI (topology files) and the API share.

Everything is validated and compiled together with what is already published before it is
stored, so an INCLUDE of an unknown segment or a cycle is refused at publish, never found by a
worker. The Signals registry operations the HTTP API needs (create / update / delete with the
lifecycle rules of ``domain.lifecycle``) live in ``SignalsCatalog`` below; they raise
``DefinitionError`` (invalid, HTTP 422), ``DefinitionExists`` (400, the SDK then PUTs),
``DefinitionNotFound`` (404) and ``LifecycleError`` (409).
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any, TypeVar

import yaml
from pydantic import BaseModel, ValidationError

from processor.domain import lifecycle
from processor.domain.definitions import (
    BUILTIN_ATTRIBUTE_KEYS,
    AttributeGroup,
    AttributeKey,
    EventLog,
    RuleIntervention,
    Service,
)
from processor.domain.segments import SegmentDefinition, segment_id_for, slugify
from processor.domain.subscriptions import Subscription, with_signing_secret
from processor.domain.topology import compile_group, compile_topology
from processor.errors import DefinitionError
from processor.segmentql import SegmentQLError, parse
from processor.state.registry import Registry

M = TypeVar("M", bound=BaseModel)


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
            await publish(registry, item)
        counts[kind] = len(items)
    return counts


def _validate(model: type[M], doc: dict[str, Any]) -> M:
    try:
        return model.model_validate(doc)
    except ValidationError as exc:
        problems = "; ".join(
            f"{'.'.join(str(p) for p in e['loc']) or model.__name__}: {e['msg']}"
            for e in exc.errors()
        )
        raise DefinitionError(f"invalid {model.__name__}: {problems}") from None


class DefinitionExists(DefinitionError):
    """A create (POST) of something that exists. HTTP 400: the SDK's cue to fall back to PUT."""


class DefinitionNotFound(DefinitionError):
    """No definition by that name (and version). HTTP 404."""


GROUPS, SERVICES, INTERVENTIONS = "attribute_groups", "services", "interventions"
KEYS, EVENT_LOGS = "attribute_keys", "event_logs"


class SignalsCatalog:
    """Signals registry operations with the rules of signals-api §3.5 applied.

    Stored forms: attribute keys by name, groups and interventions by ``name:version``,
    services and event logs by name, each as ``model_dump(mode="json", exclude_none=True)``
    (event logs also carry ``is_published`` and ``has_published_version``, set by
    ``engines/publish``). Check-then-store is not atomic across API replicas: two concurrent
    creates of one name both succeed, the later one wins (same body from the SDK in practice).
    """

    def __init__(self, registry: Registry) -> None:
        self.registry = registry

    # -- reads -----------------------------------------------------------------------------

    async def groups(self) -> list[AttributeGroup]:
        return [
            AttributeGroup.model_validate(d) for d in (await self.registry.all(GROUPS)).values()
        ]

    async def group(self, name: str, version: int | None = None) -> AttributeGroup:
        """One version, or the latest (highest) version when ``version`` is None."""
        if version is not None:
            doc = await self.registry.get(GROUPS, group_id(name, version))
            if doc is None:
                raise DefinitionNotFound(f"attribute group {name} version {version} not found")
            return AttributeGroup.model_validate(doc)
        versions = [g for g in await self.groups() if g.name == name]
        if not versions:
            raise DefinitionNotFound(f"attribute group {name} not found")
        return max(versions, key=lambda g: g.version)

    async def services(self) -> list[Service]:
        return [Service.model_validate(d) for d in (await self.registry.all(SERVICES)).values()]

    async def service(self, name: str) -> Service:
        return Service.model_validate(await self._doc(SERVICES, name, "service"))

    async def interventions(self) -> list[RuleIntervention]:
        docs = (await self.registry.all(INTERVENTIONS)).values()
        return sorted(
            (RuleIntervention.model_validate(d) for d in docs), key=lambda i: (i.name, i.version)
        )

    async def intervention(self, name: str, version: int | None = None) -> RuleIntervention:
        if version:
            doc = await self._doc(INTERVENTIONS, group_id(name, version), "intervention")
            return RuleIntervention.model_validate(doc)
        versions = [i for i in await self.interventions() if i.name == name]
        if not versions:
            raise DefinitionNotFound(f"intervention {name} not found")
        return max(versions, key=lambda i: i.version)

    async def attribute_keys(self) -> list[AttributeKey]:
        stored = [AttributeKey.model_validate(d) for d in (await self.registry.all(KEYS)).values()]
        names = {k.name for k in stored}
        return [*(k for k in BUILTIN_ATTRIBUTE_KEYS.values() if k.name not in names), *stored]

    async def attribute_key(self, name: str) -> AttributeKey:
        doc = await self.registry.get(KEYS, name)
        if doc is not None:
            return AttributeKey.model_validate(doc)
        if name in BUILTIN_ATTRIBUTE_KEYS:
            return BUILTIN_ATTRIBUTE_KEYS[name]
        raise DefinitionNotFound(f"attribute key {name} not found")

    async def event_log(self, name: str) -> dict[str, Any]:
        """The stored event log: its wire form plus ``is_published``/``has_published_version``."""
        return await self._doc(EVENT_LOGS, name, "event log")

    async def _doc(self, kind: str, item_id: str, label: str) -> dict[str, Any]:
        doc = await self.registry.get(kind, item_id)
        if doc is None:
            raise DefinitionNotFound(f"{label} {item_id.replace(':', ' version ')} not found")
        return doc

    # -- attribute keys --------------------------------------------------------------------

    async def put_attribute_key(
        self, doc: dict[str, Any], *, create: bool, name: str | None = None
    ) -> AttributeKey:
        key = _validate(AttributeKey, doc)
        _same_name(name, key.name)
        exists = (
            key.name in BUILTIN_ATTRIBUTE_KEYS
            or await self.registry.get(KEYS, key.name) is not None
        )
        if create and exists:
            raise DefinitionExists(f"attribute key {key.name} already exists")
        if key.name in BUILTIN_ATTRIBUTE_KEYS:  # built-ins are served, never stored
            return BUILTIN_ATTRIBUTE_KEYS[key.name].model_copy(
                update={"is_published": key.is_published}
            )
        await self.registry.put(KEYS, key.name, _stored(key))
        return key

    async def delete_attribute_key(self, name: str) -> None:
        if name in BUILTIN_ATTRIBUTE_KEYS:
            raise lifecycle.LifecycleError(
                f"attribute key {name} is built in and cannot be deleted"
            )
        lifecycle.check_unpublished(
            "attribute key", name, await self._doc(KEYS, name, "attribute key")
        )
        lifecycle.check_key_delete(name, await self.groups())
        await self.registry.delete(KEYS, name)

    # -- attribute groups ------------------------------------------------------------------

    async def put_group(
        self,
        doc: dict[str, Any],
        *,
        create: bool,
        name: str | None = None,
        version: int | None = None,
    ) -> AttributeGroup:
        group = _validate(AttributeGroup, doc)
        _same_name(name, group.name, version, group.version)
        item_id = group_id(group.name, group.version)
        stored = await self.registry.get(GROUPS, item_id)
        if create and stored is not None:
            raise DefinitionExists(
                f"attribute group {group.name} version {group.version} already exists"
            )
        await self._check_group_key(group)
        try:
            compile_group(group)
        except (ValueError, DefinitionError) as exc:
            raise DefinitionError(f"invalid AttributeGroup: {exc}") from None
        incoming = _stored(group)
        lifecycle.check_group_update(stored, incoming)
        unpublishing = bool(stored and stored.get("is_published")) and not group.is_published
        if unpublishing:
            lifecycle.check_group_unpublish(group.name, group.version, await self.services())
        await self.registry.put(GROUPS, item_id, incoming)
        if unpublishing:
            await self._unpublish_dependents(group.name, group.version)
        return group

    async def delete_group(self, name: str, version: int) -> None:
        group = await self.group(name, version)
        lifecycle.check_group_delete(group, await self.services())
        await self.registry.delete(GROUPS, group_id(name, version))
        await self._unpublish_dependents(name, version)

    async def _check_group_key(self, group: AttributeGroup) -> None:
        key = group.attribute_key
        if key.property is not None or key.external_column is not None:
            return  # a full custom key travels inline (§5): nothing to resolve
        if (
            key.name not in BUILTIN_ATTRIBUTE_KEYS
            and await self.registry.get(KEYS, key.name) is None
        ):
            raise DefinitionError(
                f"unknown attribute key {key.name!r}: publish it first or send its property inline"
            )

    async def _unpublish_dependents(self, name: str, version: int) -> None:
        affected = lifecycle.interventions_to_unpublish(
            name, version, await self.groups(), await self.interventions()
        )
        for intervention in affected:
            off = intervention.model_copy(update={"is_published": False})
            await self.registry.put(INTERVENTIONS, group_id(off.name, off.version), _stored(off))

    # -- services --------------------------------------------------------------------------

    async def put_service(
        self, doc: dict[str, Any], *, create: bool, name: str | None = None
    ) -> Service:
        service = _validate(Service, doc)
        _same_name(name, service.name)
        if create and await self.registry.get(SERVICES, service.name) is not None:
            raise DefinitionExists(f"service {service.name} already exists")
        stored = await self.registry.all(GROUPS)
        for link in service.attribute_groups:
            group = stored.get(group_id(link.name, link.version))
            if group is None:
                raise DefinitionError(
                    f"service {service.name}: unknown attribute group {link.name} version {link.version}"
                )
            if service.is_published and not group.get("is_published"):
                raise DefinitionError(
                    f"service {service.name}: attribute group {link.name} version {link.version} is not published"
                )
        await self.registry.put(SERVICES, service.name, _stored(service))
        return service

    async def delete_service(self, name: str) -> None:
        await self._doc(SERVICES, name, "service")
        await self.registry.delete(SERVICES, name)

    # -- interventions ---------------------------------------------------------------------

    async def put_intervention(
        self,
        doc: dict[str, Any],
        *,
        create: bool,
        name: str | None = None,
        version: int | None = None,
    ) -> RuleIntervention:
        intervention = _validate(RuleIntervention, doc)
        _same_name(name, intervention.name, version, intervention.version)
        item_id = group_id(intervention.name, intervention.version)
        if create and await self.registry.get(INTERVENTIONS, item_id) is not None:
            raise DefinitionExists(
                f"intervention {intervention.name} version {intervention.version} already exists"
            )
        if intervention.is_published:
            published = [g for g in await self.groups() if g.is_published]
            for group_name, attribute in intervention.referenced_attributes():
                if not any(
                    g.name == group_name and attribute in {a.name for a in g.attributes or ()}
                    for g in published
                ):
                    raise DefinitionError(
                        f"intervention {intervention.name}: no published attribute group {group_name} "
                        f"has attribute {attribute}"
                    )
        await self.registry.put(INTERVENTIONS, item_id, _stored(intervention))
        return intervention

    async def delete_intervention(self, name: str, version: int) -> None:
        doc = await self._doc(INTERVENTIONS, group_id(name, version), "intervention")
        lifecycle.check_unpublished("intervention", f"{name} version {version}", doc)
        await self.registry.delete(INTERVENTIONS, group_id(name, version))

    # -- event logs ------------------------------------------------------------------------

    async def put_event_log(
        self, doc: dict[str, Any], *, create: bool, name: str | None = None
    ) -> EventLog:
        """Store a draft; whether it is live is changed only by ``set_event_logs_published``."""
        event_log = _validate(EventLog, doc)
        _same_name(name, event_log.name)
        stored = await self.registry.get(EVENT_LOGS, event_log.name)
        if create and stored is not None:
            raise DefinitionExists(f"event log {event_log.name} already exists")
        flags = {k: bool((stored or {}).get(k)) for k in ("is_published", "has_published_version")}
        await self.registry.put(EVENT_LOGS, event_log.name, _stored(event_log) | flags)
        return event_log

    async def set_event_logs_published(self, names: list[str], published: bool) -> int:
        """Promote (or withdraw) event logs to the engines; return how many changed."""
        changed = 0
        for name in names:
            doc = await self.event_log(name)
            if bool(doc.get("is_published")) == published:
                continue
            doc = doc | {"is_published": published}
            if published:
                doc["has_published_version"] = True
            await self.registry.put(EVENT_LOGS, name, doc)
            changed += 1
        return changed

    async def delete_event_log(self, name: str) -> None:
        lifecycle.check_unpublished("event log", name, await self.event_log(name))
        await self.registry.delete(EVENT_LOGS, name)


def _stored(model: Any) -> dict[str, Any]:
    return dict(model.model_dump(mode="json", exclude_none=True))


def _same_name(
    path_name: str | None, name: str, path_version: int | None = None, version: int | None = None
) -> None:
    """A PUT's path must name what its body defines."""
    if path_name is not None and path_name != name:
        raise DefinitionError(f"the path names {path_name!r} but the body defines {name!r}")
    if path_version is not None and path_version != version:
        raise DefinitionError(
            f"the path names version {path_version} but the body defines version {version}"
        )
