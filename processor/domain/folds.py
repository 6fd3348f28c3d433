"""One generated function per selection of attributes: the engine's attribute hot path.

An event updates about a dozen attributes. Folding each through ``aggregations.apply`` costs a
call per attribute and per kind's fold, a value lookup per attribute and the generic lifetime /
window dispatch, all decided again on every event though they are fixed per (entity key, kind
of event). ``compile_fold`` decides them once: like ``dataclasses`` builds ``__init__``, it writes
the Python source of one function for a ``Selection`` and compiles it. For each attribute, in
selection order, the function:

- reads the value once per distinct property (an atomic column straight from ``event.atomic``,
  anything else through ``CompiledAttribute.value_of``), and the value key once per value for
  the value-keyed kinds;
- runs the common case inline: a lifetime state that exists and has not expired (TTL), or a
  windowed state whose newest bucket is the event's; the kind's fold is written out (counter,
  sum, min, max, mean, first, last, time_since_*) or calls the key-level helper
  (``aggregations.sight``, ``aggregations.tally``, ``hll.add_hash``);
- hands every other case (no state yet, a TTL reset, a new or older bucket) to ``spec.step``,
  the state machine itself, which is what the inline code abbreviates.

States are looked up in their group's dict (``EntityState.groups``), fetched (or created) once
per group at the top. Then it marks the plain attributes' groups dirty in one run, evaluates
each conditional attribute's criteria, folds the ones that pass, marks their groups, and
returns them.

The result is the same as folding through ``aggregations.apply`` (states, dirty marks, the
order of insertion into ``EntityState.groups``): ``tests/unit/domain/test_folds.py`` checks
it on random event sequences for every kind, lifetime, TTL'd and windowed, with criteria.
Only validated numbers and ``repr`` of strings enter the source; everything else (slots,
specs, criteria) is bound by name in the function's globals.
"""

from __future__ import annotations

from bisect import bisect_right
from collections.abc import Callable, Sequence
from operator import itemgetter
from typing import TYPE_CHECKING, Any

from processor.domain import aggregations, hll
from processor.domain.aggregations import SKIP, AggSpec, value_key
from processor.domain.entity import EntityState
from processor.domain.events import Event
from processor.domain.properties import matches_criteria

if TYPE_CHECKING:
    from processor.domain.topology import CompiledAttribute

#: ``fold(state, event)`` folds the event into every attribute of its selection that takes it
#: and returns the conditional attributes that passed their criteria.
Fold = Callable[[EntityState, Event], "Sequence[CompiledAttribute]"]

_NUMERIC = "(type({v}) is int or (type({v}) is float and {v} - {v} == 0.0))"
_PRESENT = "({v} is not None and (type({v}) is not float or {v} - {v} == 0.0))"
_KEYED = "{k} is not SKIP"
_TALLY = """counts = e[1]
n = counts.get({k})
if n is not None:
    counts[{k}] = n + 1
else:
    tally(e, {k})"""
# The common case of ``aggregations.sight``: a sighting not older than the newest one.
_SIGHT = """if e[2] is not None and ts < e[2]:
    sight(e, {k}, ts)
else:
    seen = e[1]
    if {k} in seen:
        del seen[{k}]
    e[2] = ts
    seen[{k}] = ts
    if len(seen) > MAX_TRACKED:
        del seen[next(iter(seen))]"""
# ``hll.add`` with its common case inline: an exact sketch that already holds the hash.
_SKETCH = """sketch = e[1]
hx = hash_hex({k})
if sketch[0] or hx not in sketch[1]:
    hll_add_hash(sketch, hx)"""

