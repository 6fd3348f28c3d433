"""Attribute values from stored aggregation states, as the Profiles Store reads them.

``aggregations.read(spec, state, now_ms)``, specialised once per attribute: the kind's
functions and the spec's fields are bound when the reader is built rather than looked up for
every value, and :func:`column_reader` reads one attribute of all identifiers of a request at
once (window bounds computed once, the common cases inline; the stored texts are parsed once
per request by :func:`parse_all`). A read request does this ids x attributes times (200 for 10
ids x 20 attributes): it is most of the request's server time. The values are ``aggregations.read``'s for every state and time (a property test
checks it); the general functions (``spec.ops``) serve what is rare: windows with more than one
bucket in scope, and keys that are not plain strings. Pure: no I/O.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from operator import itemgetter
from typing import Any

import orjson

from processor.domain import aggregations
from processor.domain.aggregations import AggSpec

# The value of one state at a read time: ``(state, now_ms) -> value``.
ValueReader = Callable[[Any, int], Any]
# The values of one attribute at a read time from its states (none missing), parsed from
# texts that hold no tagged key when the last argument is True (see ``has_tagged_keys``).
ColumnReader = Callable[[list[Any], int, bool], list[Any]]
# The value of a lifetime state, or of the single bucket entry of a window in scope.
EntryValue = Callable[[Any, int], Any]
_StatesReader = Callable[[list[Any], int], list[Any]]

# Keys of values that are not strings (and of strings that start with the tag) start with a
# control character, the tag, which JSON text always escapes (``\u001f``): a text without the
# escape's first five characters holds no such key.
_ESCAPED_TAGS = orjson.dumps(aggregations.value_key(0)[0])[1:6]
_count = itemgetter(1)
# Kinds whose value is stored as is in a lifetime state or bucket entry: its index there.
_STORED_AT = {"counter": 1, "sum": 1, "min": 1, "max": 1, "first": 2, "last": 2}


def parse_all(stored: Sequence[bytes]) -> tuple[bytes, list[Any]]:
    """The texts of ``stored`` joined with commas, and ``[orjson.loads(s) for s in stored]``
    parsed as one JSON array (a parse costs about as much to start as a small state to read).
    Every stored text is JSON written by ``orjson.dumps``, so the array has one element per
    text; should one be invalid, each is parsed alone and the invalid one raises, as ever."""
    text = b",".join(stored)
    states = orjson.loads(b"[%b]" % text)
    if len(states) != len(stored):
        states = [orjson.loads(raw) for raw in stored]
    return text, states


def has_tagged_keys(text: bytes) -> bool:
    """Whether JSON ``text`` may hold a tagged key (of a number, a boolean, ...): False is
    certain, True means the general conversion is needed."""
    return _ESCAPED_TAGS in text


def column_reader(spec: AggSpec) -> ColumnReader:
    """``lambda states, now_ms, plain: [aggregations.read(spec, s, now_ms) for s in states]``.
    With ``plain`` (the states' text holds no tagged key, :func:`has_tagged_keys`), a unique
    list or category count skips the per-key conversions."""
    general = _states_reader(spec, _one(spec))
    plain_one = _PLAIN.get(spec.kind)
    if plain_one is None:
        return lambda states, now, _plain: general(states, now)
    plain = _states_reader(spec, plain_one)
    return lambda states, now, no_tags: (plain if no_tags else general)(states, now)


def value_reader(spec: AggSpec, one: EntryValue | None = None) -> ValueReader:
    """``lambda state, now_ms: aggregations.read(spec, state, now_ms)``; ``one`` replaces the
    kind's value of a single entry, for states known to suit it."""
    default, ttl, combine = spec.default_value, spec.ttl_ms, spec.ops.combine
    one = one or _one(spec)
    if spec.period_ms is None and ttl is None:
        return lambda state, now: default if state[0] is None else one(state, now)
    if spec.period_ms is None:
        expiry = int(ttl or 0)

        def read_lifetime(state: Any, now: int) -> Any:
            newest = state[0]
            if newest is None:
                return default
            if now - newest > expiry:
                return None
            return one(state, now)

        return read_lifetime
    period, width = spec.period_ms, spec.bucket_ms

    def read_window(state: Any, now: int) -> Any:
        lo, hi = (now - period) // width, now // width  # windows.window_bounds
        entries = [entry for entry in state if lo < entry[0] <= hi]
        if not entries:
            return default
        if len(entries) == 1:
            return one(entries[0], now)
        return combine(spec, entries, now)

    return read_window


def _states_reader(spec: AggSpec, one: EntryValue) -> _StatesReader:
    """``value_reader(spec, one)`` over a list of states, its common cases inline."""
    read = value_reader(spec, one)
    default, at = spec.default_value, _STORED_AT.get(spec.kind)
    if spec.period_ms is None:
        if spec.ttl_ms is not None:
            return lambda states, now: [read(s, now) for s in states]
        if at is not None:
            return lambda states, now: [default if s[0] is None else s[at] for s in states]
        if one is _plain_unique:
            return lambda states, now: [default if s[0] is None else list(s[1]) for s in states]
        return lambda states, now: [default if s[0] is None else one(s, now) for s in states]
    period, width = spec.period_ms, spec.bucket_ms

    # Only the newest bucket in scope (buckets ascend): the common case, inline.
    if at is not None:

        def stored_in_window(states: list[Any], now: int) -> list[Any]:
            lo, hi = (now - period) // width, now // width  # windows.window_bounds
            return [s[-1][at] if s and lo < s[-1][0] <= hi and (len(s) == 1 or s[-2][0] <= lo)
                    else read(s, now) for s in states]  # fmt: skip

        return stored_in_window

    def in_window(states: list[Any], now: int) -> list[Any]:
        lo, hi = (now - period) // width, now // width  # windows.window_bounds
        return [one(s[-1], now) if s and lo < s[-1][0] <= hi and (len(s) == 1 or s[-2][0] <= lo)
                else read(s, now) for s in states]  # fmt: skip

    return in_window


def _one(spec: AggSpec) -> EntryValue:
    """``spec.ops.one`` without the spec argument."""
    kind = spec.kind
    if kind in _STORED_AT:
        return _second if _STORED_AT[kind] == 1 else _third
    if kind == "mean":
        return _mean
    if kind == "unique_list":
        return _unique
    if kind.startswith("time_since_"):
        unit = spec.unit_ms
        return lambda entry, now: max(0.0, (now - entry[1]) / unit)
    general = spec.ops.one
    return lambda entry, now: general(spec, entry, now)


def _second(entry: list[Any], _now: int) -> Any:
    return entry[1]


def _third(entry: list[Any], _now: int) -> Any:
    return entry[2]


def _mean(entry: list[Any], _now: int) -> Any:
    return entry[1] / entry[2]


def _unique(entry: list[Any], _now: int) -> list[Any]:
    return [aggregations.key_value(key) for key in entry[1]]


def _plain_unique(entry: list[Any], _now: int) -> list[Any]:
    return list(entry[1])  # no tagged key: each key is its value


def _plain_categories(entry: list[Any], _now: int) -> dict[str, int]:
    """Highest counts first, ties in tracked order (``sorted`` is stable, in reverse too);
    no tagged key: each key is its own label, none colliding."""
    return dict(sorted(entry[1].items(), key=_count, reverse=True)[: aggregations.MAX_TRACKED])


# The kinds' value of a single entry when no key is tagged.
_PLAIN: dict[str, EntryValue] = {"unique_list": _plain_unique, "category_count": _plain_categories}
