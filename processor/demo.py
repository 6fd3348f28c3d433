"""``make demo``: the main job end to end on a running stack (``make up``).

Starts a real HTTP receiver on loopback, publishes ``topologies/demo.yaml`` plus a webhook
subscription on the ``active_cart`` segment pointing at the receiver, produces the sample
events, and prints each transition as the receiver gets it: an enter, then an exit.
"""

from __future__ import annotations

import asyncio
import json
import sys
import threading
import time
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any

from redis.asyncio import Redis

from processor.publishing import publish_file, publish_subscription
from processor.settings import get_settings
from processor.state.registry import Registry
from processor.streams.producing import produce_lines

ROOT = Path(__file__).resolve().parents[1]
TOPOLOGY = ROOT / "topologies" / "demo.yaml"
EVENTS = ROOT / "topologies" / "demo-events.jsonl"
TIMEOUT_S = 60


class _Receiver(ThreadingHTTPServer):
    def __init__(self) -> None:
        super().__init__(("127.0.0.1", 0), _Handler)
        self.received: list[dict[str, Any]] = []
        self.arrived = threading.Condition()

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.server_address[1]}/hooks/signalbox"


class _Handler(BaseHTTPRequestHandler):
    server: _Receiver

    def do_POST(self) -> None:  # noqa: N802 (http.server's naming)
        body = self.rfile.read(int(self.headers.get("content-length", 0)))
        self.send_response(200)
        self.end_headers()
        with self.server.arrived:
            self.server.received.append(json.loads(body))
            self.server.arrived.notify_all()

    def log_message(self, *args: Any) -> None:
        pass


def _describe(payload: dict[str, Any]) -> str:
    data = payload.get("data", {})
    events = data.get("segment_events") or []
    kinds = ", ".join(f"{e.get('event')} {e.get('slug') or e.get('id')}" for e in events)
    return f"{kinds or payload}  user_id={data.get('user_id')}  cart_items={data.get('cart_items')}"


async def _publish(receiver: _Receiver) -> None:
    settings = get_settings()
    redis = Redis.from_url(settings.redis_url)
    try:
        registry = Registry(redis)
        counts = await publish_file(registry, TOPOLOGY)
        print(f"published {TOPOLOGY.relative_to(ROOT)}: {counts}")
        await publish_subscription(registry, {
            "id": "demo-webhook",
            "name": "demo webhook",
            "channel": "webhook",
            "segment_ids": ["active_cart"],
            "webhook_url": receiver.url,
            "headers": {"best_number": "47"},
        })
        print(f"subscription demo-webhook -> {receiver.url}")
        await _wait_for_workers(registry, await registry.version())
    finally:
        await redis.aclose()


async def _wait_for_workers(registry: Registry, version: int) -> None:
    """Probe until every live worker has loaded ``version`` (they poll the registry)."""
    deadline = time.monotonic() + TIMEOUT_S
    while time.monotonic() < deadline:
        live = await registry.live_worker_versions(int(time.time() * 1000))
        if live and all(v >= version for v in live.values()):
            return
        await asyncio.sleep(0.1)
    raise SystemExit(f"workers did not load registry version {version}; see .run/logs/")


def main() -> int:
    receiver = _Receiver()
    threading.Thread(target=receiver.serve_forever, daemon=True).start()
    asyncio.run(_publish(receiver))
    run = str(int(time.time()))
    lines = [
        line.replace(b'"shopper-', f'"shopper-{run}-'.encode())
        for line in EVENTS.read_bytes().splitlines() if line.strip()
    ]
    count = asyncio.run(produce_lines(get_settings(), lines, stream="default"))
    print(f"produced {count} events for shoppers shopper-{run}-*; waiting for transitions ...")
    deadline = time.monotonic() + TIMEOUT_S
    seen = 0
    with receiver.arrived:
        while seen < 2 and time.monotonic() < deadline:
            receiver.arrived.wait(timeout=0.5)
            for payload in receiver.received[seen:]:
                print(f"  webhook received: {_describe(payload)}")
            seen = len(receiver.received)
    receiver.shutdown()
    if seen < 2:
        print(f"only {seen} transition(s) arrived within {TIMEOUT_S}s; see .run/logs/", file=sys.stderr)
        return 1
    print("demo done: enter and exit delivered. `make down` stops the stack.")
    return 0


if __name__ == "__main__":
    sys.exit(main())
