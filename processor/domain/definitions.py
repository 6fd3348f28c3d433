"""The Snowplow Signals data model (attribute keys, groups, services, interventions, event logs).

Every class validates exactly what the ``snowplow-signals`` SDK sends
(``model_dump(mode="json", exclude_none=True, by_alias=True)``) and is frozen once built, so the
rest of the engine never reads raw dicts. Unknown fields are ignored, never rejected (the SDK
adds ``is_published``, ``offline``, legacy ``target_agents``...). Rules enforced beyond types and
patterns, each with a readable message (pydantic prefixes them with "Value error, "):

- value-reading aggregations need a ``property`` ("aggregation requires a property to be set");
  ``time_since_*`` read ``derived_tstamp`` only, need ``time_unit`` and a float/double type;
  ``time_unit`` is invalid on any other aggregation; ``ttl`` cannot be combined with ``period``;
- ``date_part`` only on date-time properties, only with the aggregations in
  ``DATE_PART_AGGREGATIONS``, and the attribute type must match (extract -> int, truncate -> string);
  never on an attribute key's property;
- calculated properties: leaf properties only, 2+ of them (except ``coalesce``), ``separator``
  only with ``concat``;
- criterion operators get the value they need (lists for ``in``, strings for ``like``/``rlike``,
  nothing for ``is null``/``changed``, a scalar otherwise); ``rlike`` patterns must compile;
- intervention ``changed`` criteria only alone or under ``all`` (never inside ``any``/``none``);
- names unique within a group; ``external_column`` equals ``name``; event selectors do not mix
  ``event_specification_id`` with name/vendor/version; event logs are keyed on ``domain_sessionid``.
"""

from __future__ import annotations

from collections.abc import Iterator, Mapping
from datetime import datetime
from typing import Annotated, Any, Literal, Union

from pydantic import (
    BaseModel,
    Discriminator,
    Field,
    PositiveInt,
    StringConstraints,
    Tag,
    field_validator,
    model_validator,
)

from processor.domain.durations import PositiveDuration, format_duration
from processor.domain.events import SNOWPLOW_VENDOR, TIMESTAMP_COLUMNS, shred_key
from processor.domain.properties import (
    TRUNCATE_DATE_PARTS,
    AtomicProperty,
    CalculatedProperty,
    Criteria,
    Criterion,
    CriterionValue,
    EntityProperty,
    EventProperty,
    EventSelector,
    LeafProperty,
    Property,
    Scalar,
    check_operator_value,
    parse_path,
    to_wire,
)
from processor.domain.properties import SignalsModel as _Model

__all__ = [  # the property / criteria / selector models are re-exported from properties
    "AtomicProperty", "Attribute", "AttributeGroup", "AttributeKey", "BatchField", "BatchSource",
    "BUILTIN_ATTRIBUTE_KEYS", "CalculatedProperty", "Criteria", "Criterion", "EntityProperty",
    "EventLog", "EventProperty", "EventSelection", "EventSelector", "InterventionCriteria",
    "InterventionCriteriaAll", "InterventionCriteriaAny", "InterventionCriteriaNone",
    "InterventionCriterion", "InterventionInstance", "LinkAttributeKey", "Property",
    "RuleIntervention", "Service", "TargetAttributeKey", "VersionedLinkAttributeGroup",
    "attribute_group_response", "blobl_path", "iter_criteria", "output_key",
    "resolve_attribute_key", "to_wire",
]  # fmt: skip

Name = Annotated[str, StringConstraints(pattern=r"^[A-Za-z0-9_]+$", min_length=1, max_length=128)]
Text = Annotated[str, StringConstraints(pattern=r"^[^\x00]*$")]
Owner = Annotated[str, StringConstraints(pattern=r"^[^\x00]*$", max_length=255)]

AttributeType = Literal[
    "bytes", "string", "int32", "int64", "double", "float", "bool", "unix_timestamp", "timestamp",
    "bytes_list", "string_list", "int32_list", "int64_list", "double_list", "float_list",
    "bool_list", "unix_timestamp_list", "dict",
]  # fmt: skip
Aggregation = Literal[
    "counter", "sum", "min", "max", "mean", "first", "last", "unique_list", "most_frequent",
    "least_frequent", "category_count", "approx_count_distinct", "time_since_last",
    "time_since_first",
]  # fmt: skip
TimeUnit = Literal["s", "min", "h", "d"]
InterventionOperator = Literal[
    "=", "!=", "<", ">", "<=", ">=", "like", "not like", "rlike", "not rlike", "in", "not in",
    "is null", "is not null", "changed",
]  # fmt: skip

