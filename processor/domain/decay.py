"""When an attribute's value next changes by time alone (no new event).

Segments over windowed attributes (``page_views_7d >= 3``) or TTL'd lifetime attributes can
change membership while nothing happens; the scheduler needs the moment to re-evaluate.
"""

from __future__ import annotations

from typing import Any

from processor.domain.aggregations import AggSpec


def next_change(spec: AggSpec, state: Any, now_ms: int) -> int | None:
    """The earliest epoch ms > ``now_ms`` at which ``read`` may return another value.

    Windowed: a read at T covers buckets ``b`` with ``(T - period) // w < b``, so the oldest
    bucket ``b0`` still inside drops out at ``T = b0 * w + period``. Lifetime with TTL: the
    value expires ``ttl`` after the newest event. ``time_since_*`` change continuously and
    are not scheduled (a segment over them is re-checked on its other triggers).
    """
    if not state:
        return None
    if spec.period_ms is not None:
        width = spec.bucket_ms
        lo = (now_ms - spec.period_ms) // width
        for entry in state:  # oldest first
            if entry[0] > lo:
                due = int(entry[0] * width + spec.period_ms)
                return due if due > now_ms else None
        return None
    newest = state[0]
    if spec.ttl_ms is not None and newest is not None:
        due = int(newest + spec.ttl_ms + 1)
        return due if due > now_ms else None
    return None