# kind -> (the test that the value is usable, None: every event counts; the fold of one usable
# event into entry ``e``; a new entry for bucket ``{b}``). They mirror ``aggregations._KINDS``.
_INLINE: dict[str, tuple[str | None, str, str]] = {
    "counter": (None, "e[1] += 1", "[{b}, 0]"),
    "sum": (_NUMERIC, "e[1] += {v}", "[{b}, 0]"),
    "mean": (_NUMERIC, "e[1] += {v}\ne[2] += 1", "[{b}, 0, 0]"),
    "min": (_NUMERIC, "if e[1] is None or {v} < e[1]:\n    e[1] = {v}", "[{b}, None]"),
    "max": (_NUMERIC, "if e[1] is None or {v} > e[1]:\n    e[1] = {v}", "[{b}, None]"),
    "first": (_PRESENT, "if e[1] is None or ts < e[1]:\n    e[1] = ts\n    e[2] = {v}",
              "[{b}, None, None]"),
    "last": (_PRESENT, "if e[1] is None or ts >= e[1]:\n    e[1] = ts\n    e[2] = {v}",
             "[{b}, None, None]"),
    "time_since_first": (None, "if e[1] is None or ts < e[1]:\n    e[1] = ts", "[{b}, None]"),
    "time_since_last": (None, "if e[1] is None or ts > e[1]:\n    e[1] = ts", "[{b}, None]"),
    "unique_list": (_KEYED, _SIGHT, "[{b}, {{}}, None]"),
    "most_frequent": (_KEYED, _TALLY, "[{b}, {{}}]"),
    "least_frequent": (_KEYED, _TALLY, "[{b}, {{}}]"),
    "category_count": (_KEYED, _TALLY, "[{b}, {{}}]"),
    "approx_count_distinct": (_KEYED, _SKETCH, "[{b}, hll_new()]"),
}  # fmt: skip
assert set(_INLINE) == set(aggregations.KINDS)

_GLOBALS: dict[str, Any] = {
    "SKIP": SKIP, "MAX_TRACKED": aggregations.MAX_TRACKED, "value_key": value_key,
    "sight": aggregations.sight, "tally": aggregations.tally, "hash_hex": hll.hash_hex,
    "hll_add_hash": hll.add_hash,
    "hll_new": hll.new_sketch, "matches_criteria": matches_criteria, "bisect_right": bisect_right,
    "bucket_of": itemgetter(0),
}  # fmt: skip


def compile_fold(plain: Sequence[CompiledAttribute], conditional: Sequence[CompiledAttribute]) -> Fold:
    """The fold of one selection: ``plain`` attributes take every event given, ``conditional``
    ones only the events that pass their criteria. Built once per selection (see ``Topology``)."""
    source = _Source()
    source.line(0, "def fold(state, event):")
    source.line(1, "groups = state.groups")
    source.line(1, "ts = event.timestamp_ms")
    source.line(1, "atomic = event.atomic")
    values: dict[str, str] = {}  # value_key -> variable, resolved at top level
    keys: dict[str, str] = {}  # value variable -> key variable
    # group key -> the variable holding its states: every plain attribute gets a state, so
    # their groups are fetched or created up front, in order of first use
    groups: dict[tuple[str, int], str] = {}
    for attribute in plain:
        group = attribute.slot[:2]
        if group not in groups:
            groups[group] = _group(source, 1, group, len(groups))
    for attribute in plain:
        _attribute(source, 1, attribute, values, keys, groups[attribute.slot[:2]])
    if plain:
        # ``state.mark_groups(...)`` without the call
        source.line(1, f"state.dirty_runs.append({source.bind(tuple(groups))})")
    if not conditional:
        source.line(1, "return ()")
    else:
        source.line(1, "passed = []")
        source.line(1, "marked = []")
        for attribute in conditional:
            criteria = source.bind(attribute.criteria)
            group = attribute.slot[:2]
            source.line(1, f"if matches_criteria(event, {criteria}):")
            # a value or group first needed here is resolved in this branch only
            states = groups.get(group) or _group(source, 2, group, len(groups))
            _attribute(source, 2, attribute, dict(values), dict(keys), states)
            source.line(2, f"passed.append({source.bind(attribute)})")
            source.line(2, f"marked.append({source.bind(group)})")
        source.line(1, "if passed:")
        source.line(2, "state.dirty_runs.append(tuple(marked))")
        source.line(1, "return passed")
    fold: Fold = source.function("fold")
    return fold


def _group(source: _Source, depth: int, group: tuple[str, int], number: int) -> str:
    """Fetch (or create) the states of ``group`` into a variable; return its name."""
    states, key = f"g{number}", source.bind(group)
    source.line(depth, f"{states} = groups.get({key})")
    source.line(depth, f"if {states} is None:")
    source.line(depth + 1, f"{states} = groups[{key}] = {{}}")
    return states


