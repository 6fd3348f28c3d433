"""Signals properties: the models that point into an event, and their evaluation on an Event.

The property, criteria and event-selector models live here, next to the code that reads them,
and are re-exported by ``processor.domain.definitions`` (the full data model). Evaluation:

- ``resolve`` reads atomic columns, fields of the self-describing event or of the ``index``-th
  entity whose schema has the property's vendor/name/major version (entities decoded from the
  transformed JSON shape are matched by their shredded column name), follows JSON paths
  (``$.user.profile.name``, ``items[1].value``) and applies ``date_part`` in UTC;
- criteria use SQL-like rules, documented on ``compare``;
- date parts: ``hour_of_day`` 0-23, ``day_of_week`` ISO 1 (Monday)-7, ``month_of_year`` 1-12;
  ``active_day`` ``"YYYY-MM-DD"``, ``active_week`` the Monday of the week, ``active_month``
  ``"YYYY-MM-01"``. Date-times are ISO-8601 strings or epoch numbers (below 1e11 = seconds).
"""

from __future__ import annotations

import math
import re
from collections.abc import Callable, Mapping, Sequence
from datetime import UTC, datetime, timedelta
from functools import lru_cache
from typing import TYPE_CHECKING, Annotated, Any, Literal

import orjson
from pydantic import (
    BaseModel,
    ConfigDict,
    Field,
    NonNegativeInt,
    PositiveInt,
    StringConstraints,
    field_validator,
    model_validator,
)

from processor.domain.events import (
    ATOMIC_COLUMN_SET,
    SNOWPLOW_VENDOR,
    Event,
    parse_iglu,
    parse_timestamp_ms,
    shred_key,
)

if TYPE_CHECKING:  # definitions imports this module; the annotation alone needs AttributeKey
    from processor.domain.definitions import AttributeKey

SchemaName = Annotated[
    str, StringConstraints(pattern=r"^[a-zA-Z0-9-_]+$", min_length=1, max_length=128)
]
SchemaVendor = Annotated[
    str, StringConstraints(pattern=r"^[a-zA-Z0-9-_.]+$", min_length=1, max_length=128)
]
SchemaVersion = Annotated[str, StringConstraints(pattern=r"^[0-9]+-[0-9]+-[0-9]+$")]
JsonPath = Annotated[str, StringConstraints(pattern=r"^(?!\$$)(?!.*\[['\"]).+$", min_length=1)]
Scalar = str | int | float | bool
CriterionValue = Scalar | list[Scalar] | None

DatePart = Literal[
    "active_day", "active_week", "active_month", "hour_of_day", "day_of_week", "month_of_year"
]
FilterOperator = Literal["=", "!=", "<", ">", "<=", ">=", "like", "in", "is null", "is not null"]

TRUNCATE_DATE_PARTS = frozenset({"active_day", "active_week", "active_month"})
EXTRACT_DATE_PARTS = frozenset({"hour_of_day", "day_of_week", "month_of_year"})


class SignalsModel(BaseModel):
    """Base of every Signals model: frozen, unknown fields ignored, aliases or names accepted."""

    model_config = ConfigDict(
        frozen=True, extra="ignore", populate_by_name=True, regex_engine="python-re"
    )


def to_wire(model: BaseModel) -> dict[str, Any]:
    """The JSON body the SDK itself would send for ``model`` (nulls omitted, aliases used)."""
    return model.model_dump(mode="json", exclude_none=True, by_alias=True)


@lru_cache(maxsize=4096)
def parse_path(path: str) -> tuple[str | int, ...]:
    """Split the JSONPath subset Signals allows (``$.a.b``, ``a[1].b``) into keys and indexes."""
    text = path[1:] if path.startswith("$") else path
    tokens: list[str | int] = []
    i = 0
    while i < len(text):
        if text[i] == "[":
            end = text.find("]", i)
            inner = text[i + 1 : end] if end > 0 else ""
            if not (inner.isascii() and inner.isdigit()):
                raise ValueError(f"unsupported path {path!r}: only [n] indexes are allowed")
            tokens.append(int(inner))
            i = end + 1
            continue
        if text[i] == "." and (tokens or i == 0):
            i += 1
        end = min((j for j in (text.find(".", i), text.find("[", i)) if j >= 0), default=len(text))
        if end == i:
            raise ValueError(f"unsupported path {path!r}: empty segment")
        tokens.append(text[i:end])
        i = end
    if not tokens:
        raise ValueError(f"unsupported path {path!r}: it selects nothing")
    return tuple(tokens)


