"""Segment definitions (Lytics segment objects) as validated, frozen models."""

from __future__ import annotations

import hashlib
import re

from pydantic import BaseModel, ConfigDict, Field, field_validator

SLUG = re.compile(r"^[a-z0-9_]+$")


class SegmentDefinition(BaseModel):
    """A published audience. ``attribute_key`` names whose entities it is evaluated for."""

    model_config = ConfigDict(frozen=True, extra="ignore")

    id: str = Field(pattern=r"^[0-9a-f]{32}$")
    name: str = Field(min_length=1, max_length=256)
    slug_name: str = Field(min_length=1, max_length=128)
    segment_ql: str = Field(min_length=1, max_length=100_000)
    description: str = ""
    attribute_key: str = Field("user_id", pattern=r"^[A-Za-z0-9_]+$")
    tags: tuple[str, ...] = ()

    @field_validator("slug_name")
    @classmethod
    def _slug(cls, value: str) -> str:
        if not SLUG.match(value):
            raise ValueError("slug_name may hold lower-case letters, digits and '_' only")
        return value


def slugify(name: str) -> str:
    """Lytics auto-slugifies names: lower case, runs of other characters become '_'."""
    slug = re.sub(r"[^a-z0-9]+", "_", name.lower()).strip("_")
    return slug or "segment"


def segment_id_for(slug: str) -> str:
    """Ids are 32 hex characters; derived from the slug so a re-publish keeps its id."""
    return hashlib.blake2b(slug.encode(), digest_size=16).hexdigest()