TIME_SINCE_AGGREGATIONS = frozenset({"time_since_last", "time_since_first"})
VALUE_AGGREGATIONS = frozenset(
    {"sum", "min", "max", "mean", "first", "last", "unique_list", "most_frequent",
     "least_frequent", "category_count", "approx_count_distinct"}
)  # fmt: skip
DATE_PART_AGGREGATIONS = frozenset(
    {"most_frequent", "least_frequent", "first", "last", "unique_list", "category_count",
     "approx_count_distinct"}
)  # fmt: skip
# Which attribute types a date_part result fits, per aggregation shape (scalar vs list).
_DATE_PART_TYPES = {
    ("extract", False): {"int32", "int64"},
    ("truncate", False): {"string"},
    ("extract", True): {"int32_list", "int64_list"},
    ("truncate", True): {"string_list"},
}


def _date_part_problem(
    attr: Attribute, prop: AtomicProperty | EventProperty | EntityProperty
) -> str | None:
    if attr.aggregation not in DATE_PART_AGGREGATIONS:
        return f"date_part is only allowed with {', '.join(sorted(DATE_PART_AGGREGATIONS))}"
    if isinstance(prop, AtomicProperty) and prop.name not in TIMESTAMP_COLUMNS:
        return f"date_part requires a date-time property; {prop.name!r} is not one"
    if attr.aggregation in ("category_count", "approx_count_distinct"):
        return None
    kind = "truncate" if prop.date_part in TRUNCATE_DATE_PARTS else "extract"
    allowed = _DATE_PART_TYPES[(kind, attr.aggregation == "unique_list")]
    if attr.type not in allowed:
        return (
            f"date_part {prop.date_part!r} produces {' or '.join(sorted(allowed))}, not {attr.type}"
        )
    return None


def _attribute_problem(attr: Attribute) -> str | None:
    prop = attr.property
    if attr.aggregation in VALUE_AGGREGATIONS and prop is None:
        return "aggregation requires a property to be set"
    if attr.aggregation in TIME_SINCE_AGGREGATIONS:
        if prop is not None and not (
            isinstance(prop, AtomicProperty)
            and prop.name == "derived_tstamp"
            and not prop.date_part
        ):
            return f"{attr.aggregation} always uses derived_tstamp; leave property unset"
        if attr.time_unit is None:
            return f"{attr.aggregation} requires time_unit (s, min, h or d)"
        if attr.type not in ("float", "double"):
            return f"{attr.aggregation} produces a float; type must be float or double"
    elif attr.time_unit is not None:
        return "time_unit is only valid for time_since_first and time_since_last"
    if attr.ttl is not None and attr.period is not None:
        return "ttl cannot be set together with period (ttl only applies to lifetime attributes)"
    if isinstance(prop, AtomicProperty | EventProperty | EntityProperty) and prop.date_part:
        return _date_part_problem(attr, prop)
    return None


class Attribute(_Model):
    """One computed attribute of a group."""

    name: Name
    description: Text | None = None
    type: AttributeType
    events: list[EventSelector]
    aggregation: Aggregation
    property: Property | None = None
    criteria: Criteria | None = None
    period: PositiveDuration | None = None
    default_value: Scalar | list[Scalar] | None = None
    time_unit: TimeUnit | None = None
    ttl: PositiveDuration | None = None

    @model_validator(mode="after")
    def _rules(self) -> Attribute:
        problem = _attribute_problem(self)
        if problem:
            raise ValueError(problem)
        return self


def _derived_key_name(data: Mapping[str, Any]) -> str | None:
    """What the SDK derives when ``name`` is omitted: external_column, atomic name, path tail."""
    if data.get("external_column"):
        return str(data["external_column"])
    prop = data.get("property")
    if isinstance(prop, Mapping):
        if prop.get("type") == "atomic" and prop.get("name"):
            return str(prop["name"])
        if isinstance(prop.get("path"), str):
            tail = [t for t in parse_path(prop["path"]) if isinstance(t, str)]
            return tail[-1] if tail else None
    return None


