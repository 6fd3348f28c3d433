"""The read's request body: the hand-written check of the common shape
(``profiles._common_request``) accepts only what the pydantic model and its checks accept, with
the same values; anything else goes through the model, so its 422 bodies stay as they were."""

from __future__ import annotations

from typing import Any

import orjson
import pytest
from fastapi import HTTPException
from hypothesis import given, settings
from hypothesis import strategies as st
from pydantic import ValidationError

from processor.api import profiles
from processor.api.profiles import OnlineAttributesRequest

ids = st.lists(st.one_of(st.text(max_size=3), st.integers(0, 3), st.none()), max_size=3)
names = st.lists(st.text(max_size=4), min_size=1, max_size=3)
docs = st.fixed_dictionaries({}, optional={
    "attribute_keys": st.one_of(
        st.dictionaries(st.sampled_from(["domain_userid", "k"]), names, min_size=1, max_size=2),
        st.dictionaries(st.sampled_from(["domain_userid", "k"]), st.one_of(ids, st.text(max_size=2)),
                        max_size=2),
        st.lists(st.text(max_size=2), max_size=1), st.none()),
    "attributes": st.one_of(st.none(), st.text(max_size=4), names,
                            st.lists(st.one_of(st.text(max_size=4), st.integers(0, 1)), max_size=3)),
    "service": st.one_of(st.none(), st.text(max_size=3), st.integers(0, 1)),
    "full_attribute_names": st.one_of(st.booleans(), st.none(), st.integers(0, 2),
                                      st.sampled_from(["true", "no"])),
    "other": st.integers(-9, 9),
})  # fmt: skip


def validated(doc: dict[str, Any]) -> OnlineAttributesRequest | None:
    """The request as the model and the route's checks see it; None when refused."""
    try:
        body = OnlineAttributesRequest.model_validate(doc)
    except ValidationError:
        return None
    if not all(1 <= len(v) <= profiles.MAX_IDS for v in body.attribute_keys.values()):
        return None
    return None if (body.attributes is None) == (body.service is None) else body


@settings(max_examples=2000, deadline=None)
@given(doc=docs)
def test_the_common_shape_is_what_the_model_accepts(doc: dict[str, Any]) -> None:
    common = profiles._common_request(doc)
    if common is None:
        return
    reference = validated(doc)
    assert reference is not None, doc
    assert common.model_dump() == reference.model_dump()
    assert type(common.attributes) is type(reference.attributes)


@settings(max_examples=500, deadline=None)
@given(doc=docs)
def test_parse_answers_like_the_model(doc: dict[str, Any]) -> None:
    """Accepted: the same request; refused: a 422."""
    reference = validated(doc)
    try:
        body = profiles._parse(orjson.dumps(doc))
    except HTTPException as exc:
        assert exc.status_code == 422 and reference is None
        return
    assert reference is not None and body.model_dump() == reference.model_dump()


def test_common_requests_take_the_short_way() -> None:
    for doc in ({"attribute_keys": {"domain_userid": ["u1", "u2"]}, "attributes": ["g_v1:a"]},
                {"attribute_keys": {"k": ["u"]}, "attributes": "g_v1:a", "full_attribute_names": True},
                {"attribute_keys": {"k": ["u"]}, "service": "s", "attributes": None, "x": 1}):  # fmt: skip
        assert profiles._common_request(doc) is not None, doc


@pytest.mark.parametrize("doc", [
    {"attribute_keys": {"k": ["u"]}, "attributes": ["a"], "service": "s"},
    {"attribute_keys": {"k": ["u"]}},
    {"attribute_keys": {"k": []}, "attributes": ["a"]},
    {"attribute_keys": {"k": ["u"] * 101}, "attributes": ["a"]},
    {"attribute_keys": {f"k{i}": ["u"] for i in range(101)}, "attributes": ["a"]},
    {"attribute_keys": {"k": ["u"]}, "attributes": ["a"], "full_attribute_names": 1},
    {"attribute_keys": {"k": [1]}, "attributes": ["a"]},
    {"attribute_keys": {"k": ["u"]}, "attributes": []},
])  # fmt: skip
def test_anything_else_takes_the_model_way(doc: dict[str, Any]) -> None:
    assert profiles._common_request(doc) is None
