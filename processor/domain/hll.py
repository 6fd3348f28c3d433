"""HyperLogLog sketch for ``approx_count_distinct``, as plain JSON-serialisable lists.

Precision p = 14 (m = 16384 registers): standard error 1.04/sqrt(m) ≈ 0.81 %.

A sketch is a two-element list ``[mode, data]`` so that it can be mutated in place and
stored as JSON without conversion:

- ``[0, {hex64: 1, ...}]`` **exact**: the distinct 64-bit hashes (16 hex chars) seen so
  far, up to ``EXACT_MAX``. The count is exact (up to 64-bit hash collisions).
- ``[1, {"idx": rank, ...}]`` **sparse**: only the non-zero registers, keyed by the
  register index as a decimal string (JSON object keys must be strings).
- ``[2, [rank, ...]]`` **dense**: all m registers.

A sketch only moves forward (exact → sparse → dense), and each step keeps exactly the
register values the dense form would have, so the estimate never depends on the path.

Hashing is blake2b with an 8-byte digest over the UTF-8 bytes of the value key (see
``aggregations.value_key``): stable across processes and machines, unlike ``hash()``.

The estimate uses Ertl's improved raw estimator ("New cardinality estimation algorithms
for HyperLogLog sketches", 2017, algorithm 6) which needs neither the empirical bias
tables of HLL++ nor a switch to linear counting: it is unbiased over the whole range.
"""

from __future__ import annotations

import math
from collections import Counter
from collections.abc import Iterable
from hashlib import blake2b
from typing import Any

P = 14
M = 1 << P
Q = 64 - P  # bits left for the rank; ranks are 1..Q+1
EXACT_MAX = 128  # distinct hashes kept exactly before switching to registers
SPARSE_MAX = 1024  # non-zero registers kept sparse (~10 B each in JSON) before dense (~33 KB)

MODE_EXACT, MODE_SPARSE, MODE_DENSE = 0, 1, 2
_LOW_MASK = (1 << Q) - 1
_ALPHA_INF_M2 = M * M / (2.0 * math.log(2.0))


def new_sketch() -> list[Any]:
    """An empty sketch (exact mode)."""
    return [MODE_EXACT, {}]


def hash_hex(key: str) -> str:
    """Stable 64-bit hash of ``key`` as 16 lowercase hex characters."""
    return blake2b(key.encode("utf-8", "surrogatepass"), digest_size=8).hexdigest()


def register_of(hash64: int) -> tuple[int, int]:
    """(register index, rank) of a 64-bit hash: top P bits index, rank of the rest."""
    return hash64 >> Q, Q + 1 - (hash64 & _LOW_MASK).bit_length()


def add(sketch: list[Any], key: str) -> None:
    """Add one value key to ``sketch`` in place."""
    add_hash(sketch, hash_hex(key))


def add_hash(sketch: list[Any], hx: str) -> None:
    """Add the key whose ``hash_hex`` is ``hx`` to ``sketch`` in place. In exact mode a hash
    already held changes nothing: ``folds`` checks that inline and calls this only otherwise."""
    mode, data = sketch
    if mode == MODE_EXACT:
        if hx not in data:
            data[hx] = 1
            if len(data) > EXACT_MAX:
                _to_sparse(sketch)
        return
    idx, rank = register_of(int(hx, 16))
    if mode == MODE_DENSE:
        if data[idx] < rank:
            data[idx] = rank
        return
    skey = str(idx)
    if data.get(skey, 0) < rank:
        data[skey] = rank
        if len(data) > SPARSE_MAX:
            _to_dense(sketch)


def _to_sparse(sketch: list[Any]) -> None:
    registers: dict[str, int] = {}
    for hx in sketch[1]:
        idx, rank = register_of(int(hx, 16))
        skey = str(idx)
        if registers.get(skey, 0) < rank:
            registers[skey] = rank
    sketch[0], sketch[1] = MODE_SPARSE, registers
    if len(registers) > SPARSE_MAX:
        _to_dense(sketch)


def _to_dense(sketch: list[Any]) -> None:
    dense = [0] * M
    for skey, rank in sketch[1].items():
        dense[int(skey)] = rank
    sketch[0], sketch[1] = MODE_DENSE, dense


def count(sketch: list[Any]) -> int:
    """Exact count while exact, else the rounded HyperLogLog estimate."""
    return count_union((sketch,))


def count_union(sketches: Iterable[list[Any]]) -> int:
    """Distinct count of the union of ``sketches`` (none is modified).

    The union is exact when every sketch is exact and the union holds at most
    ``EXACT_MAX`` hashes — the same rule a single sketch fed every value would follow.
    """
    sketches = list(sketches)
    if all(s[0] == MODE_EXACT for s in sketches):
        union: set[str] = set()
        for s in sketches:
            union.update(s[1])
        if len(union) <= EXACT_MAX:
            return len(union)
        return estimate_hashes(int(hx, 16) for hx in union)
    dense = [0] * M
    for s in sketches:
        _merge_into(dense, s)
    return estimate(dense)


def _merge_into(dense: list[int], sketch: list[Any]) -> None:
    mode, data = sketch
    if mode == MODE_DENSE:
        for idx, rank in enumerate(data):
            if dense[idx] < rank:
                dense[idx] = rank
        return
    if mode == MODE_EXACT:
        pairs: Iterable[tuple[int, int]] = (register_of(int(hx, 16)) for hx in data)
    else:
        pairs = ((int(skey), rank) for skey, rank in data.items())
    for idx, rank in pairs:
        if dense[idx] < rank:
            dense[idx] = rank


def estimate_hashes(hashes: Iterable[int]) -> int:
    """Rounded estimate for a collection of 64-bit hashes (used by reference models)."""
    dense = [0] * M
    for h in hashes:
        idx, rank = register_of(h)
        if dense[idx] < rank:
            dense[idx] = rank
    return estimate(dense)


def estimate(registers: list[int]) -> int:
    """Ertl's improved raw estimate from all m registers, rounded to an int."""
    hist = Counter(registers)
    if hist.get(0, 0) == M:
        return 0
    z = M * _tau(1.0 - hist.get(Q + 1, 0) / M)
    for k in range(Q, 0, -1):
        z = 0.5 * (z + hist.get(k, 0))
    z += M * _sigma(hist.get(0, 0) / M)
    return round(_ALPHA_INF_M2 / z)


def _sigma(x: float) -> float:
    if x == 1.0:
        return math.inf
    y, z = 1.0, x
    while True:
        x *= x
        z_prev = z
        z += x * y
        y += y
        if z == z_prev:
            return z


def _tau(x: float) -> float:
    if x == 0.0 or x == 1.0:
        return 0.0
    y, z = 1.0, 1.0 - x
    while True:
        x = math.sqrt(x)
        z_prev = z
        y *= 0.5
        z -= (1.0 - x) ** 2 * y
        if z == z_prev:
            return z / 3.0