class AttributeKey(_Model):
    """The identifier attributes are computed against (built-in or custom)."""

    name: Name
    description: Text | None = None
    key: Name | None = None
    external_column: (
        Annotated[str, StringConstraints(pattern=r"^[^\x00]*$", max_length=128)] | None
    ) = None
    property: LeafProperty | None = None
    owner: Owner | None = None
    ttl: PositiveDuration | None = None
    is_published: bool = False

    @model_validator(mode="before")
    @classmethod
    def _derive_name(cls, data: Any) -> Any:
        if isinstance(data, Mapping) and not data.get("name"):
            derived = _derived_key_name(data)
            if derived:
                return {**data, "name": derived}
        return data

    @model_validator(mode="after")
    def _rules(self) -> AttributeKey:
        if self.property is not None and self.property.date_part is not None:
            raise ValueError("an attribute key property cannot have date_part")
        if self.external_column is not None and self.external_column != self.name:
            raise ValueError("external_column must equal name")
        return self

    def source_field(self) -> str:
        """The atomic column (built-in keys) or key column this key joins on."""
        return self.key or self.name


def _builtin(name: str, description: str, key: str | None = None, **extra: Any) -> AttributeKey:
    return AttributeKey(
        name=name, key=key or (None if extra else name), description=description, **extra
    )


def _client_session(path: str) -> EntityProperty:
    return EntityProperty(vendor=SNOWPLOW_VENDOR, name="client_session", major_version=1, path=path)


BUILTIN_ATTRIBUTE_KEYS: Mapping[str, AttributeKey] = {
    k.name: k
    for k in (
        _builtin("domain_userid", "The domain user ID for the user."),
        _builtin("domain_sessionid", "The domain session ID for the session."),
        _builtin("user_id", "The user ID set by the tracker."),
        _builtin("network_userid", "The network (cookie) user ID."),
        _builtin("user", "Deprecated alias of domain_userid.", key="domain_userid"),
        _builtin("session", "Deprecated alias of domain_sessionid.", key="domain_sessionid"),
        _builtin("client_session_user_id", "Mobile client_session userId.", property=_client_session("userId")),
        _builtin("client_session_session_id", "Mobile client_session sessionId.", property=_client_session("sessionId")),
    )
}  # fmt: skip


def resolve_attribute_key(key: AttributeKey) -> AttributeKey:
    """An inline key that only names a built-in (``{"name": "domain_userid"}``) becomes the built-in."""
    builtin = BUILTIN_ATTRIBUTE_KEYS.get(key.name)
    if builtin is not None and key.property is None and key.external_column is None:
        return builtin.model_copy(update={"is_published": key.is_published})
    return key


class BatchField(_Model):
    """A column of an external batch table (the SDK's ``Field``)."""

    name: Name
    description: Text | None = None
    type: AttributeType


class BatchSource(_Model):
    name: Name
    timestamp_field: Annotated[str, StringConstraints(pattern=r"^[A-Za-z0-9_]+$")]
    description: Text | None = None
    owner: Owner | None = None
    database: Annotated[str, StringConstraints(pattern=r"^[A-Za-z0-9_-]+$", min_length=1)]
    # Alias "schema"; "schema_" is accepted too (testing endpoint dumps without by_alias).
    schema_: Annotated[str, StringConstraints(pattern=r"^[A-Za-z0-9_]+$", min_length=1)] = Field(
        alias="schema"
    )
    table: Annotated[str, StringConstraints(pattern=r"^[A-Za-z0-9_]+$", min_length=1)]


class AttributeGroup(_Model):
    """A versioned set of attributes computed for one attribute key."""

    name: Name
    version: PositiveInt = 1
    attribute_key: AttributeKey
    ttl: PositiveDuration | None = None
    batch_source: BatchSource | None = None
    online: bool = True
    offline: bool | None = None
    description: Text | None = None
    owner: Owner | None = None
    fields: list[BatchField] | None = None
    attributes: list[Attribute] | None = None
    is_published: bool = False
    backfill_since_tstamp: datetime | None = None
    refresh_rate: PositiveDuration | None = None

    @model_validator(mode="after")
    def _unique_names(self) -> AttributeGroup:
        seen: set[str] = set()
        for item in [*(self.attributes or []), *(self.fields or [])]:
            if item.name in seen:
                raise ValueError(f"duplicate attribute name {item.name!r} in group {self.name!r}")
            seen.add(item.name)
        if self.fields and self.batch_source is None:
            raise ValueError("fields (external batch attributes) require a batch_source")
        return self

    @property
    def qualified_prefix(self) -> str:
        """``{name}_v{version}``, the prefix of qualified attribute names and the feast name."""
        return f"{self.name}_v{self.version}"


