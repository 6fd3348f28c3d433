"""The official ``snowplow-signals`` SDK against our API: registry scenarios of signals-api §4
(3 idempotent publish, 4 versions, 12 interventions CRUD, 13 lifecycle, 15 errors).

The API runs in-process (uvicorn in a thread on a free loopback port) against the test's own
Redis database; the SDK talks to it over real HTTP with a token from ``TokenStore``. The
harness here (``signals_api``, ``WorkerThread``, ``snowplow_event``) is shared with
``test_signals_profiles.py``.
"""

from __future__ import annotations

import asyncio
import threading
import time
import uuid
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from typing import Any

import httpx
import orjson
import pytest
from redis.asyncio import Redis
from snowplow_signals import (
    Attribute,
    InterventionCriterion,
    PageView,
    RuleIntervention,
    Service,
    SignalsAPIError,
    SignalsSandbox,
    StreamAttributeGroup,
    domain_userid,
)

from processor.settings import Settings
from processor.streams.worker import EventWorker
from tests.support.running import create_token, served

pytestmark = pytest.mark.integration
OWNER = "me@example.com"


@dataclass
class SignalsApi:
    url: str
    token: str
    sdk: SignalsSandbox

    def http(self, method: str, path: str, **kwargs: Any) -> httpx.Response:
        headers = {"Authorization": f"Bearer {self.token}"}
        return httpx.request(method, f"{self.url}{path}", headers=headers, timeout=10, **kwargs)


@contextmanager
def signals_api(settings: Settings) -> Iterator[SignalsApi]:
    """Serve ``create_app(settings)`` on a loopback port, with a token and an SDK client."""
    with served(settings) as url:
        token = asyncio.run(create_token(settings, "sdk-test"))
        yield SignalsApi(url, token, SignalsSandbox(api_url=url, sandbox_token=token))


class WorkerThread:
    """An ``EventWorker`` on its own event loop in a thread (the SDK calls are blocking)."""

    def __init__(self, settings: Settings) -> None:
        self.settings = settings
        self._loop = asyncio.new_event_loop()
        self._stop: asyncio.Event | None = None
        self._thread = threading.Thread(target=self._run, name="worker", daemon=True)
        self.error: BaseException | None = None

    def _run(self) -> None:
        async def main() -> None:
            self._stop = asyncio.Event()
            redis = Redis.from_url(self.settings.redis_url)
            try:
                await EventWorker(self.settings, redis).run(self._stop)
            finally:
                await redis.aclose()

        try:
            self._loop.run_until_complete(main())
        except BaseException as exc:  # surfaced by __exit__
            self.error = exc

    def __enter__(self) -> WorkerThread:
        self._thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        while self._stop is None and self._thread.is_alive():
            time.sleep(0.01)
        if self._stop is not None:
            self._loop.call_soon_threadsafe(self._stop.set)
        self._thread.join(30)
        if self.error is not None:
            raise self.error


def iso(ts_ms: int) -> str:
    return datetime.fromtimestamp(ts_ms / 1000, UTC).strftime("%Y-%m-%dT%H:%M:%S.%f")[:-3] + "Z"


def snowplow_event(
    duid: str, ts_ms: int, *, name: str = "page_view", vendor: str = "com.snowplowanalytics.snowplow",
    version: str = "1-0-0", **atomic: Any,
) -> bytes:
    """One enriched event in the JSON shape ``decode_snowplow_json`` accepts."""
    return orjson.dumps({
        "event_id": str(uuid.uuid4()), "app_id": "web", "platform": "web",
        "collector_tstamp": iso(ts_ms), "derived_tstamp": iso(ts_ms),
        "event_name": name, "event_vendor": vendor, "event_version": version, "event_format": "jsonschema",
        "domain_userid": duid, **atomic,
    })  # fmt: skip


def user_stats(version: int = 1, *attributes: Attribute) -> StreamAttributeGroup:
    return StreamAttributeGroup(
        name="user_stats", version=version, attribute_key=domain_userid, owner=OWNER,
        attributes=list(attributes) or [page_views()],
    )  # fmt: skip


