"""Every Redis key template of Signalbox, in one place.

Entity keys carry a hash tag (the part in braces) built from the entity, so every key of one
entity lands in one Redis Cluster slot and can change atomically in one script call.
"""

from __future__ import annotations

import hashlib

PREFIX = "sb"

# Fields inside an entity's state hash. A field name is "<kind>:<rest>".
WATERMARK_FIELD = "wm:{topic}:{partition}"
# One field per attribute group: a JSON object {attribute name: aggregation state}. The worker
# rewrites a group's object whenever one of its attributes changed (one JSON document per group
# instead of one per attribute); a read takes the groups it needs in one HMGET.
GROUP_FIELD = "g:{group}:{version}"
PROFILE_FIELD = "p:{name}"
MEMBER_FIELD = "m:{segment_id}"
IDENTIFIERS_FIELD = "ids"
EVENT_LOG_FIELD = "l:{name}"  # JSON list of the entity's recent events for one event log

REGISTRY_VERSION = f"{PREFIX}:registry:version"
REGISTRY_KIND = f"{PREFIX}:registry:{{kind}}"
API_TOKENS = f"{PREFIX}:auth:tokens"
# Service-client API keys (id -> JSON with the key's digest) and the server's JWT signing secret.
API_KEYS = f"{PREFIX}:auth:apikeys"
JWT_SECRET = f"{PREFIX}:auth:jwt_secret"
# Lytics bookkeeping beside a registry kind: id -> JSON {"created", "updated", ...}.
REGISTRY_META = f"{PREFIX}:registry-meta:{{kind}}"
# Live workers: heartbeat (sorted set, score = ms) and the registry version each has loaded.
WORKER_HEARTBEATS = f"{PREFIX}:workers:heartbeat"
WORKER_VERSIONS = f"{PREFIX}:workers:version"


def _tag(value: str) -> str:
    # Braces inside an id would end the hash tag early; such ids are hashed instead.
    if "{" in value or "}" in value:
        return "h-" + hashlib.blake2b(value.encode(), digest_size=12).hexdigest()
    return value


def entity_state(key: str, entity_id: str) -> str:
    """The hash holding all state of one entity: watermarks, attributes, profile, membership."""
    return f"{PREFIX}:{{{_tag(key)}:{_tag(entity_id)}}}:state"


def segment_members(segment_id: str, shard: int) -> str:
    """One shard of the member index of a segment: a set of ``"<key>:<id>"`` entity strings.
    Sharded so that a huge segment spreads over Redis Cluster slots."""
    return f"{PREFIX}:seg:{{{segment_id}:{shard}}}:members"


def due_schedule(shard: int) -> str:
    """Sorted set of ``"<key>:<id>"`` entities scored by the epoch ms at which time alone may
    change one of their segments. Sharded like the events topic's partitions."""
    return f"{PREFIX}:due:{{{shard}}}"


def partition_entities(partition: int) -> str:
    """Set of every entity (``"<key>:<id>"``) owned by a partition: what a new or changed
    segment is evaluated against, without scanning the keyspace."""
    return f"{PREFIX}:entities:{{{partition}}}"


def reevaluation(partition: int) -> str:
    """Hash ``{version, cursor, done, total}``: progress of evaluating the partition's entities
    against the segments of registry ``version``."""
    return f"{PREFIX}:reeval:{{{partition}}}"


# Delivery: records a subscription could not take yet, per (subscription, transitions partition),
# and backfill progress. The pattern finds orphaned parked hashes at start-up only.
PARKED_DELIVERIES_PATTERN = f"{PREFIX}:dlv:{{*}}:parked"


def parked_deliveries(subscription_id: str, partition: int) -> str:
    """Hash: transition id -> parked record (JSON)."""
    return f"{PREFIX}:dlv:{{{subscription_id}:{partition}}}:parked"


def backfill_progress(subscription_id: str) -> str:
    """Hash: ``state``, ``shard``, ``cursor``, ``produced``, ``started_ms``, ``finished_ms``."""
    return f"{PREFIX}:dlv:{{{subscription_id}}}:backfill"


def backfill_lock(subscription_id: str) -> str:
    """String (PX): the worker running a subscription's backfill."""
    return f"{PREFIX}:dlv:{{{subscription_id}}}:backfill:lock"


def identity_link(field: str, value: str) -> str:
    """String: the profile entity (``"<key>:<id>"``) an identifier value belongs to."""
    return f"{PREFIX}:ident:{{{_tag(field)}:{_tag(value)}}}"


def watermark_field(topic: str, partition: int) -> str:
    return WATERMARK_FIELD.format(topic=topic, partition=partition)


def group_field(group: str, version: int) -> str:
    return GROUP_FIELD.format(group=group, version=version)


def profile_field(name: str) -> str:
    return PROFILE_FIELD.format(name=name)


def event_log_field(name: str) -> str:
    return EVENT_LOG_FIELD.format(name=name)


def member_field(segment_id: str) -> str:
    return MEMBER_FIELD.format(segment_id=segment_id)


def registry_meta(kind: str) -> str:
    """Hash of API metadata (creation/update times) of definitions of one kind, id -> JSON."""
    return REGISTRY_META.format(kind=kind)


def registry(kind: str) -> str:
    """Hash of definitions of one kind (``segments``, ``attribute_groups`` ...), id -> JSON."""
    return REGISTRY_KIND.format(kind=kind)
