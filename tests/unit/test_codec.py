"""Entity state <-> Redis hash fields."""

from __future__ import annotations

from processor.domain.entity import EntityState
from processor.domain.transitions import EntityRef
from processor.state import codec, keys


def test_round_trip_of_every_kind_of_field() -> None:
    state = EntityState(EntityRef("user_id", "u1"))
    state.advance("events", 3, 41)
    state.set_attribute(("g", 1, "n"), [5, 2])
    state.set_attribute(("g", 1, "m"), [5, None])
    state.set_attribute(("g:x", 2, "n"), [[1, 2]])
    state.set_profile("plan", "pro", 1000)
    state.set_member("seg", True)
    state.add_identifiers({"user_id": "u1", "email": "a@b.c"})
    raw, deletes = codec.changed_fields(state)
    assert deletes == []
    raw = {k.encode(): v for k, v in raw.items()}
    raw |= {k.encode(): str(v).encode() for k, v in codec.watermark_args(state).items()}
    loaded = codec.decode_entity(state.ref, raw)
    assert loaded.watermarks == {("events", 3): 41}
    assert loaded.attributes() == {("g", 1, "n"): [5, 2], ("g", 1, "m"): [5, None], ("g:x", 2, "n"): [[1, 2]]}
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
    assert codec.changed_fields(state) == ({}, [keys.member_field("seg")])


def test_a_group_is_written_whole_with_its_unchanged_attributes() -> None:
    state = EntityState(EntityRef("user_id", "u1"))
    state.set_attribute(("g", 1, "a"), [1, 1])
    state.set_attribute(("g", 1, "b"), [1, 2])
    state.set_attribute(("h", 1, "a"), [1, 3])
    state.clear_dirty()
    state.groups[("g", 1)]["b"][1] = 5
    state.mark_groups((("g", 1),))
    sets, _ = codec.changed_fields(state)
    assert sets == {keys.group_field("g", 1): b'{"a":[1,1],"b":[1,5]}'}


def test_unknown_fields_and_old_layouts_are_ignored() -> None:
    raw = {b"a:g:1:n": b"[5,2]", b"zz:new": b"?", b"g:g:1": b'{"n":[1,1]}', b"g:h:1": b"[1]"}
    assert codec.decode_entity(EntityRef("user_id", "u1"), raw).attributes() == {("g", 1, "n"): [1, 1]}