def page_views(name: str = "page_views_7d") -> Attribute:
    return Attribute(name=name, type="int32", events=[PageView()], aggregation="counter",
                     period=timedelta(days=7))  # fmt: skip


def engaged(version: int = 1, attribute: str = "user_stats:page_views_7d") -> RuleIntervention:
    return RuleIntervention(
        name="engaged", version=version, owner=OWNER,
        criteria=InterventionCriterion(attribute=attribute, operator=">=", value=3),
    )  # fmt: skip


def test_idempotent_publish_and_unpublish(settings: Settings) -> None:
    """Scenario 3: the second publish POSTs get 400 and fall back to PUT with valid bodies."""
    with signals_api(settings) as api:
        group, svc = user_stats(), None
        svc = Service(name="svc", attribute_groups=[group], owner=OWNER)
        objects = [domain_userid, group, svc, engaged()]
        first = api.sdk.publish(objects)
        again = api.sdk.publish(objects)
        assert [type(o).__name__ for o in again] == [type(o).__name__ for o in first]
        assert all(o.is_published for o in again)
        assert api.http("POST", "/api/v1/registry/services/", json=svc.model_dump(mode="json")).status_code == 400
        # a published service pins the group: unpublish it first, then the group
        with pytest.raises(SignalsAPIError) as refused:
            api.sdk.unpublish([group])
        assert refused.value.status_code == 409
        api.sdk.unpublish([svc])
        (off,) = api.sdk.unpublish([group])
        assert off.is_published is False
        assert api.sdk.get_attribute_group("user_stats", 1).is_published is False
        # the intervention read user_stats:page_views_7d, which nothing publishes now
        assert api.sdk.interventions.get("engaged").is_published is False
        api.sdk.publish([group])
        assert api.sdk.get_attribute_group("user_stats").is_published is True


def test_versions(settings: Settings) -> None:
    """Scenario 4: latest and per-version reads as AttributeGroupResponse; v1 immutable."""
    with signals_api(settings) as api:
        v1, v2 = user_stats(1), user_stats(2, page_views("views"), page_views("more_views"))
        api.sdk.publish([v1, v2])
        latest = api.sdk.get_attribute_group("user_stats")
        assert latest.version == 2 and [a.name for a in latest.attributes] == ["views", "more_views"]
        assert latest.attribute_key.name == "domain_userid"
        assert latest.attribute_key.blobl_path == "domain_userid"
        assert (latest.full_name, latest.feast_name) == ("user_stats_2", "user_stats_v2")
        assert latest.attribute_key_or_name == "domain_userid" and latest.stream_source_name
        first = api.sdk.get_attribute_group("user_stats", 1)
        assert [a.name for a in first.attributes] == ["page_views_7d"]
        changed = user_stats(1, page_views("other"))
        with pytest.raises(SignalsAPIError) as refused:
            api.sdk.publish([changed])
        assert refused.value.status_code == 409
        listed = api.http("GET", "/api/v1/registry/attribute_groups/").json()
        assert [(g["name"], g["version"]) for g in listed] == [("user_stats", 1), ("user_stats", 2)]
        api.sdk.unpublish([v1])
        applied = api.http("GET", "/api/v1/registry/attribute_groups/?applied=true").json()
        assert [g["version"] for g in applied] == [2]


def test_interventions_crud(settings: Settings) -> None:
    """Scenario 12: create / get / get(version) / list / update / delete, JSON everywhere."""
    with signals_api(settings) as api:
        api.sdk.publish([user_stats()])
        ivs = api.sdk.interventions
        created = ivs.create(engaged(1))
        assert created.name == "engaged" and created.version == 1
        ivs.create(engaged(2, attribute="user_stats:page_views_7d"))
        with pytest.raises(SignalsAPIError) as exists:
            ivs.create(engaged(1))
        assert exists.value.status_code == 400
        assert ivs.get("engaged").version == 2
        assert ivs.get("engaged", version=1).version == 1
        updated = ivs.update(engaged(1).model_copy(update={"description": "three views"}))
        assert updated.description == "three views"
        assert ivs.get("engaged", version=1).description == "three views"
        assert [(i.name, i.version) for i in ivs.list()] == [("engaged", 1), ("engaged", 2)]
        assert ivs.delete("engaged", 1) == {"ok": True}
        assert [i.version for i in ivs.list()] == [2]
        with pytest.raises(SignalsAPIError) as missing:
            ivs.get("engaged", version=1)
        assert missing.value.status_code == 404


