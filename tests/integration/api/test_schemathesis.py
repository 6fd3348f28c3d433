"""Fuzz the whole API from its own OpenAPI document (schemathesis 4): no input may cause a 5xx.

The app runs on a real loopback port (uvicorn in a thread) against the real Redis and Kafka,
with a valid API token on every request, so authenticated routes are exercised past auth.
Bounded (few examples per operation) so that the run stays well under a minute.
"""

from __future__ import annotations

import asyncio

import pytest
import schemathesis
from hypothesis import HealthCheck, given
from hypothesis import settings as hypothesis_settings

from processor.settings import Settings
from processor.streams.kafka import ensure_topics
from tests.support.running import create_token, served

pytestmark = pytest.mark.integration


def test_no_input_causes_a_server_error(settings: Settings) -> None:
    """Every operation, a few generated cases each (positive and negative data); 5xx are
    collected with a curl line to reproduce, then reported together."""
    asyncio.run(ensure_topics(settings))
    token = asyncio.run(create_token(settings, "schemathesis"))
    headers = {"Authorization": f"Bearer {token}"}
    failures: list[str] = []
    calls: list[int] = []
    with served(settings) as url:
        schema = schemathesis.openapi.from_url(f"{url}/openapi.json")
        operations = [result.ok() for result in schema.get_all_operations()]
        assert len(operations) > 10

        for operation in operations:
            @given(case=operation.as_strategy())
            @hypothesis_settings(max_examples=12, deadline=None, derandomize=True, database=None,
                                 suppress_health_check=list(HealthCheck))
            def fuzz(case: schemathesis.Case) -> None:
                response = case.call(headers=headers, timeout=10)
                calls.append(response.status_code)
                # The rule of schemathesis' not_a_server_error check, applied directly so that
                # every failure is collected instead of shrunk one at a time.
                if response.status_code >= 500:
                    failures.append(f"{response.status_code} {case.as_curl_command(headers=headers)}"
                                    f"\n  {response.text[:300]}")

            fuzz()
    assert len(calls) >= 3 * len(operations), "too few requests were generated"
    assert any(code < 300 for code in calls), "no request got past validation and auth"
    print(f"{len(calls)} requests over {len(operations)} operations; 5xx: {len(failures)}")
    assert not failures, f"{len(failures)} requests caused a server error:\n" + "\n".join(failures[:20])