class AtomicProperty(SignalsModel):
    """A column of atomic.events (``page_url``, ``derived_tstamp``, ``domain_userid``...)."""

    type: Literal["atomic"] = "atomic"
    name: str
    date_part: DatePart | None = None

    @field_validator("name")
    @classmethod
    def _known_column(cls, value: str) -> str:
        if value not in ATOMIC_COLUMN_SET:
            raise ValueError(f"unknown atomic property {value!r}")
        return value


class _SchemaProperty(SignalsModel):
    vendor: Annotated[str, StringConstraints(min_length=1)]
    name: SchemaName
    major_version: PositiveInt
    path: JsonPath
    date_part: DatePart | None = None

    @field_validator("path")
    @classmethod
    def _parsable_path(cls, value: str) -> str:
        parse_path(value)
        return value


class EventProperty(_SchemaProperty):
    """A field of the self-describing event whose schema is vendor/name/major_version."""

    type: Literal["event"] = "event"


class EntityProperty(_SchemaProperty):
    """A field of the ``index``-th attached entity with schema vendor/name/major_version."""

    type: Literal["entity"] = "entity"
    index: NonNegativeInt = 0


LeafProperty = Annotated[
    AtomicProperty | EventProperty | EntityProperty, Field(discriminator="type")
]


class CalculatedProperty(SignalsModel):
    """Combines leaf properties: concat skips nulls, sum/product/min/max are null if any input is,
    coalesce takes the first non-null."""

    type: Literal["calculated"] = "calculated"
    operation: Literal["concat", "sum", "product", "min", "max", "coalesce"]
    properties: list[LeafProperty] = Field(min_length=1, max_length=50)
    separator: Annotated[str, StringConstraints(max_length=16)] | None = None

    @model_validator(mode="after")
    def _shape(self) -> CalculatedProperty:
        if self.operation != "coalesce" and len(self.properties) < 2:
            raise ValueError(f"calculated {self.operation!r} needs at least 2 properties")
        if self.separator is not None and self.operation != "concat":
            raise ValueError("separator is only valid for the concat operation")
        return self


Property = Annotated[
    AtomicProperty | EventProperty | EntityProperty | CalculatedProperty,
    Field(discriminator="type"),
]


def check_operator_value(operator: str, value: Any) -> None:
    """Raise ValueError unless ``value`` is what ``operator`` needs."""
    if operator in ("is null", "is not null", "changed"):
        if value is not None:
            raise ValueError(f"operator {operator!r} takes no value")
    elif operator in ("in", "not in"):
        if not isinstance(value, list):
            raise ValueError(f"operator {operator!r} requires a list value")
    elif operator in ("like", "not like", "rlike", "not rlike"):
        if not isinstance(value, str):
            raise ValueError(f"operator {operator!r} requires a string value")
        if "rlike" in operator:
            try:
                re.compile(value)
            except re.error as exc:
                raise ValueError(f"invalid regular expression {value!r}: {exc}") from None
    elif value is None or isinstance(value, list):
        raise ValueError(f"operator {operator!r} requires a single value")


class Criterion(SignalsModel):
    """One event filter: ``property operator value``."""

    property: Property
    operator: FilterOperator
    value: CriterionValue = None

    @model_validator(mode="after")
    def _value_fits(self) -> Criterion:
        check_operator_value(self.operator, self.value)
        return self


class Criteria(SignalsModel):
    """Event filter of an attribute: every ``all`` criterion and at least one ``any`` must hold."""

    all: list[Criterion] | None = None
    any: list[Criterion] | None = None

    @model_validator(mode="after")
    def _not_empty(self) -> Criteria:
        if self.all is None and self.any is None:
            raise ValueError("criteria need 'all' or 'any'")
        return self


