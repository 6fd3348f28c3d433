"""Entity state <-> Redis hash fields."""

from __future__ import annotations

from processor.domain.entity import EntityState
from processor.domain.transitions import EntityRef
from processor.state import codec, keys


def test_round_trip_of_every_kind_of_field() -> None:
    state = EntityState(EntityRef("user_id", "u1"))
    state.advance("events", 3, 41)
    state.set_attribute(("g", 1, "n"), [5, 2])
    state.set_profile("plan", "pro", 1000)
    state.set_member("seg", True)
    state.add_identifiers({"user_id": "u1", "email": "a@b.c"})
    raw = {k.encode(): v for k, v in codec.dirty_fields(state).items()}
    raw |= {k.encode(): str(v).encode() for k, v in codec.watermark_args(state).items()}
    loaded = codec.decode_entity(state.ref, raw)
    assert loaded.watermarks == {("events", 3): 41}
    assert loaded.attributes == {("g", 1, "n"): [5, 2]}
    assert loaded.profile == {"plan": ["pro", 1000]}
    assert loaded.members == {"seg": True}
    assert loaded.identifiers == {"user_id": "u1", "email": "a@b.c"}


def test_only_advanced_watermarks_are_written_and_checked() -> None:
    # An entity fed from two source partitions: a batch that only touches partition 1 must
    # not send partition 0's watermark (the write script would refuse an equal one).
    state = codec.decode_entity(
        EntityRef("user_id", "u1"), {keys.watermark_field("events", 0).encode(): b"7"}
    )
    state.advance("events", 1, 3)
    assert codec.watermark_args(state) == {keys.watermark_field("events", 1): 3}


def test_leaving_a_segment_deletes_the_field() -> None:
    state = EntityState(EntityRef("user_id", "u1"))
    state.set_member("seg", False)
    assert codec.dirty_fields(state) == {keys.member_field("seg"): codec.DELETE}
