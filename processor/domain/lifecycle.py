"""Lifecycle rules of Signals definitions (signals-api §3.5), as pure functions.

The HTTP layer loads what is stored, asks these functions whether a change is allowed (and what
else it implies), then stores. Nothing here does I/O. Decisions we made where the docs are
silent, each tested in ``tests/unit/api/test_lifecycle.py``:

- A published attribute-group version is immutable: a PUT may only flip ``is_published``
  (the SDK's ``unpublish`` re-sends the identical body with ``is_published: false``). An
  unpublished version may still be edited (its values would be recomputed from publish on).
- Delete needs unpublish first for attribute groups, attribute keys, interventions and event
  logs. Services are unversioned and "published as soon as created": they delete any time.
- A group version pinned by a *published* service cannot be unpublished; pinned by *any*
  service it cannot be deleted (the service would point at nothing). An unpublished service
  is a draft, so ``unpublish([svc])`` then ``unpublish([group])`` works.
- Unpublishing (or deleting) a group version unpublishes every published intervention that
  pins it in ``payload_attribute_groups`` or whose criteria read an attribute that no other
  published version of that group still provides (criteria resolve ``group:attr`` to the
  latest published version containing the attribute, §3.4).
- An attribute key cannot be deleted while a stored group is keyed on it.
"""

from __future__ import annotations

from collections.abc import Iterable
from typing import Any

from processor.domain.definitions import AttributeGroup, RuleIntervention, Service
from processor.errors import DefinitionError


class LifecycleError(DefinitionError):
    """A change the lifecycle rules refuse (HTTP 409): the definition itself is valid."""


def definition_changed(stored: dict[str, Any], incoming: dict[str, Any]) -> bool:
    """Whether two stored forms differ in anything but the ``is_published`` flags."""
    return bool(_without_flags(stored) != _without_flags(incoming))


def _without_flags(doc: Any) -> Any:
    if isinstance(doc, dict):
        return {k: _without_flags(v) for k, v in doc.items() if k != "is_published"}
    if isinstance(doc, list):
        return [_without_flags(v) for v in doc]
    return doc


def check_group_update(stored: dict[str, Any] | None, incoming: dict[str, Any]) -> None:
    """Refuse a change to the definition of a published group version (versions are immutable)."""
    if stored is not None and stored.get("is_published") and definition_changed(stored, incoming):
        name, version = incoming.get("name"), incoming.get("version", 1)
        raise LifecycleError(
            f"attribute group {name} version {version} is published and immutable; "
            "publish a new version instead (only is_published may change)"
        )


def check_group_unpublish(name: str, version: int, services: Iterable[Service]) -> None:
    """Refuse to unpublish a group version that a published service pins."""
    pinned = [s.name for s in services if s.is_published and _pins(s, name, version)]
    if pinned:
        raise LifecycleError(
            f"attribute group {name} version {version} is used by published service(s) "
            f"{', '.join(sorted(pinned))}; update or unpublish them first"
        )


def check_group_delete(group: AttributeGroup, services: Iterable[Service]) -> None:
    """Refuse to delete a published group version, or one any service pins."""
    if group.is_published:
        raise LifecycleError(
            f"attribute group {group.name} version {group.version} is published; unpublish it first"
        )
    pinned = [s.name for s in services if _pins(s, group.name, group.version)]
    if pinned:
        raise LifecycleError(
            f"attribute group {group.name} version {group.version} is used by service(s) "
            f"{', '.join(sorted(pinned))}; update or delete them first"
        )


def check_unpublished(kind: str, name: str, doc: dict[str, Any]) -> None:
    """Refuse to delete a published definition (keys, interventions, event logs)."""
    if doc.get("is_published"):
        raise LifecycleError(f"{kind} {name} is published; unpublish it first")


def check_key_delete(name: str, groups: Iterable[AttributeGroup]) -> None:
    users = sorted({f"{g.name}:{g.version}" for g in groups if g.attribute_key.name == name})
    if users:
        raise LifecycleError(
            f"attribute key {name} is used by attribute group(s) {', '.join(users)}"
        )


def interventions_to_unpublish(
    name: str,
    version: int,
    groups_after: Iterable[AttributeGroup],
    interventions: Iterable[RuleIntervention],
) -> list[RuleIntervention]:
    """Published interventions that depend on group ``name`` version ``version``, given the
    groups that stay published after it goes (``groups_after`` may include unpublished ones;
    they are ignored)."""
    provided = {
        attribute.name
        for group in groups_after
        if group.is_published and group.name == name and group.version != version
        for attribute in group.attributes or ()
    }
    out = []
    for intervention in interventions:
        if not intervention.is_published:
            continue
        pinned = any(
            link.name == name and link.version == version
            for link in intervention.payload_attribute_groups or ()
        )
        orphaned = any(
            group == name and attribute not in provided
            for group, attribute in intervention.referenced_attributes()
        )
        if pinned or orphaned:
            out.append(intervention)
    return out


def _pins(service: Service, name: str, version: int) -> bool:
    return any(link.name == name and link.version == version for link in service.attribute_groups)