class EventSelector(SignalsModel):
    """Which events feed an attribute; unset fields are wildcards (the SDK's ``Event``)."""

    name: SchemaName | None = None
    vendor: SchemaVendor | None = None
    version: SchemaVersion | None = None
    event_specification_id: Annotated[str, StringConstraints(min_length=1)] | None = None

    @model_validator(mode="after")
    def _exclusive(self) -> EventSelector:
        if self.event_specification_id is not None and (self.name or self.vendor or self.version):
            raise ValueError("event_specification_id cannot be combined with name/vendor/version")
        return self


# ----------------------------------------------------------------------------- evaluation

LeafPropertyModel = AtomicProperty | EventProperty | EntityProperty
PropertyModel = AtomicProperty | EventProperty | EntityProperty | CalculatedProperty


@lru_cache(maxsize=4096)
def _schema_parts(uri: str) -> tuple[str, str, str, int, int, int] | None:
    return parse_iglu(uri)


def schema_matches(entity: Mapping[str, Any], vendor: str, name: str, major: int) -> bool:
    """Whether a self-describing ``{"schema", "data"}`` has vendor/name and major version."""
    schema = entity.get("schema")
    if isinstance(schema, str):
        parts = _schema_parts(schema)
        return (
            parts is not None and parts[1] == name and parts[0] == vendor and parts[3] == major
        )
    return entity.get("shred_key") == shred_key(vendor, name, major)


def follow_path(data: Any, path: str) -> Any:
    """The value at ``path`` inside ``data``, or None when any step is missing."""
    return _follow(data, parse_path(path))


def _follow(data: Any, tokens: tuple[str | int, ...]) -> Any:
    for token in tokens:
        if isinstance(token, int):
            if not isinstance(data, list) or token >= len(data):
                return None
            data = data[token]
        elif type(data) is dict or isinstance(data, Mapping):  # Mapping, an ABC, is slow to test
            data = data.get(token)
        else:
            return None
    return data


# Properties are told apart by their ``type`` tag: isinstance on pydantic models goes through
# ABCMeta and costs several times more, on every property of every event.


def _leaf_value(event: Event, prop: LeafPropertyModel) -> Any:
    if prop.type == "atomic":
        return event.atomic.get(prop.name)
    if prop.type == "event":
        unstruct = event.unstruct
        if unstruct is None or not schema_matches(
            unstruct, prop.vendor, prop.name, prop.major_version
        ):
            return None
        return follow_path(unstruct.get("data"), prop.path)
    # The index counts only entities of the property's schema, in attachment order.
    seen = 0
    for entity in event.contexts:
        if schema_matches(entity, prop.vendor, prop.name, prop.major_version):
            if seen == prop.index:
                return follow_path(entity.get("data"), prop.path)
            seen += 1
    return None


def resolve(event: Event, prop: PropertyModel) -> Any:
    """The property's value in ``event`` (None when absent), ``date_part`` applied."""
    if prop.type == "calculated":
        return _calculate(event, prop)
    value = _leaf_value(event, prop)
    if prop.date_part is None or value is None:
        return value
    return date_part(value, prop.date_part)


def compile_resolver(prop: PropertyModel) -> Callable[[Event], Any]:
    """``resolve`` for one property, as a function of the event alone: built once (see
    ``topology.CompiledAttribute``), it reads the model's fields and parses the path and schema
    key once instead of on every event. Leaf properties without ``date_part`` get their own
    code; the others call ``resolve``."""
    if prop.type == "calculated" or prop.date_part is not None:
        return lambda event: resolve(event, prop)
    if prop.type == "atomic":
        column = prop.name
        return lambda event: event.atomic.get(column)
    vendor, name, major = prop.vendor, prop.name, prop.major_version
    key, tokens = shred_key(vendor, name, major), parse_path(prop.path)

    def matches(entity: Mapping[str, Any]) -> bool:  # ``schema_matches``, its parts bound
        schema = entity.get("schema")
        if isinstance(schema, str):
            parts = _schema_parts(schema)
            return parts is not None and parts[1] == name and parts[0] == vendor and parts[3] == major
        return entity.get("shred_key") == key

    if prop.type == "event":
        def event_value(event: Event) -> Any:
            unstruct = event.unstruct
            if unstruct is None or not matches(unstruct):
                return None
            return _follow(unstruct.get("data"), tokens)

        return event_value
    index = prop.index

    def entity_value(event: Event) -> Any:  # the index counts the entities of this schema only
        seen = 0
        for entity in event.contexts:
            if matches(entity):
                if seen == index:
                    return _follow(entity.get("data"), tokens)
                seen += 1
        return None

    return entity_value


