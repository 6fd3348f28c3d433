"""Signalbox: real-time customer context engine."""
