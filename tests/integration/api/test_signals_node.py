"""The official Node SDK (@snowplow/signals-node, installed by `make test` in tests/node) reads
attributes from Signalbox: a batch service read over several ids and a group read."""

from __future__ import annotations

import asyncio
import json
import shutil
import subprocess
import uuid
from pathlib import Path

import pytest
from snowplow_signals import Service

from processor.settings import Settings
from tests.integration.api.test_signals_profiles import eventually, now_ms, send, start_worker
from tests.integration.api.test_signals_registry import (
    OWNER,
    signals_api,
    snowplow_event,
    user_stats,
)
from tests.support.running import wait_loaded

pytestmark = pytest.mark.integration

NODE_DIR = Path(__file__).resolve().parents[2] / "node"


def node_read(request: dict[str, object]) -> dict[str, object]:
    node = shutil.which("node")
    assert node is not None, "node is not on PATH"
    assert (NODE_DIR / "node_modules" / "@snowplow" / "signals-node").is_dir(), (
        "the Node SDK is not installed: run `npm ci --prefix tests/node` (make test does)"
    )
    done = subprocess.run([node, "read_attributes.mjs", json.dumps(request)], cwd=NODE_DIR,
                          capture_output=True, text=True, timeout=60, check=False)
    assert done.returncode == 0, done.stderr
    return json.loads(done.stdout)  # type: ignore[no-any-return]


def test_node_sdk_batch_and_group_reads(settings: Settings) -> None:
    users = [str(uuid.uuid4()) for _ in range(3)]
    stranger = str(uuid.uuid4())
    with signals_api(settings) as api, start_worker(settings):
        group = user_stats()
        api.sdk.publish([group, Service(name="svc", attribute_groups=[group], owner=OWNER)])
        asyncio.run(wait_loaded(settings))
        t = now_ms() - 60_000
        send(settings, [snowplow_event(user, t + i) for n, user in enumerate(users) for i in range(n + 1)])
        read = lambda: api.sdk.get_group_attributes(  # noqa: E731
            name="user_stats", version=1, attributes=["page_views_7d"],
            attribute_key="domain_userid", identifier=users[2])  # fmt: skip
        eventually(read, lambda v: v.get("page_views_7d") == 3)
        result = node_read({
            "baseUrl": api.url, "token": api.token, "service": "svc", "group": "user_stats",
            "version": 1, "attributes": ["page_views_7d"], "attributeKey": "domain_userid",
            "identifiers": [*users, stranger],
        })  # fmt: skip
    assert result["batch"] == {
        "domain_userid": [*users, stranger], "page_views_7d": [1, 2, 3, None]}  # fmt: skip
    assert result["group"] == {"domain_userid": users[0], "page_views_7d": 1}