def _attribute(
    source: _Source, depth: int, attribute: CompiledAttribute, values: dict[str, str], keys: dict[str, str],
    states: str,
) -> None:
    spec = attribute.spec
    test, fold, new = _INLINE[spec.kind]
    value = key = "None"
    if spec.uses_value:
        value = values.get(attribute.value_key, "")
        if not value:
            value = values[attribute.value_key] = f"v{len(values)}"
            if attribute.atomic is not None:
                source.line(depth, f"{value} = atomic.get({attribute.atomic!r})")
            else:
                source.line(depth, f"{value} = {source.bind(attribute.value_of)}(event)")
    if test == _KEYED:
        key = keys.get(value, "")
        if not key:
            key = keys[value] = f"k{value[1:]}"
            # ``value_key`` with its common case first: a string that needs no escape (a slice,
            # not ``startswith``: a method call with arguments costs several times more)
            source.line(depth, f"{key} = {value} if type({value}) is str and {value}[:1] != "
                               f"'\\x1f' else value_key({value})")
    usable = None if test is None else test.format(v=value, k=key)
    fold = fold.format(v=value, k=key)
    slot = f"{states}[{attribute.slot[2]!r}]"  # the state's place in its group
    source.line(depth, f"# {attribute.name!r}: {spec.kind}, "
                       + ("lifetime" if spec.period_ms is None else f"window of {spec.bucket_ms} ms buckets")
                       + ("" if spec.ttl_ms is None else f", ttl {spec.ttl_ms} ms"))
    lookup = f"{states}.get({attribute.slot[2]!r})"
    if spec.period_ms is None:
        _lifetime(source, depth, spec, lookup, slot, usable, fold, new.format(b="None"))
    else:
        source.line(depth, f"s = {lookup}")
        _window(source, depth, spec, slot, usable, fold, new.format(b="b"), value)


def _lifetime(
    source: _Source, depth: int, spec: AggSpec, lookup: str, slot: str, usable: str | None, fold: str,
    new: str,
) -> None:
    """The state is its one entry ``e``; ``e[0]`` is the newest event time. See ``_lifetime_step``."""
    source.line(depth, f"e = {lookup}")
    source.line(depth, "if e is None:")
    source.line(depth + 1, f"e = {slot} = {new}")
    if spec.ttl_ms is not None:  # an event after the TTL, if usable, finds the value expired
        source.line(depth, f"elif e[0] is not None and ts - e[0] > {spec.ttl_ms}"
                           + ("" if usable is None else f" and {usable}") + ":")
        source.line(depth + 1, f"e = {slot} = {new}")
    if usable is not None:
        source.line(depth, f"if {usable}:")
        depth += 1
    source.block(depth, fold)
    source.block(depth, "if e[0] is None or ts > e[0]:\n    e[0] = ts")


def _window(
    source: _Source, depth: int, spec: AggSpec, slot: str, usable: str | None, fold: str, new: str,
    value: str,
) -> None:
    """Buckets, oldest first: the event's bucket is the newest one, or a newer one that drops
    the buckets out of reach (``windows.bucket_entry``); ``spec.step`` does the rest."""
    source.line(depth, f"b = ts // {spec.bucket_ms}")
    source.line(depth, "if s and s[-1][0] == b:")
    source.line(depth + 1, "e = s[-1]")
    if usable is not None:
        source.line(depth + 1, f"if {usable}:")
    source.block(depth + 1 + (usable is not None), fold)
    source.line(depth, "elif s and s[-1][0] < b" + ("" if usable is None else f" and {usable}") + ":")
    source.line(depth + 1, f"e = {new}")
    source.line(depth + 1, "s.append(e)")
    source.line(depth + 1, f"if s[0][0] <= b - {spec.span}:")
    source.line(depth + 2, f"del s[:bisect_right(s, b - {spec.span}, key=bucket_of)]")
    source.block(depth + 1, fold)
    source.line(depth, "else:")
    source.line(depth + 1, f"{slot} = {source.bind(spec.step)}(s, {value}, ts)")


class _Source:
    """Lines of Python source and the objects they name (``_0``, ``_1``, ...)."""

    def __init__(self) -> None:
        self.lines: list[str] = []
        self.names: dict[str, Any] = {}

    def line(self, depth: int, text: str) -> None:
        self.lines.append("    " * depth + text)

    def block(self, depth: int, text: str) -> None:
        for line in text.splitlines():
            self.line(depth, line)

    def bind(self, obj: Any) -> str:
        name = f"_{len(self.names)}"
        self.names[name] = obj
        return name

    def text(self) -> str:
        return "\n".join(self.lines) + "\n"

    def function(self, name: str) -> Any:
        namespace = {**_GLOBALS, **self.names}
        exec(compile(self.text(), f"<generated {name}>", "exec"), namespace)  # noqa: S102
        return namespace[name]