def test_lifecycle_rules(settings: Settings) -> None:
    """Scenario 13: delete needs unpublish; a pinned group cannot go; SDK order deletes all."""
    with signals_api(settings) as api:
        group = user_stats()
        svc = Service(name="svc", attribute_groups=[group], owner=OWNER)
        iv = engaged()
        api.sdk.publish([group, svc, iv])
        for doomed in ([group], [iv]):
            with pytest.raises(SignalsAPIError) as refused:
                api.sdk.delete(doomed)
            assert refused.value.status_code == 409
            assert "unpublish" in str(refused.value)
        api.sdk.unpublish([iv, svc])
        api.sdk.unpublish([group])
        with pytest.raises(SignalsAPIError) as pinned:  # an unpublished service still pins it
            api.sdk.delete([group])
        assert pinned.value.status_code == 409 and "svc" in str(pinned.value)
        api.sdk.delete([iv, svc, group])
        for path in ("attribute_groups/user_stats", "services/svc", "interventions/engaged"):
            response = api.http("GET", f"/api/v1/registry/{path}")
            assert response.status_code == 404 and "not found" in response.json()["detail"]


def test_unpublishing_a_group_unpublishes_its_interventions(settings: Settings) -> None:
    with signals_api(settings) as api:
        group = user_stats()
        api.sdk.publish([group, engaged()])
        assert api.sdk.interventions.get("engaged").is_published is True
        api.sdk.unpublish([group])
        assert api.sdk.interventions.get("engaged").is_published is False


def test_errors(settings: Settings) -> None:
    """Scenario 15: invalid definitions are 422 with detail and never retried as PUT."""
    with signals_api(settings) as api:
        bad_sum = {"name": "g", "version": 1, "owner": OWNER, "attribute_key": {"name": "domain_userid"},
                   "attributes": [{"name": "s", "type": "double", "events": [], "aggregation": "sum"}]}  # fmt: skip
        response = api.http("POST", "/api/v1/registry/attribute_groups/", json=bad_sum)
        assert response.status_code == 422
        assert "aggregation requires a property to be set" in response.json()["detail"]
        ttl_and_period = Attribute(name="x", type="int32", events=[], aggregation="counter",
                                   period=timedelta(days=1), ttl=timedelta(days=2))  # fmt: skip
        with pytest.raises(SignalsAPIError) as invalid:
            api.sdk.publish([user_stats(1, ttl_and_period)])
        assert invalid.value.status_code == 422
        bad_criterion = {"name": "iv", "owner": OWNER,
                         "criteria": {"attribute": "no-colon", "operator": "=", "value": 1}}  # fmt: skip
        assert api.http("POST", "/api/v1/registry/interventions/", json=bad_criterion).status_code == 422
        for path in ("attribute_groups/nope", "attribute_groups/nope/versions/3", "services/nope",
                     "interventions/nope", "attribute_keys/nope", "event_logs/nope"):  # fmt: skip
            response = api.http("GET", f"/api/v1/registry/{path}")
            assert response.status_code == 404, path
            assert "detail" in response.json()
        assert httpx.get(f"{api.url}/api/v1/registry/services/").status_code == 401
        assert api.http("GET", "/api/v1/registry/attribute_groups").status_code == 404  # no redirect
        keys = {k["name"] for k in api.http("GET", "/api/v1/registry/attribute_keys/").json()}
        assert {"domain_userid", "domain_sessionid", "user_id", "network_userid"} <= keys
