"""The Lytics v1 REST surface (lytics-api.md §2) against real Redis and Kafka."""

from __future__ import annotations

import asyncio
from collections.abc import Iterator

import orjson
import pytest
from fastapi.testclient import TestClient

from processor.api.app import create_app
from processor.domain.events import decode_generic_json
from processor.settings import Settings
from processor.streams.kafka import ensure_topics
from tests.support.kafka_io import read_topic
from tests.support.running import create_token

pytestmark = pytest.mark.integration

HOOK = "https://hooks.example.com/in"




@pytest.fixture
def client(settings: Settings) -> Iterator[TestClient]:
    token = asyncio.run(create_token(settings, "lytics-test"))
    with TestClient(create_app(settings), headers={"Authorization": token}) as test_client:
        yield test_client


def post_ql(client: TestClient, ql: str) -> object:
    return client.post("/api/segment", content=ql, headers={"Content-Type": "text/plain"})


def test_segment_create_by_alias_is_an_upsert_with_ast(client: TestClient) -> None:
    first = post_ql(client, 'FILTER visits > 3 ALIAS frequent')
    assert first.status_code == 201
    body = first.json()
    assert (body["status"], body["message"]) == (200, "success")
    seg = body["data"]
    assert (seg["slug_name"], seg["name"], seg["kind"], seg["table"]) == ("frequent", "frequent", "segment", "user")
    assert len(seg["id"]) == 32 and seg["invalid"] is False
    assert seg["ast"] == {"op": ">", "args": [{"ident": "visits"}, {"val": "3"}]}
    assert seg["created"] and seg["updated"]

    again = post_ql(client, 'FILTER visits > 5 ALIAS frequent')
    assert again.status_code == 200
    assert again.json()["data"]["id"] == seg["id"]
    assert again.json()["data"]["created"] == seg["created"]
    listed = client.get("/api/segment").json()["data"]
    assert [s["segment_ql"] for s in listed] == ["FILTER visits > 5 ALIAS frequent"]


def test_segment_json_create_get_by_id_or_slug_put_delete(client: TestClient) -> None:
    created = client.post("/api/segment", json={"name": "Big Spenders", "segment_ql": "FILTER spend >= 100",
                                                "description": "d", "is_public": True, "tags": ["vip"]})
    assert created.status_code == 201, created.text
    seg = created.json()["data"]
    assert (seg["slug_name"], seg["is_public"], seg["tags"]) == ("big_spenders", True, ["vip"])
    assert client.get(f"/api/segment/{seg['id']}").json()["data"]["name"] == "Big Spenders"
    assert client.get("/api/segment/big_spenders").json()["data"]["id"] == seg["id"]

    put = client.put("/api/segment/big_spenders", json={"segment_ql": "FILTER spend >= 200", "description": "e"})
    assert put.status_code == 200
    assert put.json()["data"]["id"] == seg["id"]
    assert put.json()["data"]["ast"]["args"][1] == {"val": "200"}

    assert client.delete("/api/segment/big_spenders").status_code == 204
    missing = client.get(f"/api/segment/{seg['id']}")
    assert missing.status_code == 404
    assert missing.json() == {"status": 404, "message": f"segment '{seg['id']}' not found", "data": None}


def test_bad_segmentql_is_400_with_line_and_column(client: TestClient) -> None:
    bad = post_ql(client, "FILTER visits >\n  AND (")
    assert bad.status_code == 400
    body = bad.json()
    assert body["status"] == 400 and body["data"] is None
    assert "line 2, column" in body["message"]
    checked = client.post("/api/segment/validate", content="FILTER a = ")
    assert checked.status_code == 400 and "line 1, column" in checked.json()["message"]
    ok = client.post("/api/segment/validate", content="FILTER a = 1 ALIAS x")
    assert ok.json() == {"status": 200, "message": "success", "data": None}
    assert post_ql(client, "FILTER INCLUDE nobody ALIAS x").status_code == 400  # unknown INCLUDE


def test_delete_refused_while_included_or_subscribed(client: TestClient) -> None:
    post_ql(client, "FILTER visits > 3 ALIAS base")
    post_ql(client, "FILTER INCLUDE base AND spend > 1 ALIAS derived")
    assert client.delete("/api/segment/base").status_code == 409
    client.post("/api/subscription", json={"id": "s1", "channel": "webhook", "webhook_url": HOOK,
                                           "segment_ids": ["derived"]})
    refused = client.delete("/api/segment/derived")
    assert refused.status_code == 409 and "s1" in refused.json()["message"]
    assert client.delete("/api/subscription/s1").status_code == 204
    assert client.delete("/api/segment/derived").status_code == 204
    assert client.delete("/api/segment/base").status_code == 204


