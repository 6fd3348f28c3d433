"""The hot read answered in front of FastAPI (``processor.api.fast_path``), against real Redis:
every answer — 200s and every refusal — is byte for byte the one the FastAPI route gives for
the same request, and the common request never reaches the route."""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

import orjson
import pytest
from fastapi import FastAPI
from fastapi.testclient import TestClient
from starlette.types import Receive, Scope, Send

from processor.api import profiles
from processor.api.app import create_app
from processor.settings import Settings
from processor.state import keys
from processor.state.apikeys import ApiKeyStore
from processor.state.tokens import TokenStore
from tests.support.state import with_redis

pytestmark = pytest.mark.integration

READ = "/api/v1/get-online-attributes"
REGISTRY = "/api/v1/registry"
ROUTE_ONLY = "x-route-only"  # a header of these tests: answer through FastAPI alone


def group(name: str, published: bool = True) -> dict[str, Any]:
    return {"name": name, "version": 1, "owner": "me@example.com", "is_published": published,
            "attribute_key": {"name": "domain_userid"},
            "attributes": [{"name": "views", "type": "int64", "events": [], "aggregation": "counter"},
                           {"name": "urls", "type": "string_list", "events": [],
                            "aggregation": "unique_list",
                            "property": {"type": "atomic", "name": "page_url"}}]}  # fmt: skip


def service(name: str, published: bool = True) -> dict[str, Any]:
    return {"name": name, "owner": "me@example.com", "is_published": published,
            "attribute_groups": [{"name": "shop", "version": 1}]}  # fmt: skip


@pytest.fixture
def client(settings: Settings) -> Iterator[tuple[TestClient, str]]:
    """A client of the app, which sends requests with the ``x-route-only`` header straight to
    FastAPI (past the fast path), and a valid token. Published: group ``shop`` and services
    ``svc`` (published) and ``draft`` (not); entity ``u1`` has state."""
    token = with_redis(settings, lambda r: TokenStore(r).create("fast-path"))[1]
    app = create_app(settings)

    async def dispatch(scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] == "http" and any(name == ROUTE_ONLY.encode() for name, _ in scope["headers"]):
            await FastAPI.__call__(app, scope, receive, send)
        else:
            await app(scope, receive, send)

    headers = {"Authorization": f"Bearer {token}"}
    with TestClient(dispatch, headers=headers) as test_client:
        for path, doc in ((f"{REGISTRY}/attribute_groups/", group("shop")),
                          (f"{REGISTRY}/services/", service("svc")),
                          (f"{REGISTRY}/services/", service("draft", published=False))):  # fmt: skip
            assert test_client.post(path, json=doc).status_code == 201, doc
        state = {keys.IDENTIFIERS_FIELD: orjson.dumps({"domain_userid": "u1"}),
                 keys.group_field("shop", 1): orjson.dumps({"views": [5, 3], "urls": [5, {"/a": 4, "\x1fi1": 5}, 5]})}  # fmt: skip
        with_redis(settings, lambda r: r.hset(keys.entity_state("domain_userid", "u1"), mapping=state))  # type: ignore[arg-type]
        yield test_client, token


def both(test_client: TestClient, method: str, url: str, **options: Any) -> tuple[Any, Any]:
    """The answers of the app and of FastAPI alone to the same request (a ``content`` given as
    a function makes the body of each)."""
    headers = options.pop("headers", {})
    content = options.pop("content", None)
    answers = []
    for extra in ({}, {ROUTE_ONLY: "1"}):
        body = content() if callable(content) else content
        answers.append(test_client.request(method, url, headers={**headers, **extra}, content=body,
                                           **options))  # fmt: skip
    return answers[0], answers[1]


def assert_same(app_answer: Any, route_answer: Any) -> None:
    assert app_answer.status_code == route_answer.status_code
    assert app_answer.headers.items() == route_answer.headers.items()
    assert app_answer.content == route_answer.content


