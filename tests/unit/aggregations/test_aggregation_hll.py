"""HyperLogLog sketch: stable hashing, phases, accuracy, unions."""

from __future__ import annotations

import subprocess
import sys

import orjson
import pytest

from processor.domain import hll
from processor.domain.aggregations import AggSpec, apply, new_state, read


def sketch_of(keys: list[str]) -> list:
    sketch = hll.new_sketch()
    for key in keys:
        hll.add(sketch, key)
    return sketch


def test_hash_is_pinned_and_independent_of_the_process_hash_seed() -> None:
    # pinned (checked with coreutils: printf /home | b2sum -l 64): persisted sketches must
    # stay valid across versions and machines
    assert hll.hash_hex("/home") == "0d032e2c584e00d8"
    code = "from processor.domain import hll; print(hll.hash_hex('/home'))"
    for seed in ("1", "2"):
        out = subprocess.run(
            [sys.executable, "-c", code],
            env={"PYTHONHASHSEED": seed, "PATH": ""},
            capture_output=True,
            text=True,
            check=True,
        )
        assert out.stdout.strip() == "0d032e2c584e00d8"


def test_register_of_uses_top_bits_for_index_and_counts_leading_zeros() -> None:
    assert hll.register_of(0) == (0, hll.Q + 1)
    assert hll.register_of((1 << 64) - 1) == (hll.M - 1, 1)
    assert hll.register_of(1) == (0, hll.Q)


def test_sketch_moves_exact_then_sparse_then_dense() -> None:
    sketch = sketch_of([f"k{i}" for i in range(hll.EXACT_MAX)])
    assert sketch[0] == hll.MODE_EXACT and hll.count(sketch) == hll.EXACT_MAX
    hll.add(sketch, "one more")
    assert sketch[0] == hll.MODE_SPARSE
    for i in range(3000):
        hll.add(sketch, f"x{i}")
    assert sketch[0] == hll.MODE_DENSE and len(sketch[1]) == hll.M


@pytest.mark.parametrize("n", [200, 5000])
def test_phases_give_the_same_estimate_as_direct_registers(n: int) -> None:
    keys = [f"id-{i}" for i in range(n)]
    expected = hll.estimate_hashes(int(hll.hash_hex(k), 16) for k in keys)
    assert hll.count(sketch_of(keys)) == expected
    loaded = orjson.loads(orjson.dumps(sketch_of(keys)))
    assert hll.count(loaded) == expected


@pytest.mark.parametrize(("n", "prefix"), [(10_000, "a"), (10_000, "b"), (100_000, "c")])
def test_relative_error_within_3_percent(n: int, prefix: str) -> None:
    sketch = sketch_of([f"{prefix}{i}" for i in range(n)])
    assert abs(hll.count(sketch) - n) / n < 0.03


def test_union_of_mixed_modes_equals_one_sketch_of_everything() -> None:
    parts = [[f"u{i}" for i in range(50)], [f"u{i}" for i in range(40, 400)],
             [f"u{i}" for i in range(300, 3000)]]  # fmt: skip
    sketches = [sketch_of(p) for p in parts]
    assert [s[0] for s in sketches] == [hll.MODE_EXACT, hll.MODE_SPARSE, hll.MODE_DENSE]
    assert hll.count_union(sketches) == hll.count(sketch_of([k for p in parts for k in p]))
    small = [sketch_of(["a", "b"]), sketch_of(["b", "c"])]
    assert hll.count_union(small) == 3
    assert hll.count_union([]) == 0


def test_approx_count_distinct_attribute_on_100k_values() -> None:
    spec = AggSpec("approx_count_distinct")
    state = new_state(spec)
    for i in range(100_000):
        state = apply(spec, state, f"user-{i % 50_000}", i)
    assert abs(read(spec, state, 100_000) - 50_000) / 50_000 < 0.03
    assert len(orjson.dumps(state)) < 40_000