def test_subscription_upsert_with_inline_segmentql(client: TestClient) -> None:
    made = client.post("/api/subscription", json={
        "name": "hot", "channel": "webhook", "webhook_url": HOOK, "headers": {"X-Team": "a"},
        "segmentql": "FILTER cart_items > 0 ALIAS active_cart", "withbackfill": True})
    assert made.status_code == 200, made.text
    sub = made.json()["data"]
    segment = client.get("/api/segment/active_cart").json()["data"]
    assert sub["segment_ids"] == [segment["id"]]
    assert sub["workflow"] == "webhook_triggers" and sub["created"]
    assert sub["signing_secret"].startswith("whsec_")

    updated = client.post("/api/subscription", json={
        "id": sub["id"], "name": "hotter", "channel": "webhook", "webhook_url": HOOK,
        "segment_ids": ["active_cart"]})
    assert updated.json()["data"]["name"] == "hotter"
    assert updated.json()["data"]["signing_secret"] == sub["signing_secret"]  # not rotated
    assert updated.json()["data"]["created"] == sub["created"]

    assert [s["id"] for s in client.get("/api/subscription").json()["data"]] == [sub["id"]]
    for ref in ("active_cart", segment["id"]):
        assert len(client.get("/api/subscription", params={"segment_id": ref}).json()["data"]) == 1
    assert client.get("/api/subscription", params={"segment_id": "other"}).json()["data"] == []
    assert client.get(f"/api/subscription/{sub['id']}").json()["data"]["name"] == "hotter"
    assert client.delete(f"/api/subscription/{sub['id']}").status_code == 204
    assert client.get(f"/api/subscription/{sub['id']}").status_code == 404
    assert client.delete(f"/api/subscription/{sub['id']}").status_code == 404


def test_subscription_validation_errors_are_400(client: TestClient) -> None:
    no_segment = client.post("/api/subscription", json={"channel": "webhook", "webhook_url": HOOK})
    assert no_segment.status_code == 400 and "segment_ids or segmentql" in no_segment.json()["message"]
    unknown = client.post("/api/subscription", json={"channel": "webhook", "webhook_url": HOOK,
                                                     "segment_ids": ["ghost"]})
    assert unknown.status_code == 400 and "ghost" in unknown.json()["message"]
    bad_ql = client.post("/api/subscription", json={"channel": "webhook", "webhook_url": HOOK,
                                                    "segmentql": "FILTER ( ALIAS x"})
    assert bad_ql.status_code == 400 and "line 1" in bad_ql.json()["message"]
    assert client.post("/api/subscription", content=b"[1]",
                       headers={"Content-Type": "application/json"}).status_code == 400


def test_collect_json_produces_with_the_stream_header(client: TestClient, settings: Settings) -> None:
    asyncio.run(ensure_topics(settings))
    one = client.post("/collect/json/web", json={"user_id": "u1", "visits": 1})
    assert one.status_code == 200
    assert one.json()["data"]["message_count"] == 1
    many = client.post("/collect/json/crm", params={"timestamp_field": "when", "filename": "f.json"},
                       json=[{"email": "a@x.io", "when": "2026-01-01T00:00:00Z"},
                             {"email": "b@x.io", "when": "not a time"}, 7])
    data = many.json()["data"]
    assert (data["message_count"], data["rejected_count"]) == (1, 2)
    assert (data["timestamp_field"], data["filename"], data["dryrun"]) == ("when", "f.json", False)
    dry = client.post("/collect/json/web", params={"dryrun": "true"}, json={"user_id": "dry"})
    assert dry.json()["data"]["dryrun"] is True and dry.json()["data"]["message_count"] == 1
    assert client.post("/collect/json/web", content=b"{no").status_code == 400
    assert client.post("/collect/json/bad%20name", json={}).status_code == 400

    records = asyncio.run(read_topic(settings, settings.events_topic, at_least=2, settle=1.0))
    assert len(records) == 2  # the dry run produced nothing
    by_stream = {dict(r.headers)["stream"]: r for r in records}
    assert orjson.loads(by_stream[b"web"].value) == {"user_id": "u1", "visits": 1}
    assert by_stream[b"web"].key == b"user_id:u1"
    crm = by_stream[b"crm"]
    assert dict(crm.headers)["timestamp_field"] == b"when"
    event = decode_generic_json(crm.value, stream="crm", timestamp_field="when", now_ms=1_800_000_000_000)
    assert event.timestamp_ms == 1_767_225_600_000


@pytest.mark.parametrize("auth", [{}, {"Authorization": "wrong"}])
def test_lytics_endpoints_need_a_token_and_answer_in_the_envelope(settings: Settings,
                                                                  auth: dict[str, str]) -> None:
    with TestClient(create_app(settings)) as anonymous:
        for method, path in (("GET", "/api/segment"), ("POST", "/collect/json/web"),
                             ("GET", "/api/subscription"), ("DELETE", "/api/segment/x")):
            response = anonymous.request(method, path, headers=auth, json={})
            assert response.status_code == 401, path
            assert response.json()["status"] == 401 and response.json()["data"] is None


def test_lytics_query_key_auth_forms(client: TestClient, settings: Settings) -> None:
    token = asyncio.run(create_token(settings, "lytics-test"))
    with TestClient(create_app(settings)) as plain:
        assert plain.get("/api/segment", params={"key": token}).status_code == 200
        assert plain.get("/api/segment", params={"access_token": token}).status_code == 200
        assert plain.get("/api/segment", headers={"Authorization": f"Bearer {token}"}).status_code == 200
