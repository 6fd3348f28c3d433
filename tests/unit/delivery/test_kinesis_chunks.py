"""PutRecords batching: at most 500 records and 5 MiB per call, order kept."""

from __future__ import annotations

from hypothesis import given
from hypothesis import strategies as st

from processor.sinks.kinesis import MAX_BATCH_BYTES, MAX_BATCH_RECORDS, chunks


def test_650_small_records_make_500_plus_150() -> None:
    assert [len(c) for c in chunks(list(range(650)), lambda _: 100)] == [500, 150]


def test_byte_limit_splits_before_the_record_limit() -> None:
    sizes = [900 * 1024] * 12  # 5 fit under 5 MiB (4.39 MiB), the 6th would not
    assert [len(c) for c in chunks(sizes, lambda s: s)] == [5, 5, 2]


@given(st.lists(st.integers(1, 1024 * 1024), max_size=1200))
def test_chunks_respect_both_limits_and_keep_order(sizes: list[int]) -> None:
    got = list(chunks(sizes, lambda s: s))
    assert [s for chunk in got for s in chunk] == sizes
    assert all(0 < len(c) <= MAX_BATCH_RECORDS and sum(c) <= MAX_BATCH_BYTES for c in got)
    for current, following in zip(got, got[1:], strict=False):  # each chunk is as full as allowed
        assert len(current) == MAX_BATCH_RECORDS or sum(current) + following[0] > MAX_BATCH_BYTES
