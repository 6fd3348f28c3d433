"""The 14 attribute aggregations as pure state machines over JSON-serialisable state.

Contract (signals-api §2 Attribute, §3.1–3.2). For one attribute, described by ``AggSpec``:

- ``new_state(spec)`` → an empty state; ``apply(spec, state, value, ts_ms)`` folds one
  matching event into it and returns the state (mutated in place, or a new one after a
  TTL reset — always use the return value); ``read(spec, state, now_ms)`` → the value.
- A state is made of lists, dicts with ``str`` keys, str, int, float, bool and None only:
  ``orjson.loads(orjson.dumps(state)) == state``, and the loaded state behaves the same.
  ``read`` may return objects shared with the state (first/last values): do not mutate.
- ``value`` is the already-extracted property value (None = missing); ``ts_ms`` is the
  event time (``derived_tstamp``). Events may arrive in any order; duplicates count
  twice: de-duplication is the caller's job (offset watermarks).
- An event whose value the aggregation cannot use is a no-op (not even a TTL refresh):
  sum/min/max/mean take int and finite float only (bool and numeric strings are ignored);
  first/last take any value but None and inf/nan; the value-keyed kinds take str, int,
  bool and finite float (numbers that compare equal are one value: ``2.0`` reads as ``2``).
  counter and time_since_* use no value, so every event counts.
- ``read`` returns ``spec.default_value`` when there is no result (no usable event yet,
  or none inside the window), and None when a lifetime TTL has expired.

State shapes (``t`` = newest event time applied; ``b`` = bucket index):

- lifetime: one entry ``[t, *partial]`` (``t`` None while empty);
- windowed: ``[[b, *partial], ...]`` oldest bucket first (see ``windows``).

Partials: counter ``n``; sum ``total``; min/max ``m``; mean ``total, n``; first/last
``ts, value``; time_since_first/last ``ts``; unique_list ``{key: ts}, max_ts`` (dict in
recency order); most/least_frequent and category_count ``{key: count}``;
approx_count_distinct ``sketch`` (see ``hll``). ``key`` is ``value_key(value)``.

Orders and ties: first/last by event time; on equal times first keeps the earliest
applied, last takes the latest applied. unique_list orders by each value's newest
sighting (ties: the later applied is more recent). Frequency kinds track at most 100
values (per bucket when windowed): a new value arriving when 100 are tracked evicts the
least frequent one, the earliest tracked among equals, and starts at 1. Mode ties go to
the value tracked earliest; ``category_count`` returns the 100 highest counts, highest
first (ties: earliest tracked), as ``{label: count}`` (label = the string, or the
number/boolean as JSON text; counts of labels that collide, ``"1"`` and ``1``, are summed).

TTL (lifetime only): an event more than ``ttl_ms`` after the newest one applied first
resets the state (the old value had expired); a read more than ``ttl_ms`` after the
newest event returns None. The TTL clock is event time.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

from processor.domain import hll
from processor.domain.windows import (
    bucket_entry,
    bucket_width_ms,
    entries_in_window,
    is_bucket_expired,
    span_buckets,
    window_bounds,
)

KINDS = (
    "counter", "sum", "min", "max", "mean", "first", "last", "unique_list",
    "most_frequent", "least_frequent", "category_count", "approx_count_distinct",
    "time_since_last", "time_since_first",
)  # fmt: skip
TIME_UNITS_MS = {"s": 1000, "min": 60_000, "h": 3_600_000, "d": 86_400_000}
MAX_TRACKED = 100  # unique_list, most/least_frequent, category_count (§3.1)

Entry = list[Any]
State = list[Any]


class _Skip:
    """Marker returned by a value check: the event is a no-op for this aggregation."""

    __slots__ = ()

    def __repr__(self) -> str:
        return "SKIP"


SKIP: Any = _Skip()


# -- values ---------------------------------------------------------------------------------
# Value-keyed kinds need str dict keys (JSON objects) that keep 1, "1" and True apart:
# strings are their own key (the common case, no copy); other scalars get a tag after a
# control character that no ordinary string starts with (strings that do are escaped).
_TAG = "\x1f"


def value_key(value: Any) -> Any:
    """The str key of a scalar value, or SKIP for None, containers and non-finite floats."""
    kind = type(value)
    if kind is str:
        return _TAG + "s" + value if value.startswith(_TAG) else value
    if kind is int:
        return _TAG + "i" + str(value)
    if kind is float:
        if value - value != 0.0:  # inf and nan cannot be stored in JSON
            return SKIP
        return _TAG + ("i" + str(int(value)) if value.is_integer() else "f" + repr(value))
    if kind is bool:
        return _TAG + ("btrue" if value else "bfalse")
    return SKIP


def key_value(key: str) -> Any:
    """Inverse of ``value_key``."""
    if not key.startswith(_TAG):
        return key
    tag, body = key[1], key[2:]
    if tag == "i":
        return int(body)
    if tag == "f":
        return float(body)
    if tag == "b":
        return body == "true"
    return body


def key_label(key: str) -> str:
    """The ``category_count`` label of a key: the string itself or the JSON text."""
    return key[2:] if key.startswith(_TAG) else key


def numeric(value: Any) -> Any:
    """int or finite float as is; SKIP otherwise (bool, str, None, inf, nan)."""
    kind = type(value)
    if kind is int or (kind is float and value - value == 0.0):
        return value
    return SKIP


def present(value: Any) -> Any:
    """Any value but None and non-finite floats (JSON cannot hold them) for first/last.

    Containers are kept as given: they come from decoded JSON, so they encode again.
    """
    if value is None or (type(value) is float and value - value != 0.0):
        return SKIP
    return value


# -- per-kind partials: new entry, fold, read ------------------------------------------------
# ``fold(entry, value, ts)`` folds one event's raw value into one entry and returns True, or
# returns False, leaving the entry alone, when the kind cannot use the value (``prepare``
# gives SKIP for it). Checking and updating in one call keeps the hot path short; ``prepare``
# states the same rule for the reference model and for the rare paths that must know before
# folding (a TTL reset, a new bucket).


def _inc(e: Entry, _v: Any, _ts: int) -> bool:
    e[1] += 1
    return True


def _add(e: Entry, v: Any, _ts: int) -> bool:
    if type(v) is int or (type(v) is float and v - v == 0.0):  # numeric(v)
        e[1] += v
        return True
    return False


def _add_mean(e: Entry, v: Any, _ts: int) -> bool:
    if type(v) is int or (type(v) is float and v - v == 0.0):  # numeric(v)
        e[1] += v
        e[2] += 1
        return True
    return False


def _lower(e: Entry, v: Any, _ts: int) -> bool:
    if type(v) is int or (type(v) is float and v - v == 0.0):  # numeric(v)
        if e[1] is None or v < e[1]:
            e[1] = v
        return True
    return False


def _higher(e: Entry, v: Any, _ts: int) -> bool:
    if type(v) is int or (type(v) is float and v - v == 0.0):  # numeric(v)
        if e[1] is None or v > e[1]:
            e[1] = v
        return True
    return False


def _earlier(e: Entry, v: Any, ts: int) -> bool:
    if v is None or (type(v) is float and v - v != 0.0):  # present(v) is SKIP
        return False
    if e[1] is None or ts < e[1]:
        e[1] = ts
        e[2] = v
    return True


def _later(e: Entry, v: Any, ts: int) -> bool:
    if v is None or (type(v) is float and v - v != 0.0):  # present(v) is SKIP
        return False
    if e[1] is None or ts >= e[1]:
        e[1] = ts
        e[2] = v
    return True


def _oldest_ts(e: Entry, _v: Any, ts: int) -> bool:
    if e[1] is None or ts < e[1]:
        e[1] = ts
    return True


def _newest_ts(e: Entry, _v: Any, ts: int) -> bool:
    if e[1] is None or ts > e[1]:
        e[1] = ts
    return True


def _sighting(e: Entry, v: Any, ts: int) -> bool:
    key = value_key(v)
    if key is SKIP:
        return False
    sight(e, key, ts)
    return True


def sight(e: Entry, key: str, ts: int) -> None:
    """unique_list: record a sighting of ``key`` (a ``value_key``), keeping the dict ordered
    by (newest sighting ts, order applied)."""
    seen = e[1]
    old = seen.get(key)
    if old is not None:
        if ts < old:
            return
        del seen[key]
    if e[2] is None or ts >= e[2]:
        e[2] = ts
        seen[key] = ts  # in order: the common case, O(1)
    else:
        items = list(seen.items())
        pos = len(items)
        while pos and items[pos - 1][1] > ts:
            pos -= 1
        items.insert(pos, (key, ts))
        seen.clear()
        seen.update(items)
    if len(seen) > MAX_TRACKED:
        del seen[next(iter(seen))]


def _tally(e: Entry, v: Any, _ts: int) -> bool:
    key = value_key(v)
    if key is SKIP:
        return False
    tally(e, key)
    return True


def tally(e: Entry, key: str) -> None:
    """Frequency kinds: count one more ``key`` (a ``value_key``), evicting as documented."""
    counts = e[1]
    n = counts.get(key)
    if n is not None:
        counts[key] = n + 1
    else:
        if len(counts) >= MAX_TRACKED:
            del counts[min(counts, key=counts.__getitem__)]
        counts[key] = 1


def _sketch_add(e: Entry, v: Any, _ts: int) -> bool:
    key = value_key(v)
    if key is SKIP:
        return False
    hll.add(e[1], key)
    return True


# ``one(spec, entry, now)`` turns the single entry in scope (a lifetime state, or a window with
# one bucket in it: most reads) into the value; ``combine(spec, entries, now)`` does the same for
# two or more entries in scope, oldest bucket first.


def _partial(_s: AggSpec, e: Entry, _now: int) -> Any:
    return e[1]


def _total(_s: AggSpec, es: list[Entry], _now: int) -> Any:
    return sum(e[1] for e in es)


def _min(_s: AggSpec, es: list[Entry], _now: int) -> Any:
    return min(e[1] for e in es)


def _max(_s: AggSpec, es: list[Entry], _now: int) -> Any:
    return max(e[1] for e in es)


def _mean_one(_s: AggSpec, e: Entry, _now: int) -> Any:
    return e[1] / e[2]


def _mean(_s: AggSpec, es: list[Entry], _now: int) -> Any:
    return sum(e[1] for e in es) / sum(e[2] for e in es)


def _value_one(_s: AggSpec, e: Entry, _now: int) -> Any:
    return e[2]


def _first_value(_s: AggSpec, es: list[Entry], _now: int) -> Any:
    return es[0][2]


def _last_value(_s: AggSpec, es: list[Entry], _now: int) -> Any:
    return es[-1][2]


def _since_one(spec: AggSpec, e: Entry, now: int) -> float:
    newest: int = e[1]
    return max(0.0, (now - newest) / spec.unit_ms)


def _since_first(spec: AggSpec, es: list[Entry], now: int) -> float:
    return _since_one(spec, es[0], now)


def _since_last(spec: AggSpec, es: list[Entry], now: int) -> float:
    return _since_one(spec, es[-1], now)


def _unique_one(_s: AggSpec, e: Entry, _now: int) -> list[Any]:
    return [key_value(k) for k in e[1]]


def _unique(_s: AggSpec, es: list[Entry], _now: int) -> list[Any]:
    merged: dict[str, None] = {}
    for e in es:  # later buckets hold later sightings: moving to the end keeps recency
        for k in e[1]:
            merged.pop(k, None)
            merged[k] = None
    return [key_value(k) for k in list(merged)[-MAX_TRACKED:]]


def _merged_counts(es: list[Entry]) -> dict[str, int]:
    merged: dict[str, int] = {}
    for e in es:
        for k, n in e[1].items():
            merged[k] = merged.get(k, 0) + n
    return merged


def _most_of(counts: dict[str, int]) -> Any:
    return key_value(max(counts, key=counts.__getitem__))


def _least_of(counts: dict[str, int]) -> Any:
    return key_value(min(counts, key=counts.__getitem__))


def _categories_of(counts: dict[str, int]) -> dict[str, int]:
    top = sorted(counts.items(), key=lambda kv: -kv[1])[:MAX_TRACKED]
    out: dict[str, int] = {}
    for k, n in top:
        label = key_label(k)
        out[label] = out.get(label, 0) + n
    return out


def _distinct(_s: AggSpec, es: list[Entry], _now: int) -> int:
    return hll.count_union(e[1] for e in es)


@dataclass(frozen=True, slots=True)
class _Kind:
    new: Callable[[int | None], Entry]
    prepare: Callable[[Any], Any] | None  # None: the kind uses no value (every event counts)
    fold: Callable[[Entry, Any, int], bool]
    one: Callable[[AggSpec, Entry, int], Any]
    combine: Callable[[AggSpec, list[Entry], int], Any]


_KINDS: dict[str, _Kind] = {
    "counter": _Kind(lambda b: [b, 0], None, _inc, _partial, _total),
    "sum": _Kind(lambda b: [b, 0], numeric, _add, _partial, _total),
    "min": _Kind(lambda b: [b, None], numeric, _lower, _partial, _min),
    "max": _Kind(lambda b: [b, None], numeric, _higher, _partial, _max),
    "mean": _Kind(lambda b: [b, 0, 0], numeric, _add_mean, _mean_one, _mean),
    "first": _Kind(lambda b: [b, None, None], present, _earlier, _value_one, _first_value),
    "last": _Kind(lambda b: [b, None, None], present, _later, _value_one, _last_value),
    "unique_list": _Kind(lambda b: [b, {}, None], value_key, _sighting, _unique_one, _unique),
    "most_frequent": _Kind(lambda b: [b, {}], value_key, _tally,
                           lambda _s, e, _n: _most_of(e[1]),
                           lambda _s, es, _n: _most_of(_merged_counts(es))),
    "least_frequent": _Kind(lambda b: [b, {}], value_key, _tally,
                            lambda _s, e, _n: _least_of(e[1]),
                            lambda _s, es, _n: _least_of(_merged_counts(es))),
    "category_count": _Kind(lambda b: [b, {}], value_key, _tally,
                            lambda _s, e, _n: _categories_of(e[1]),
                            lambda _s, es, _n: _categories_of(_merged_counts(es))),
    "approx_count_distinct": _Kind(lambda b: [b, hll.new_sketch()], value_key, _sketch_add,
                                   lambda _s, e, _n: hll.count(e[1]), _distinct),
    "time_since_last": _Kind(lambda b: [b, None], None, _newest_ts, _since_one, _since_last),
    "time_since_first": _Kind(lambda b: [b, None], None, _oldest_ts, _since_one, _since_first),
}  # fmt: skip


# -- the spec and the public state machine -------------------------------------------------

Step = Callable[[State | None, Any, int], State]


@dataclass(frozen=True, slots=True)
class AggSpec:
    """One attribute's aggregation, validated once; derived fields are precomputed.

    ``period_ms`` None = lifetime. ``ttl_ms`` only with lifetime. ``time_unit`` is
    required by time_since_* and refused elsewhere. Raises ValueError when invalid.
    ``bucket_ms``, ``span`` (see ``windows``), ``unit_ms``, ``ops``, ``uses_value`` (False:
    the kind ignores the value, so callers need not resolve it) and ``step`` (``apply`` with
    the kind's functions bound) are derived here so that the hot path does no lookup by kind.
    """

    kind: str
    period_ms: int | None = None
    ttl_ms: int | None = None
    time_unit: str | None = None
    default_value: Any = field(default=None, hash=False)  # may be a list: unhashable
    bucket_ms: int = field(init=False, repr=False, compare=False)
    span: int = field(init=False, repr=False, compare=False)
    unit_ms: int = field(init=False, repr=False, compare=False)
    ops: _Kind = field(init=False, repr=False, compare=False)
    uses_value: bool = field(init=False, repr=False, compare=False)
    step: Step = field(init=False, repr=False, compare=False)

    def __post_init__(self) -> None:
        ops = _KINDS.get(self.kind)
        if ops is None:
            raise ValueError(f"unknown aggregation {self.kind!r}")
        timed = self.kind.startswith("time_since_")
        if timed and self.time_unit not in TIME_UNITS_MS:
            raise ValueError(f"{self.kind} needs time_unit in {sorted(TIME_UNITS_MS)}")
        if not timed and self.time_unit is not None:
            raise ValueError(f"time_unit is only valid for time_since_*, not {self.kind}")
        for name in ("period_ms", "ttl_ms"):
            given = getattr(self, name)
            if given is not None and (type(given) is not int or given <= 0):
                raise ValueError(f"{name} must be a positive int, got {given!r}")
        if self.period_ms is not None and self.ttl_ms is not None:
            raise ValueError("ttl applies to lifetime attributes only, not with a period")
        width = span = 0
        if self.period_ms is not None:
            width = bucket_width_ms(self.period_ms)
            span = span_buckets(self.period_ms, width)
        setter = object.__setattr__  # frozen: derived fields are set once, here
        setter(self, "bucket_ms", width)
        setter(self, "span", span)
        setter(self, "unit_ms", TIME_UNITS_MS.get(self.time_unit or "", 1))
        setter(self, "ops", ops)
        setter(self, "uses_value", ops.prepare is not None)
        step = _lifetime_step(ops, self.ttl_ms) if self.period_ms is None else _window_step(ops, width, span)
        setter(self, "step", step)


def new_state(spec: AggSpec) -> State:
    """An empty state for ``spec``: ``[None, *partial]`` lifetime, ``[]`` windowed."""
    return spec.ops.new(None) if spec.period_ms is None else []


def apply(spec: AggSpec, state: State | None, value: Any, ts_ms: int) -> State:
    """Fold one matching event into ``state`` (None: a new state); returns the state to keep
    (see module doc)."""
    return spec.step(state, value, ts_ms)


def _lifetime_step(ops: _Kind, ttl_ms: int | None) -> Step:
    new, prepare, fold = ops.new, ops.prepare, ops.fold

    def step(state: State | None, value: Any, ts: int) -> State:
        if state is None:
            state = new(None)
        elif ttl_ms is not None and state[0] is not None and ts - state[0] > ttl_ms:
            if prepare is not None and prepare(value) is SKIP:
                return state  # a no-op, not even a TTL refresh
            state = new(None)  # the old value had expired before this event
        if fold(state, value, ts):
            newest = state[0]
            if newest is None or ts > newest:
                state[0] = ts
        return state

    return step


def _window_step(ops: _Kind, width: int, span: int) -> Step:
    new, prepare, fold = ops.new, ops.prepare, ops.fold

    def step(state: State | None, value: Any, ts: int) -> State:
        if state is None:
            state = []
        bucket = ts // width
        if state and state[-1][0] == bucket:
            fold(state[-1], value, ts)  # same bucket as the newest: the hot path
            return state
        if prepare is not None and prepare(value) is SKIP:
            return state  # an unusable value creates no bucket
        entry = bucket_entry(state, bucket, span, new)
        if entry is not None:
            fold(entry, value, ts)
        return state

    return step


def read(spec: AggSpec, state: State, now_ms: int) -> Any:
    """The attribute value at ``now_ms``; ``state`` is not modified.

    Windowed reads are exact (per the bucket rule in ``windows``) for ``now_ms`` not
    earlier than the start of the newest applied event's bucket.
    """
    if spec.period_ms is None:
        newest = state[0]
        if newest is None:
            return spec.default_value
        if spec.ttl_ms is not None and now_ms - newest > spec.ttl_ms:
            return None
        return spec.ops.one(spec, state, now_ms)
    lo, hi = window_bounds(spec.period_ms, spec.bucket_ms, now_ms)
    entries = entries_in_window(state, lo, hi)
    if not entries:
        return spec.default_value
    if len(entries) == 1:
        return spec.ops.one(spec, entries[0], now_ms)
    return spec.ops.combine(spec, entries, now_ms)


def is_too_late(spec: AggSpec, ts_ms: int, now_ms: int, lateness_ms: int) -> bool:
    """Whether an event at ``ts_ms`` must not be applied at ``now_ms``.

    True when it is later than the allowed lateness (``now - ts > lateness``: count and
    drop it), or, for a windowed attribute, when its bucket has already left the window
    at ``now_ms`` (applying it could change no read from now on).
    """
    if now_ms - ts_ms > lateness_ms:
        return True
    if spec.period_ms is None:
        return False
    return is_bucket_expired(ts_ms // spec.bucket_ms, spec.period_ms, spec.bucket_ms, now_ms)


# -- reference model -------------------------------------------------------------------------
# Deliberately naive and independent of the incremental partials: it recomputes a value
# from the whole event list. Contract tests check the state machines (and the Redis engine)
# against it. It shares only the value rules (which values are usable, their keys), the
# bucket rule and, for frequency kinds, the documented 100-value eviction, which it
# simulates separately per bucket because the eviction outcome depends on arrival order.

Event = tuple[int, Any, int]  # (arrival index, prepared value, ts_ms)


def reference_value(spec: AggSpec, events: list[tuple[Any, int]], now_ms: int) -> Any:
    """The value ``read`` must give at ``now_ms`` after applying ``events`` in list order.

    ``events`` are ``(value, ts_ms)`` pairs in arrival order. Holds for windowed reads at
    ``now_ms`` not earlier than the start of the newest event's bucket (see ``read``).
    """
    usable: list[Event] = []
    prepare = spec.ops.prepare
    for i, (value, ts) in enumerate(events):
        prepared = value if prepare is None else prepare(value)
        if prepared is not SKIP:
            usable.append((i, prepared, ts))
    if spec.period_ms is None:
        kept: list[Event] = []
        newest: int | None = None
        for event in usable:
            ts = event[2]
            if newest is not None and spec.ttl_ms is not None and ts - newest > spec.ttl_ms:
                kept = []  # the value had expired before this event arrived
            kept.append(event)
            newest = ts if newest is None else max(newest, ts)
        if not kept:
            return spec.default_value
        if newest is not None and spec.ttl_ms is not None and now_ms - newest > spec.ttl_ms:
            return None
        return _reference_compute(spec, [kept], now_ms)
    width = spec.bucket_ms
    lo, hi = window_bounds(spec.period_ms, width, now_ms)
    inside = [event for event in usable if lo < event[2] // width <= hi]
    if not inside:
        return spec.default_value
    buckets = sorted({event[2] // width for event in inside})
    groups = [[event for event in inside if event[2] // width == b] for b in buckets]
    return _reference_compute(spec, groups, now_ms)


def _reference_compute(spec: AggSpec, groups: list[list[Event]], now_ms: int) -> Any:
    kind = spec.kind
    events = [event for group in groups for event in group]
    values = [event[1] for event in events]
    by_time = sorted(events, key=lambda event: (event[2], event[0]))
    simple: dict[str, Callable[[], Any]] = {
        "counter": lambda: len(events),
        "sum": lambda: sum(values),
        "min": lambda: min(values),
        "max": lambda: max(values),
        "mean": lambda: sum(values) / len(values),
        "first": lambda: by_time[0][1],
        "last": lambda: by_time[-1][1],
        "time_since_first": lambda: max(0.0, (now_ms - by_time[0][2]) / spec.unit_ms),
        "time_since_last": lambda: max(0.0, (now_ms - by_time[-1][2]) / spec.unit_ms),
    }
    if kind in simple:
        return simple[kind]()
    if kind == "unique_list":
        newest: dict[str, tuple[int, int]] = {}
        for i, key, ts in events:
            newest[key] = max(newest.get(key, (ts, i)), (ts, i))
        return [key_value(k) for k in sorted(newest, key=newest.__getitem__)[-MAX_TRACKED:]]
    if kind == "approx_count_distinct":
        hashes = {hll.hash_hex(key) for key in values}
        if len(hashes) <= hll.EXACT_MAX:
            return len(hashes)
        return hll.estimate_hashes(int(h, 16) for h in hashes)
    return _reference_frequencies(kind, groups)


def _reference_frequencies(kind: str, groups: list[list[Event]]) -> Any:
    merged: list[list[Any]] = []  # [key, count] in order of first appearance
    for group in groups:
        table: list[list[Any]] = []
        for _, key, _ts in group:
            row = next((row for row in table if row[0] == key), None)
            if row is not None:
                row[1] += 1
                continue
            if len(table) >= MAX_TRACKED:
                lowest = min(row[1] for row in table)
                table.remove(next(row for row in table if row[1] == lowest))
            table.append([key, 1])
        for key, n in table:
            row = next((row for row in merged if row[0] == key), None)
            if row is None:
                merged.append([key, n])
            else:
                row[1] += n
    if kind == "most_frequent":
        top = max(row[1] for row in merged)
        return key_value(next(row[0] for row in merged if row[1] == top))
    if kind == "least_frequent":
        bottom = min(row[1] for row in merged)
        return key_value(next(row[0] for row in merged if row[1] == bottom))
    labels: dict[str, int] = {}
    for key, n in sorted(merged, key=lambda row: -row[1])[:MAX_TRACKED]:
        labels[key_label(key)] = labels.get(key_label(key), 0) + n
    return labels
