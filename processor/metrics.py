"""Prometheus metrics of the delivery worker, on a registry of its own.

Each ``DeliveryMetrics`` owns a ``CollectorRegistry`` (not the process-global one), so several
workers in one process (tests, the benchmark) never collide, and ``serve`` exposes exactly this
worker's series. Series, all labelled by ``subscription``:

- ``signalbox_delivery_delivered_total``     records the target accepted
- ``signalbox_delivery_retried_total``       attempts after a record's first one
- ``signalbox_delivery_parked_total``        records parked for background retry
- ``signalbox_delivery_dead_lettered_total`` records sent to the dead-letter topic
- ``signalbox_delivery_parked_now``          records parked now
- ``signalbox_delivery_lag_seconds``         age of the oldest record not yet delivered
plus ``signalbox_delivery_consumer_lag_records{partition}``: records of ``transitions`` not
consumed yet.
"""

from __future__ import annotations

import contextlib
import threading
from wsgiref.simple_server import WSGIServer

from prometheus_client import CollectorRegistry, Counter, Gauge, start_http_server


class DeliveryMetrics:
    def __init__(self) -> None:
        self.registry = CollectorRegistry()
        labels = ["subscription"]
        self.delivered = Counter("signalbox_delivery_delivered", "Records delivered.",
                                 labels, registry=self.registry)
        self.retried = Counter("signalbox_delivery_retried", "Retry attempts.",
                               labels, registry=self.registry)
        self.parked_total = Counter("signalbox_delivery_parked", "Records parked for retry.",
                                    labels, registry=self.registry)
        self.dead_lettered = Counter("signalbox_delivery_dead_lettered",
                                     "Records dead-lettered.", labels, registry=self.registry)
        self.parked = Gauge("signalbox_delivery_parked_now", "Records parked now.",
                            labels, registry=self.registry)
        self.lag = Gauge("signalbox_delivery_lag_seconds",
                         "Age of the oldest record not yet delivered.", labels,
                         registry=self.registry)
        self.consumer_lag = Gauge("signalbox_delivery_consumer_lag_records",
                                  "Transitions not consumed yet.", ["partition"],
                                  registry=self.registry)
        self._server: tuple[WSGIServer, threading.Thread] | None = None

    def forget(self, subscription_id: str) -> None:
        """Drop a deleted subscription's series."""
        for metric in (self.delivered, self.retried, self.parked_total, self.dead_lettered,
                       self.parked, self.lag):
            with contextlib.suppress(KeyError):  # never observed
                metric.remove(subscription_id)

    def serve(self, port: int, addr: str = "0.0.0.0") -> int:  # noqa: S104 - scraped from outside
        """Expose ``/metrics`` over HTTP on a background thread; returns the bound port."""
        server, thread = start_http_server(port, addr=addr, registry=self.registry)
        self._server = (server, thread)
        return int(server.server_address[1])

    def close(self) -> None:
        if self._server is not None:
            server, thread = self._server
            server.shutdown()
            server.server_close()
            thread.join(timeout=5)
            self._server = None

    def value(self, name: str, subscription_id: str) -> float:
        """Current value of one series (tests, the benchmark)."""
        found = self.registry.get_sample_value(name, {"subscription": subscription_id})
        return 0.0 if found is None else float(found)
