"""Kafka adapters: the only package where aiokafka and faust appear."""
