"""Identity stitching (Lytics §4): events that carry a known identifier join that profile.

Profiles are the entities of the first identity field (``user_id`` by default). An event with
a ``user_id`` and other identity fields (``email``) links those values to its profile; a later
event that carries only ``email`` is applied to the linked profile. Links are first-come and
never rewritten: two profiles that turn out to share an identifier are not merged (a known
limitation, said in the README).
"""

from __future__ import annotations

from processor.domain.events import Event
from processor.domain.transitions import EntityRef


def identity_values(event: Event, fields: tuple[str, ...]) -> list[tuple[str, str]]:
    """The identity fields an event carries, in priority order, as (field, value) strings."""
    found = []
    for name in fields:
        value = event.fields.get(name) if event.stream is not None else None
        if value is None:
            value = event.atomic.get(name)
        if value is not None and not isinstance(value, dict | list) and value != "":
            found.append((name, str(value)))
    return found


def links_of(profile: EntityRef, values: list[tuple[str, str]]) -> list[tuple[str, str]]:
    """The (field, value) pairs an event applied to ``profile`` links to it."""
    return [(name, value) for name, value in values if name != profile.key]
