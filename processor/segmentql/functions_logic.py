"""Builtins for logic, comparison, coercion, math and lists/maps (spec §1.5)."""

from __future__ import annotations

import math
import re
from collections.abc import Mapping
from typing import Any

from .operators import equal, ordered
from .registry import CallContext, FunctionSpec, table
from .values import MISSING, NOT_OK, Instant, is_number, parse_bool, to_ms, to_number, to_text
from .values import truthy as _truthy


def _present(value: Any) -> bool:
    return value is not MISSING and value is not NOT_OK


def _exists(args: list[Any], _: CallContext) -> Any:
    return _present(args[0])


def _not(args: list[Any], _: CallContext) -> Any:
    return not _truthy(args[0])


def _any(args: list[Any], _: CallContext) -> Any:
    return any(_truthy(a) for a in args)


def _all(args: list[Any], _: CallContext) -> Any:
    return all(_truthy(a) for a in args)


def _oneof(args: list[Any], _: CallContext) -> Any:
    for arg in args:
        if _present(arg) and _truthy(arg):
            return arg
    return NOT_OK


def _compare(op: str) -> Any:
    def impl(args: list[Any], ctx: CallContext) -> Any:
        # ne(not_a_field, 5) is false, unlike "!=" (spec §1.5).
        if not (_present(args[0]) and _present(args[1])):
            return False
        if op in ("eq", "ne"):
            result = equal(args[0], args[1], ctx.now_ms)
            if result is NOT_OK:
                return False
            return result if op == "eq" else not result
        sym = {"gt": ">", "ge": ">=", "lt": "<", "le": "<="}[op]
        result = ordered(sym, args[0], args[1], ctx.now_ms)
        return False if result is NOT_OK else result

    return impl


_NUMERIC_JUNK = re.compile(r"[$,\s€£]")


def _toint(args: list[Any], _: CallContext) -> Any:
    value = args[0]
    if isinstance(value, bool):
        return int(value)
    if isinstance(value, str):
        value = _NUMERIC_JUNK.sub("", value)  # toint("5,555") is 5555, toint("$5") is 5
    number = to_number(value)
    return NOT_OK if number is None else int(number)


def _tonumber(args: list[Any], _: CallContext) -> Any:
    value = args[0]
    if isinstance(value, str):
        value = _NUMERIC_JUNK.sub("", value)
    number = to_number(value)
    return NOT_OK if number is None or isinstance(value, bool) else float(number)


def _tostring(args: list[Any], _: CallContext) -> Any:
    text = to_text(args[0])
    return NOT_OK if text is None else text


def _tobool(args: list[Any], _: CallContext) -> Any:
    value = args[0]
    if isinstance(value, bool):
        return value
    if is_number(value):
        return value != 0
    if isinstance(value, str):
        parsed = parse_bool(value.strip())
        return NOT_OK if parsed is None else parsed
    return NOT_OK


_CASTS = {"int": _toint, "integer": _toint, "bigint": _toint, "number": _tonumber,
          "float": _tonumber, "string": _tostring, "char": _tostring, "varchar": _tostring,
          "text": _tostring, "bool": _tobool, "boolean": _tobool}


def _cast(args: list[Any], ctx: CallContext) -> Any:
    if len(args) < 2 or not isinstance(args[1], str):
        return NOT_OK
    target = args[1].lower()
    if target in ("time", "date", "datetime", "timestamp"):
        ms = to_ms(args[0], ctx.now_ms)
        return NOT_OK if ms is None else Instant(ms)
    impl = _CASTS.get(target)
    return NOT_OK if impl is None else impl([args[0]], ctx)


def _unsign(args: list[Any], _: CallContext) -> Any:
    number = to_number(args[0])
    return NOT_OK if number is None else abs(number)


def _sqrt(args: list[Any], _: CallContext) -> Any:
    number = to_number(args[0])
    return NOT_OK if number is None or number < 0 else math.sqrt(number)


def _pow(args: list[Any], _: CallContext) -> Any:
    base, exp = to_number(args[0]), to_number(args[1])
    if base is None or exp is None:
        return NOT_OK
    try:
        result = math.pow(base, exp)
    except (OverflowError, ValueError):
        return NOT_OK
    return result if math.isfinite(result) else NOT_OK


def _numbers(args: list[Any]) -> list[int | float] | None:
    flat: list[Any] = []
    for arg in args:
        flat.extend(arg if isinstance(arg, list | tuple) else [arg])
    numbers = [to_number(v) for v in flat]
    return None if any(n is None for n in numbers) else numbers  # type: ignore[return-value]


