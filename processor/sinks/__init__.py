"""Delivery adapters: webhook (``http1``, a small asyncio HTTP/1.1 client), Kinesis (boto3) and
Kafka (aiokafka) sinks.

They turn ``processor.domain.payloads.Delivery`` records into network calls; what is sent is
decided by the pure ``processor.domain.payloads`` module.
"""

from processor.sinks.base import DeliveryResult, Sink
from processor.sinks.errors import DeliveryFailed, SinkBackpressure, TargetRefused

__all__ = ["DeliveryFailed", "DeliveryResult", "Sink", "SinkBackpressure", "TargetRefused"]