def blobl_path(key: AttributeKey) -> str | None:
    """Where the key's value sits in an enriched event (None for warehouse-only keys)."""
    prop = key.property
    if prop is None:
        return None if key.external_column else key.source_field()
    if isinstance(prop, AtomicProperty):
        return prop.name
    tail = str(prop.path).removeprefix("$").removeprefix(".")
    column = shred_key(prop.vendor, prop.name, prop.major_version)
    if isinstance(prop, EntityProperty):
        return f"contexts_{column}[{prop.index}].{tail}"
    return f"unstruct_event_{column}.{tail}"


def attribute_group_response(
    group: AttributeGroup, *, stream_source_name: str | None = "events"
) -> dict[str, Any]:
    """The ``AttributeGroupResponse`` body GET endpoints return: the wire form of the group plus
    ``attribute_key.blobl_path``, ``attribute_key_or_name``, ``full_name``, ``feast_name``,
    ``stream_source_name`` (required, nullable: None for offline groups) and the effective TTL."""
    body = to_wire(group)
    key = group.attribute_key
    body["attribute_key"]["blobl_path"] = blobl_path(key)
    body["attribute_key_or_name"] = key.source_field()
    body["full_name"] = f"{group.name}_{group.version}"
    body["feast_name"] = group.qualified_prefix
    body["stream_source_name"] = None if group.offline else stream_source_name
    ttl = group.ttl or key.ttl
    body["attribute_group_or_attribute_key_ttl"] = format_duration(ttl) if ttl else None
    return body


class LinkAttributeKey(_Model):
    name: Name


class VersionedLinkAttributeGroup(_Model):
    name: Name
    version: int = 1


class Service(_Model):
    """An unversioned bundle of pinned attribute-group versions, read together."""

    name: Name
    description: Text | None = None
    attribute_groups: list[VersionedLinkAttributeGroup] = Field(min_length=1, max_length=100)
    owner: Owner | None = None
    is_published: bool = False


class InterventionCriterion(_Model):
    """``attribute operator value`` where attribute is the unversioned ``group:attribute``."""

    attribute: Annotated[
        str, StringConstraints(pattern=r"^[A-Za-z0-9_]{1,128}:[A-Za-z0-9_]{1,128}$")
    ]
    operator: InterventionOperator
    value: CriterionValue = None

    @model_validator(mode="after")
    def _value_fits(self) -> InterventionCriterion:
        check_operator_value(self.operator, self.value)
        return self

    @property
    def group(self) -> str:
        return self.attribute.split(":", 1)[0]

    @property
    def attribute_name(self) -> str:
        return self.attribute.split(":", 1)[1]


class InterventionCriteriaAll(_Model):
    all: list[InterventionCriteria] = Field(min_length=1)


class InterventionCriteriaAny(_Model):
    any: list[InterventionCriteria] = Field(min_length=1)


class InterventionCriteriaNone(_Model):
    none: list[InterventionCriteria] = Field(min_length=1)


def _criteria_tag(value: Any) -> str | None:
    """The untagged union is told apart by its keys; more than one of them is an error."""
    if isinstance(value, BaseModel):
        keys = set(type(value).model_fields)
    elif isinstance(value, Mapping):
        keys = set(value)
    else:
        return None
    found = keys & {"attribute", "all", "any", "none"}
    return found.pop() if len(found) == 1 else None


InterventionCriteria = Annotated[
    Union[  # noqa: UP007 - Tag-annotated members need the explicit Union form
        Annotated[InterventionCriterion, Tag("attribute")],
        Annotated[InterventionCriteriaAll, Tag("all")],
        Annotated[InterventionCriteriaAny, Tag("any")],
        Annotated[InterventionCriteriaNone, Tag("none")],
    ],
    Discriminator(
        _criteria_tag,
        custom_error_type="criteria_shape",
        custom_error_message="criteria must be an object with exactly one of 'attribute', 'all', 'any', 'none'",
    ),
]
for _model in (InterventionCriteriaAll, InterventionCriteriaAny, InterventionCriteriaNone):
    _model.model_rebuild()


