"""Redis state: key templates, atomic scripts, entity store and registry.

Nothing outside this package builds a Redis key string.
"""
