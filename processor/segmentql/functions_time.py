"""Builtins over time (spec §1.5). All times are UTC; ``now()`` is the evaluation clock."""

from __future__ import annotations

from collections.abc import Callable
from datetime import UTC, datetime
from typing import Any
from zoneinfo import ZoneInfo, ZoneInfoNotFoundError

from .datemath import from_datetime, to_datetime
from .registry import CallContext, FunctionSpec, table
from .values import NOT_OK, Instant, to_ms


def _now(_: list[Any], ctx: CallContext) -> Any:
    return Instant(ctx.now_ms)


def _todate(args: list[Any], ctx: CallContext) -> Any:
    if len(args) == 2:
        return _todate_layout(args[0], args[1])
    ms = to_ms(args[0], ctx.now_ms)
    return NOT_OK if ms is None else Instant(ms)


_GO_LAYOUT = {"2006": "%Y", "01": "%m", "02": "%d", "15": "%H", "04": "%M", "05": "%S",
              "Jan": "%b", "Mon": "%a", "06": "%y", "MST": "%Z", "-0700": "%z"}


def _todate_layout(layout: Any, value: Any) -> Any:
    """``todate(layout, x)`` with a Go reference layout such as ``"2006-01-02"``."""
    if not isinstance(layout, str) or not isinstance(value, str):
        return NOT_OK
    fmt = layout
    for go, py in sorted(_GO_LAYOUT.items(), key=lambda kv: -len(kv[0])):
        fmt = fmt.replace(go, py)
    try:
        return Instant(from_datetime(datetime.strptime(value, fmt)))
    except ValueError:
        return NOT_OK


def _todatein(args: list[Any], ctx: CallContext) -> Any:
    """Parse a naive date string as wall time in the named zone."""
    if not isinstance(args[0], str) or not isinstance(args[1], str):
        return NOT_OK
    try:
        zone = ZoneInfo(args[1])
    except (ZoneInfoNotFoundError, ValueError):
        return NOT_OK
    ms = to_ms(args[0], ctx.now_ms)
    dt = None if ms is None else to_datetime(ms)
    if dt is None:
        return NOT_OK
    local = dt.replace(tzinfo=zone)
    return Instant(from_datetime(local.astimezone(UTC)))


def _part(extract: Callable[[datetime], Any]) -> Callable[[list[Any], CallContext], Any]:
    def impl(args: list[Any], ctx: CallContext) -> Any:
        value = args[0] if args else Instant(ctx.now_ms)
        ms = to_ms(value, ctx.now_ms)
        dt = None if ms is None else to_datetime(ms)
        return NOT_OK if dt is None else extract(dt)

    return impl


def _strftime(args: list[Any], ctx: CallContext) -> Any:
    ms = to_ms(args[0], ctx.now_ms)
    dt = None if ms is None else to_datetime(ms)
    if dt is None or not isinstance(args[1], str):
        return NOT_OK
    try:
        return dt.strftime(args[1])
    except ValueError:
        return NOT_OK


def _unixtrunc(args: list[Any], ctx: CallContext) -> Any:
    ms = to_ms(args[0], ctx.now_ms)
    if ms is None:
        return NOT_OK
    unit = args[1] if len(args) > 1 else "seconds"
    return ms if unit == "milliseconds" else ms // 1000


def _seconds(args: list[Any], ctx: CallContext) -> Any:
    ms = to_ms(args[0], ctx.now_ms)
    dt = None if ms is None else to_datetime(ms)
    return NOT_OK if dt is None else dt.minute * 60 + dt.second


def _go_weekday(dt: datetime) -> int:
    return (dt.weekday() + 1) % 7  # Go counts Sunday as 0


TIME_FUNCTIONS = table(
    FunctionSpec("now", 0, 0, _now),
    FunctionSpec("todate", 1, 2, _todate),
    FunctionSpec("todatein", 2, 2, _todatein),
    FunctionSpec("yy", 0, 1, _part(lambda d: d.year % 100)),
    FunctionSpec("yymm", 0, 1, _part(lambda d: d.strftime("%y%m"))),
    FunctionSpec("mm", 0, 1, _part(lambda d: d.month)),
    FunctionSpec("monthofyear", 0, 1, _part(lambda d: d.month)),
    FunctionSpec("dayofweek", 0, 1, _part(_go_weekday)),
    FunctionSpec("hourofday", 0, 1, _part(lambda d: d.hour)),
    FunctionSpec("hourofweek", 0, 1, _part(lambda d: _go_weekday(d) * 24 + d.hour)),
    FunctionSpec("totimestamp", 1, 1, _part(lambda d: from_datetime(d) // 1000)),
    FunctionSpec("seconds", 1, 1, _seconds),
    FunctionSpec("strftime", 2, 2, _strftime),
    FunctionSpec("extract", 2, 2, _strftime),
    FunctionSpec("unixtrunc", 1, 2, _unixtrunc),
)

