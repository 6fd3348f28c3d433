"""Shared fixtures. Integration tests talk to the real services that ``deploy/services.sh up``
started (``make test`` does that and exports ``.run/services.env``). A service that does not
answer is a test failure with a message saying how to start it, never a skip."""

from __future__ import annotations

import os
import socket
import uuid
from collections.abc import Iterator
from pathlib import Path
from urllib.parse import urlparse

import pytest
import redis

from processor.settings import Settings, load_settings

ROOT = Path(__file__).resolve().parents[1]
SERVICES_ENV = ROOT / ".run" / "services.env"
# db 0 belongs to `make up`/`make demo`; tests flush theirs freely. Concurrent test runs on one
# machine pick different databases with SIGNALBOX_TEST_REDIS_DB.
TEST_REDIS_DB = int(os.environ.get("SIGNALBOX_TEST_REDIS_DB", "1"))


def _service_env() -> dict[str, str]:
    env = {}
    if SERVICES_ENV.exists():
        for line in SERVICES_ENV.read_text().splitlines():
            if "=" in line and not line.lstrip().startswith("#"):
                key, _, value = line.partition("=")
                env[key.strip()] = value.strip().strip('"')
    for key in ("KAFKA_BOOTSTRAP_SERVERS", "REDIS_URL", "KINESIS_ENDPOINT_URL"):
        if os.environ.get(key):
            env[key] = os.environ[key]
    return env


def _require(name: str, host: str, port: int) -> None:
    try:
        with socket.create_connection((host, port), timeout=2):
            return
    except OSError as exc:
        pytest.fail(
            f"{name} is not reachable at {host}:{port} ({exc}). Start the services with "
            "`deploy/services.sh up` (or run `make test`, which does).",
            pytrace=False,
        )


@pytest.fixture(scope="session")
def service_env() -> dict[str, str]:
    env = _service_env()
    missing = [k for k in ("KAFKA_BOOTSTRAP_SERVERS", "REDIS_URL", "KINESIS_ENDPOINT_URL") if k not in env]
    if missing:
        pytest.fail(f"no address for {missing}: run `deploy/services.sh up` first", pytrace=False)
    return env


@pytest.fixture(scope="session")
def kafka_bootstrap(service_env: dict[str, str]) -> str:
    address = service_env["KAFKA_BOOTSTRAP_SERVERS"]
    host, _, port = address.split(",")[0].rpartition(":")
    _require("Kafka", host, int(port))
    return address


@pytest.fixture(scope="session")
def kinesis_endpoint(service_env: dict[str, str]) -> str:
    url = service_env["KINESIS_ENDPOINT_URL"]
    parsed = urlparse(url)
    _require("Kinesis emulator", parsed.hostname or "127.0.0.1", parsed.port or 80)
    return url


@pytest.fixture(scope="session")
def redis_base_url(service_env: dict[str, str]) -> str:
    parsed = urlparse(service_env["REDIS_URL"])
    _require("Redis", parsed.hostname or "127.0.0.1", parsed.port or 6379)
    return f"redis://{parsed.hostname}:{parsed.port}"


@pytest.fixture
def redis_url(redis_base_url: str) -> Iterator[str]:
    """A Redis database emptied for this test."""
    url = f"{redis_base_url}/{TEST_REDIS_DB}"
    client = redis.Redis.from_url(url)
    client.flushdb()
    client.close()
    yield url


@pytest.fixture
def settings(kafka_bootstrap: str, redis_url: str, kinesis_endpoint: str) -> Settings:
    """Settings pointing at the real services, with topic and group names unique to this test."""
    return load_settings(
        kafka_bootstrap_servers=kafka_bootstrap,
        redis_url=redis_url,
        kinesis_endpoint_url=kinesis_endpoint,
        partitions=2,
        registry_poll_ms=100,
        kafka_session_timeout_ms=6_000,
        webhook_allow_loopback=True,
    ).isolated(uuid.uuid4().hex[:10])


def settings_env(settings: Settings) -> dict[str, str]:
    """The environment a subprocess (``python -m processor ...``) needs to get ``settings``."""
    return settings.to_env(dict(os.environ))


def pytest_collection_modifyitems(items: list[pytest.Item]) -> None:
    """Tests that restart a shared service run last, so nothing else sees the restart."""
    items.sort(key=lambda item: "test_redis_restart" in item.nodeid)
