"""HTTP API (FastAPI): stateless, any number of replicas."""