def to_datetime(value: Any) -> datetime | None:
    """An aware UTC datetime from ISO text or epoch seconds/ms; None when it is not a date-time."""
    if isinstance(value, bool):
        return None
    if isinstance(value, int | float) and math.isfinite(value):
        ms = value * 1000 if abs(value) < 1e11 else value
        return datetime(1970, 1, 1, tzinfo=UTC) + timedelta(milliseconds=ms)
    if isinstance(value, str):
        try:
            ms = parse_timestamp_ms(value.strip())
        except ValueError:
            return None
        return datetime(1970, 1, 1, tzinfo=UTC) + timedelta(milliseconds=ms)
    return None


def date_part(value: Any, part: str) -> int | str | None:
    """Extract (int) or truncate (date string) a date-time, in UTC; None if not a date-time."""
    dt = to_datetime(value)
    if dt is None:
        return None
    if part == "hour_of_day":
        return dt.hour
    if part == "day_of_week":
        return dt.isoweekday()
    if part == "month_of_year":
        return dt.month
    if part == "active_day":
        return dt.date().isoformat()
    if part == "active_week":
        return (dt.date() - timedelta(days=dt.weekday())).isoformat()
    if part == "active_month":
        return dt.date().replace(day=1).isoformat()
    raise ValueError(f"unknown date_part {part!r}")


def to_text(value: Any) -> str:
    """The string form used by concat, like and attribute-key ids (JSON for booleans/containers)."""
    if isinstance(value, str):
        return value
    if isinstance(value, bool | list | dict):
        return orjson.dumps(value).decode()
    return str(value)


def to_number(value: Any) -> int | float | None:
    """Numbers and numeric strings as numbers; booleans and anything else as None."""
    if isinstance(value, bool):
        return None
    if isinstance(value, int | float):
        return value
    if isinstance(value, str):
        text = value.strip()
        try:
            return int(text) if re.fullmatch(r"[+-]?\d+", text) else float(text)
        except ValueError:
            return None
    return None


def _calculate(event: Event, prop: CalculatedProperty) -> Any:
    values = [resolve(event, p) for p in prop.properties]
    if prop.operation == "coalesce":
        return next((v for v in values if v is not None), None)
    if prop.operation == "concat":
        present = [to_text(v) for v in values if v is not None]
        return (prop.separator or "").join(present) if present else None
    numbers = [to_number(v) for v in values]
    if any(n is None for n in numbers):
        return None
    checked = [n for n in numbers if n is not None]
    if prop.operation == "sum":
        return sum(checked)
    if prop.operation == "product":
        return math.prod(checked)
    return min(checked) if prop.operation == "min" else max(checked)


def _as_bool(value: Any) -> bool | None:
    if isinstance(value, bool):
        return value
    if isinstance(value, str) and value.lower() in ("true", "false"):
        return value.lower() == "true"
    return None


def _equal(a: Any, b: Any) -> bool:
    if isinstance(a, bool) or isinstance(b, bool):
        left, right = _as_bool(a), _as_bool(b)
        return left is not None and left == right
    if isinstance(a, int | float) or isinstance(b, int | float):
        left_n, right_n = to_number(a), to_number(b)
        return left_n is not None and left_n == right_n
    return bool(a == b)


def _order(a: Any, b: Any) -> int | None:
    if isinstance(a, bool) or isinstance(b, bool):
        return None
    if isinstance(a, int | float) or isinstance(b, int | float):
        left, right = to_number(a), to_number(b)
        if left is None or right is None:
            return None
        return (left > right) - (left < right)
    if isinstance(a, str) and isinstance(b, str):
        return (a > b) - (a < b)
    return None


@lru_cache(maxsize=1024)
def like_pattern(pattern: str) -> re.Pattern[str]:
    """SQL LIKE as a regex: ``%`` any run, ``_`` one character, backslash escapes the next one."""
    out: list[str] = []
    i = 0
    while i < len(pattern):
        ch = pattern[i]
        if ch == "\\" and i + 1 < len(pattern):
            out.append(re.escape(pattern[i + 1]))
            i += 2
            continue
        out.append(".*" if ch == "%" else "." if ch == "_" else re.escape(ch))
        i += 1
    return re.compile("".join(out), re.DOTALL)