BODY = {"attribute_keys": {"domain_userid": ["u1", "u2"]}, "attributes": ["shop_v1:views", "shop_v1:urls"]}
CASES: list[tuple[str, dict[str, Any], int]] = [
    ("plain read", {"json": BODY}, 200),
    ("full names, bare string", {"json": {"attribute_keys": {"domain_userid": ["u1"]},
                                          "attributes": "shop_v1:urls", "full_attribute_names": True}}, 200),
    ("service", {"json": {"attribute_keys": {"domain_userid": ["u1"]}, "service": "svc"}}, 200),
    ("coerced by the model", {"json": {**BODY, "full_attribute_names": 1}}, 200),
    ("no token", {"json": BODY, "headers": {"Authorization": ""}}, 401),
    ("wrong token", {"json": BODY, "headers": {"Authorization": "Bearer sbx_nope"}}, 401),
    ("raw wrong token", {"json": BODY, "headers": {"Authorization": "sbx_nope"}}, 401),
    ("bad JSON", {"content": b"{", "headers": {"Content-Type": "application/json"}}, 422),
    ("not an object", {"content": b"[1]"}, 422),
    ("model errors", {"json": {"attribute_keys": {"k": [1]}, "attributes": [2]}}, 422),
    ("no ids", {"json": {"attribute_keys": {"domain_userid": []}, "attributes": ["shop_v1:views"]}}, 422),
    ("too many ids", {"json": {"attribute_keys": {"domain_userid": ["u"] * 101},
                               "attributes": ["shop_v1:views"]}}, 422),
    ("both", {"json": {**BODY, "service": "svc"}}, 422),
    ("neither", {"json": {"attribute_keys": {"domain_userid": ["u1"]}}}, 422),
    ("unqualified", {"json": {**BODY, "attributes": ["views"]}}, 422),
    ("missing attribute", {"json": {**BODY, "attributes": ["shop_v1:nope", "other_v2:x"]}}, 422),
    ("unknown service", {"json": {"attribute_keys": {"domain_userid": ["u1"]}, "service": "nope"}}, 404),
    ("unpublished service", {"json": {"attribute_keys": {"domain_userid": ["u1"]}, "service": "draft"}}, 422),
    ("no ids for the key", {"json": {"attribute_keys": {"user_id": ["u1"]}, "attributes": ["shop_v1:views"]}}, 422),
    ("declared too large", {"content": b"{}", "headers": {"Content-Length": "99999999"}}, 413),
    ("chunked too large", {"content": lambda: iter([b'{"attribute_keys": {"k": ["', b"x" * 4_000_000,
                                                    b'"]}}'])}, 413),
]  # fmt: skip


@pytest.mark.parametrize(("name", "options", "status"), CASES, ids=[c[0] for c in CASES])
def test_every_answer_is_the_routes(client: tuple[TestClient, str], name: str,
                                    options: dict[str, Any], status: int) -> None:
    test_client, _ = client
    app_answer, route_answer = both(test_client, "POST", READ, **options)
    assert app_answer.status_code == status, app_answer.text
    assert_same(app_answer, route_answer)


def test_the_values_are_read(client: tuple[TestClient, str]) -> None:
    test_client, _ = client
    assert test_client.post(READ, json=BODY).json() == {
        "domain_userid": ["u1", "u2"], "views": [3, None], "urls": [["/a", 1], None]}  # fmt: skip


def test_tokens_elsewhere_and_other_methods_are_the_routes(client: tuple[TestClient, str],
                                                           settings: Settings) -> None:
    test_client, token = client
    for options in ({"params": {"access_token": token}}, {"params": {"key": token}},
                    {"params": {"key": "sbx_nope"}}):  # fmt: skip
        app_answer, route_answer = both(test_client, "POST", READ, json=BODY,
                                        headers={"Authorization": ""}, **options)
        assert_same(app_answer, route_answer)
    assert app_answer.status_code == 401
    info, key = with_redis(settings, lambda r: ApiKeyStore(r).create("svc"))
    jwt = with_redis(settings, lambda r: ApiKeyStore(r).issue_token(info.id, key, org_id="o"))
    app_answer, route_answer = both(test_client, "POST", READ, json=BODY,
                                    headers={"Authorization": f"Bearer {jwt}"})
    assert app_answer.status_code == 200
    assert_same(app_answer, route_answer)
    for method, path in (("GET", READ), ("POST", READ + "/"), ("PUT", READ)):
        app_answer, route_answer = both(test_client, method, path, json=BODY)
        assert app_answer.status_code in (404, 405)
        assert_same(app_answer, route_answer)


def test_a_common_read_never_reaches_the_route(client: tuple[TestClient, str],
                                               monkeypatch: pytest.MonkeyPatch) -> None:
    test_client, _ = client

    async def route_called(*_: Any, **__: Any) -> None:
        raise AssertionError("the request went to the FastAPI route")

    monkeypatch.setattr(profiles, "read_body", route_called)
    assert test_client.post(READ, json=BODY).status_code == 200