def iter_criteria(
    criteria: InterventionCriteria, under_any_or_none: bool = False
) -> Iterator[tuple[InterventionCriterion, bool]]:
    """Yield ``(criterion, under_any_or_none)`` for every leaf of a criteria tree."""
    if isinstance(criteria, InterventionCriterion):
        yield criteria, under_any_or_none
        return
    children = (
        criteria.all
        if isinstance(criteria, InterventionCriteriaAll)
        else (criteria.any if isinstance(criteria, InterventionCriteriaAny) else criteria.none)
    )
    nested = under_any_or_none or not isinstance(criteria, InterventionCriteriaAll)
    for child in children:
        yield from iter_criteria(child, nested)


class RuleIntervention(_Model):
    """A rule over attributes that fires (edge-triggered) for its target attribute keys."""

    name: Name
    version: int = 1
    description: Text | None = None
    owner: Owner | None = None
    is_published: bool = False
    criteria: InterventionCriteria
    target_attribute_keys: list[LinkAttributeKey] | None = None
    payload_attribute_groups: list[VersionedLinkAttributeGroup] | None = None

    @model_validator(mode="after")
    def _changed_placement(self) -> RuleIntervention:
        for criterion, nested in iter_criteria(self.criteria):
            if criterion.operator == "changed" and nested:
                raise ValueError(
                    "operator 'changed' is only allowed alone or inside 'all' (not in 'any' or 'none')"
                )
        return self

    def referenced_attributes(self) -> list[tuple[str, str]]:
        """``(group, attribute)`` pairs the criteria read, in order, without duplicates."""
        pairs = [(c.group, c.attribute_name) for c, _ in iter_criteria(self.criteria)]
        return list(dict.fromkeys(pairs))


class TargetAttributeKey(_Model):
    id: str
    name: str


class InterventionInstance(_Model):
    """What subscribers receive; attribute values are strings (the SDK rejects anything else)."""

    name: str
    version: int
    intervention_id: str | None = None
    target_attribute_key: TargetAttributeKey | None = None
    attributes: dict[str, str] | None = None


class EventLogEvent(EventSelector):
    major_version: PositiveInt | None = None

    @model_validator(mode="after")
    def _version_pin(self) -> EventLogEvent:
        if self.major_version is not None and self.version is not None:
            raise ValueError("major_version and version are mutually exclusive")
        return self


class EventLogAtomicProperty(AtomicProperty):
    output_name: str | None = None


class EventLogEventProperty(EventProperty):
    output_name: str | None = None


class EventLogEntityProperty(EntityProperty):
    output_name: str | None = None


EventLogProperty = Annotated[
    EventLogAtomicProperty | EventLogEventProperty | EventLogEntityProperty,
    Field(discriminator="type"),
]


def output_key(
    prop: EventLogAtomicProperty | EventLogEventProperty | EventLogEntityProperty,
) -> str:
    """The key a projected property gets: output_name, else the atomic name or the path tail."""
    if prop.output_name:
        return prop.output_name
    if isinstance(prop, EventLogAtomicProperty):
        return prop.name
    return str([t for t in parse_path(prop.path) if isinstance(t, str)][-1])


class EventSelection(_Model):
    event: EventLogEvent
    properties: list[EventLogProperty] = Field(min_length=1, max_length=50)

    @model_validator(mode="after")
    def _unique_outputs(self) -> EventSelection:
        keys = [output_key(p) for p in self.properties]
        duplicates = sorted({k for k in keys if keys.count(k) > 1})
        if duplicates:
            raise ValueError(f"properties share output key {duplicates[0]!r}; set output_name")
        return self


class EventLog(_Model):
    """A rolling per-session buffer of selected events ("agentic context")."""

    name: Name
    version: int = 1
    description: (
        Annotated[str, StringConstraints(pattern=r"^[^\x00]*$", max_length=1024)] | None
    ) = None
    owner: Owner | None = None
    prompt: Annotated[str, StringConstraints(pattern=r"^[^\x00]*$", max_length=3800)] | None = None
    attribute_key: LinkAttributeKey
    events: list[EventSelection] = Field(min_length=1, max_length=20)
    max_events: int = Field(gt=0, le=100)
    max_age_seconds: int = Field(gt=0, le=3600)

    @field_validator("attribute_key")
    @classmethod
    def _session_scoped(cls, value: LinkAttributeKey) -> LinkAttributeKey:
        if value.name != "domain_sessionid":
            raise ValueError("event logs are scoped to domain_sessionid")
        return value
