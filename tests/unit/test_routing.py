"""Entity ownership agrees with Kafka's default partitioner, so producers that key records by
entity reach the owner, and the worker may name the partition of a transition itself."""

from __future__ import annotations

from aiokafka.partitioner import DefaultPartitioner

from processor.domain.transitions import EntityRef
from processor.streams.routing import Ownership, Source


def test_owner_is_the_partition_the_default_partitioner_picks_for_the_entity_key() -> None:
    for partitions in (1, 2, 3, 8, 12):
        ownership = Ownership(partitions)
        every = list(range(partitions))
        for n in range(300):
            ref = EntityRef("domain_userid", f"user-{n}-é")
            key = str(ref).encode()
            assert ownership.owner(ref) == DefaultPartitioner()(key, every, every)
            assert ownership.owner(ref) == DefaultPartitioner()(key, every, every)  # cached


def test_source_round_trips_through_its_text_form() -> None:
    source = Source("events.v1/x", 3, 1234)
    assert str(source) == "events.v1/x/3/1234"
    assert Source.parse(str(source)) == source