_ORDERINGS = {"<": (-1,), ">": (1,), "<=": (-1, 0), ">=": (1, 0)}


def compare(actual: Any, operator: str, expected: Any) -> bool:
    """Apply a criterion operator. Rules, SQL-like so that filters behave as in the warehouse:

    - None (a missing value) satisfies ``is null`` only; every other operator, ``!=`` and the
      ``not`` forms included, is false on None (SQL NULL semantics);
    - numbers compare numerically and numeric strings count as numbers (``"42" = 42``);
      booleans equal booleans and the strings "true"/"false" (any case), never numbers;
    - strings compare as strings; ordering is lexicographic (right for ISO timestamps);
      a non-numeric string against a number is neither equal nor ordered;
    - ``like`` is SQL LIKE on the string form, case-sensitive, on the whole value; ``rlike``
      is a regex search anywhere in it (Spark/Java semantics); ``in`` is ``=`` with any element.
    ``changed`` needs the previous value and is not handled here (ValueError).
    """
    if operator in ("is null", "is not null"):
        return (actual is None) == (operator == "is null")
    if actual is None:
        return False
    if operator in ("=", "!="):
        return _equal(actual, expected) == (operator == "=")
    if operator in _ORDERINGS:
        order = _order(actual, expected)
        return order is not None and order in _ORDERINGS[operator]
    if operator in ("like", "not like"):
        found = like_pattern(str(expected)).fullmatch(to_text(actual)) is not None
        return found == (operator == "like")
    if operator in ("rlike", "not rlike"):
        found = re.search(str(expected), to_text(actual)) is not None
        return found == (operator == "rlike")
    if operator in ("in", "not in"):
        options = expected if isinstance(expected, list) else [expected]
        return any(_equal(actual, o) for o in options) == (operator == "in")
    raise ValueError(f"operator {operator!r} cannot be evaluated on a single value")


def matches_criteria(event: Event, criteria: Criteria | None) -> bool:
    """All ``all`` criteria and at least one ``any`` criterion hold; absent or empty lists
    do not constrain."""
    if criteria is None:
        return True
    if criteria.all and not all(
        compare(resolve(event, c.property), c.operator, c.value) for c in criteria.all
    ):
        return False
    return not criteria.any or any(
        compare(resolve(event, c.property), c.operator, c.value) for c in criteria.any
    )


def _specification_id(event: Event) -> str | None:
    for entity in event.contexts:
        if schema_matches(entity, SNOWPLOW_VENDOR, "event_specification", 1):
            data = entity.get("data")
            if isinstance(data, Mapping) and isinstance(data.get("id"), str):
                return str(data["id"])
    return None


def selector_matches(event: Event, selector: EventSelector) -> bool:
    """Unset selector fields are wildcards; ``event_specification_id`` is compared with the
    ``event_specification`` entity the tracker attaches; ``major_version`` (event logs) pins
    only the major part of the version."""
    if selector.event_specification_id is not None:
        return _specification_id(event) == selector.event_specification_id
    if selector.name is not None and selector.name != event.name:
        return False
    if selector.vendor is not None and selector.vendor != event.vendor:
        return False
    if selector.version is not None and selector.version != event.version:
        return False
    major = getattr(selector, "major_version", None)
    return major is None or (event.version or "").split("-")[0] == str(major)


def matches_events(event: Event, selectors: Sequence[EventSelector]) -> bool:
    """True when any selector matches; an empty list selects every event."""
    return not selectors or any(selector_matches(event, s) for s in selectors)


def attribute_key_value(event: Event, key: AttributeKey) -> str | None:
    """The id of ``key``'s entity in ``event``: built-ins read their atomic column (generic
    events: the top-level field of that name), custom keys their property. Empty strings,
    objects and lists are not ids (None)."""
    if key.property is not None:
        value = resolve(event, key.property)
    else:
        field = key.source_field()
        value = event.atomic.get(field)
        if value is None and event.stream is not None:
            value = event.fields.get(field)
    if type(value) is str:  # the usual id, as it is
        return value or None
    if value is None or isinstance(value, dict | list):
        return None
    return to_text(value) or None