def _sum(args: list[Any], _: CallContext) -> Any:
    numbers = _numbers(args)
    return NOT_OK if numbers is None else sum(numbers)


def _avg(args: list[Any], _: CallContext) -> Any:
    numbers = _numbers(args)
    return NOT_OK if not numbers else sum(numbers) / len(numbers)


def _count(args: list[Any], _: CallContext) -> Any:
    return sum(len(a) if isinstance(a, list | tuple | Mapping) else 1 for a in args)


def _len(args: list[Any], _: CallContext) -> Any:
    value = args[0]
    if isinstance(value, str | list | tuple | Mapping):
        return len(value)
    return NOT_OK


def _mapkeys(args: list[Any], _: CallContext) -> Any:
    return list(args[0].keys()) if isinstance(args[0], Mapping) else NOT_OK


def _mapvalues(args: list[Any], _: CallContext) -> Any:
    return list(args[0].values()) if isinstance(args[0], Mapping) else NOT_OK


def _array_index(args: list[Any], _: CallContext) -> Any:
    seq, index = args[0], to_number(args[1])
    if not isinstance(seq, list | tuple) or not isinstance(index, int):
        return NOT_OK
    return seq[index] if -len(seq) <= index < len(seq) else NOT_OK


def _array_slice(args: list[Any], _: CallContext) -> Any:
    seq = args[0]
    numbers = [to_number(a) for a in args[1:]]
    bounds = [b for b in numbers if isinstance(b, int)]
    if not isinstance(seq, list | tuple) or len(bounds) != len(numbers):
        return NOT_OK
    start = bounds[0]
    stop = bounds[1] if len(bounds) > 1 else None
    return list(seq[start:stop])


def _geodistance(args: list[Any], _: CallContext) -> Any:
    """Lytics ``geodistance(field, "lat,lon", km)``: is the field within ``km`` of the point."""
    here, there, radius = _latlon(args[0]), _latlon(args[1]), to_number(args[2])
    if here is None or there is None or radius is None:
        return NOT_OK
    return _haversine_km(here, there) <= radius


def _latlon(value: Any) -> tuple[float, float] | None:
    if isinstance(value, str):
        value = value.split(",")
    if isinstance(value, Mapping):
        value = [value.get("lat"), value.get("lon", value.get("lng"))]
    if not isinstance(value, list | tuple) or len(value) != 2:
        return None
    lat, lon = to_number(value[0]), to_number(value[1])
    if lat is None or lon is None or abs(lat) > 90 or abs(lon) > 180:
        return None
    return float(lat), float(lon)


def _haversine_km(a: tuple[float, float], b: tuple[float, float]) -> float:
    lat1, lon1, lat2, lon2 = map(math.radians, (*a, *b))
    h = math.sin((lat2 - lat1) / 2) ** 2 + \
        math.cos(lat1) * math.cos(lat2) * math.sin((lon2 - lon1) / 2) ** 2
    return 2 * 6371.0088 * math.asin(min(1.0, math.sqrt(h)))


LOGIC_FUNCTIONS = table(
    FunctionSpec("exists", 1, 1, _exists, sees_missing=True),
    FunctionSpec("not", 1, 1, _not),
    FunctionSpec("any", 1, None, _any, sees_missing=True),
    FunctionSpec("all", 1, None, _all, sees_missing=True),
    FunctionSpec("oneof", 1, None, _oneof, sees_missing=True),
    *(FunctionSpec(op, 2, 2, _compare(op), sees_missing=True)
      for op in ("eq", "ne", "gt", "ge", "lt", "le")),
    FunctionSpec("toint", 1, 1, _toint),
    FunctionSpec("tonumber", 1, 1, _tonumber),
    FunctionSpec("tostring", 1, 1, _tostring),
    FunctionSpec("tobool", 1, 1, _tobool),
    FunctionSpec("cast", 2, 2, _cast),
    FunctionSpec("unsign", 1, 1, _unsign),
    FunctionSpec("sqrt", 1, 1, _sqrt),
    FunctionSpec("pow", 2, 2, _pow),
    FunctionSpec("sum", 1, None, _sum),
    FunctionSpec("avg", 1, None, _avg),
    FunctionSpec("count", 1, None, _count),
    FunctionSpec("len", 1, 1, _len),
    FunctionSpec("char_length", 1, 1, _len),
    FunctionSpec("mapkeys", 1, 1, _mapkeys),
    FunctionSpec("mapvalues", 1, 1, _mapvalues),
    FunctionSpec("array.index", 2, 2, _array_index),
    FunctionSpec("array.slice", 2, 3, _array_slice),
    FunctionSpec("geodistance", 3, 3, _geodistance),
)
