"""Micro-benchmark: SegmentQL evaluation and time boundaries on plain dict profiles.

Times ``evaluate`` (compiled) next to the tree-walking reference ``Evaluator`` on the engine
benchmark's segments plus a few time-based ones, and ``next_boundary`` on the time-based
ones. Prints microseconds per call, best of ``--repeat`` runs. Usage:

    python bench/bench_segmentql.py [--profiles 2000] [--repeat 3]
"""

from __future__ import annotations

import argparse
import random
import sys
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from bench import workload  # noqa: E402
from processor.segmentql import Statement, evaluate, next_boundary, parse  # noqa: E402
from processor.segmentql.evaluator import Evaluator  # noqa: E402

NOW = 1_767_312_000_000
DAY = 86_400_000
TIME_SEGMENTS = (
    'FILTER last_active_ts > "now-30d"',
    'FILTER AND(orders >= 2, last_order_ts BETWEEN "now-90d" AND "now-7d")',
    'FILTER renewal_date < "now+7d"',
    'FILTER signup_ts > "now-1M"',
)
EXTRA_SEGMENTS = (
    'FILTER country IN ("de", "fr", "nl", "be")',
    'FILTER email LIKE "*@example.com"',
    'FILTER AND(NOT plan = "free", tags CONTAINS "vip")',
)


def profiles(count: int) -> list[dict[str, Any]]:
    rng = random.Random(7)
    out = []
    for _ in range(count):
        profile: dict[str, Any] = {
            "page_views": rng.randint(0, 10), "cart_adds": rng.randint(0, 5),
            "cart_value": rng.uniform(0, 200), "revenue_7d": rng.uniform(0, 300),
            "browser": rng.choice(["Chrome", "Firefox", "Safari"]),
            "page_views_1h": rng.randint(0, 8), "orders": rng.randint(0, 4),
            "max_price": rng.uniform(0, 200), "country": rng.choice(["de", "us", "fr", "jp"]),
            "email": f"u{rng.randint(0, 99)}@{rng.choice(['example.com', 'x.org'])}",
            "plan": rng.choice(["free", "pro"]), "tags": rng.sample(["vip", "new", "b2b"], 2),
            "last_active_ts": NOW - rng.randint(0, 60) * DAY,
            "last_order_ts": NOW - rng.randint(0, 120) * DAY,
            "renewal_date": NOW + rng.randint(0, 30) * DAY,
            "signup_ts": NOW - rng.randint(0, 60) * DAY,
        }
        for name in rng.sample(sorted(profile), 3):
            del profile[name]  # some fields missing, as on real profiles
        out.append(profile)
    return out


def best_us(calls: int, repeat: int, run: Callable[[], None]) -> float:
    best = float("inf")
    for _ in range(repeat):
        t0 = time.perf_counter()
        run()
        best = min(best, time.perf_counter() - t0)
    return best * 1e6 / calls


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--profiles", type=int, default=2000)
    parser.add_argument("--repeat", type=int, default=3)
    args = parser.parse_args()
    bench_texts = [s["segment_ql"] for s in workload.segments(10)]
    plain = [parse(text) for text in (*bench_texts, *EXTRA_SEGMENTS)]
    timed = [parse(text) for text in TIME_SEGMENTS]
    people = profiles(args.profiles)

    def compiled_run(stmts: list[Statement]) -> Callable[[], None]:
        def run() -> None:
            for profile in people:
                for stmt in stmts:
                    evaluate(stmt, profile, now_ms=NOW)
        return run

    def reference_run(stmts: list[Statement]) -> Callable[[], None]:
        def run() -> None:
            for profile in people:
                for stmt in stmts:
                    Evaluator(profile, NOW).value(stmt.expr)
        return run

    def boundary_run() -> None:
        for profile in people:
            for stmt in timed:
                next_boundary(stmt, profile, now_ms=NOW)

    print(f"{len(people):,} profiles; best of {args.repeat}, microseconds per call:")
    for label, stmts in (("engine bench segments + extras", plain), ("time segments", timed)):
        calls = len(people) * len(stmts)
        ref = best_us(calls, args.repeat, reference_run(stmts))
        new = best_us(calls, args.repeat, compiled_run(stmts))
        print(f"  evaluate, {label}: tree walker {ref:.2f}  compiled {new:.2f}  "
              f"({ref / new:.1f}x)")
    calls = len(people) * len(timed)
    print(f"  next_boundary, time segments: {best_us(calls, args.repeat, boundary_run):.2f}")


if __name__ == "__main__":
    main()
