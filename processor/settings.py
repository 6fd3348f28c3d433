"""One settings object, read once from the environment at start.

Every variable carries the ``SIGNALBOX_`` prefix. The service addresses also accept the
conventional unprefixed names (``KAFKA_BOOTSTRAP_SERVERS``, ``REDIS_URL``,
``KINESIS_ENDPOINT_URL``) that ``make up`` writes to ``.run/env``, so a shell that sourced it
just works. Invalid values stop the process at start with a message naming the variable.
"""

from __future__ import annotations

from functools import lru_cache

from pydantic import AliasChoices, Field, ValidationError, field_validator
from pydantic_settings import BaseSettings, SettingsConfigDict

from processor.errors import ConfigError


class Settings(BaseSettings):
    model_config = SettingsConfigDict(
        env_prefix="SIGNALBOX_", extra="ignore", frozen=True, populate_by_name=True
    )

    kafka_bootstrap_servers: str = Field(
        "127.0.0.1:19092",
        validation_alias=AliasChoices("SIGNALBOX_KAFKA_BOOTSTRAP_SERVERS", "KAFKA_BOOTSTRAP_SERVERS"),
    )
    redis_url: str = Field(
        "redis://127.0.0.1:16379/0",
        validation_alias=AliasChoices("SIGNALBOX_REDIS_URL", "REDIS_URL"),
    )
    kinesis_endpoint_url: str | None = Field(
        None,
        validation_alias=AliasChoices("SIGNALBOX_KINESIS_ENDPOINT_URL", "KINESIS_ENDPOINT_URL"),
    )
    aws_region: str = Field("us-east-1", validation_alias=AliasChoices("SIGNALBOX_AWS_REGION", "AWS_REGION"))

    # Topics. The project creates them itself with explicit partition counts.
    events_topic: str = "events"
    events_dlq_topic: str = "events.dlq"
    # Internal: events re-keyed by entity, co-partitioned with `events` (see streams/worker.py).
    keyed_topic: str = "events.by-key"
    transitions_topic: str = "transitions"
    interventions_topic: str = "interventions"
    deliveries_dlq_topic: str = "deliveries.dlq"
    partitions: int = Field(4, ge=1, le=1024)

    # Kafka group membership: how fast a crashed member's partitions move to another one.
    kafka_session_timeout_ms: int = Field(10_000, ge=6_000, le=300_000)

    # Worker.
    worker_group: str = "signalbox-worker"
    batch_max_records: int = Field(2000, ge=1, le=100_000)
    batch_timeout_ms: int = Field(50, ge=1, le=10_000)
    max_event_bytes: int = Field(1_000_000, ge=1024)
    allowed_lateness_ms: int = Field(3_600_000, ge=0)
    registry_poll_ms: int = Field(500, ge=50)
    # Identity fields in priority order; profiles (segment entities) are keyed by the first.
    identity_fields: str = Field("user_id,email", pattern=r"^[A-Za-z0-9_]+(,[A-Za-z0-9_]+)*$")
    scheduler_tick_ms: int = Field(100, ge=10, le=10_000)

    # Delivery.
    delivery_group: str = "signalbox-delivery"
    webhook_timeout_s: float = Field(10.0, gt=0)
    # Per subscription: attempts (in place, then parked and retried in the background) and the
    # time budget before a delivery is dead-lettered with its reason.
    delivery_max_attempts: int = Field(20, ge=1)
    delivery_retry_budget_s: float = Field(3600.0, gt=0)
    # Prometheus metrics of the delivery worker (per subscription); unset = not served.
    delivery_metrics_port: int | None = Field(None, ge=0, le=65535)
    delivery_metrics_addr: str = "127.0.0.1"
    webhook_allow_loopback: bool = False
    webhook_allow_private: bool = False

    # API.
    api_host: str = "127.0.0.1"
    api_port: int = Field(8000, ge=1, le=65535)
    api_max_body_bytes: int = Field(1_000_000, ge=1024)
    cors_origins: str = ""

    log_level: str = "INFO"

    @field_validator("log_level")
    @classmethod
    def _level(cls, value: str) -> str:
        upper = value.upper()
        if upper not in {"DEBUG", "INFO", "WARNING", "ERROR"}:
            raise ValueError("must be one of DEBUG, INFO, WARNING, ERROR")
        return upper

    @field_validator("redis_url")
    @classmethod
    def _redis(cls, value: str) -> str:
        if not value.startswith(("redis://", "rediss://", "unix://")):
            raise ValueError("must be a redis://, rediss:// or unix:// URL")
        return value


    @property
    def identities(self) -> tuple[str, ...]:
        return tuple(self.identity_fields.split(","))


    def isolated(self, tag: str, *, prefix: str = "", redis_db: int | None = None) -> Settings:
        """A copy whose topics and consumer groups carry ``tag`` (and, given ``redis_db``,
        whose Redis database is that one): a run that shares a broker and a Redis with others
        — tests, benchmarks — sees only its own records and state."""
        update: dict[str, object] = {
            name: f"{prefix}{getattr(self, name)}-{tag}"
            for name in ("events_topic", "events_dlq_topic", "keyed_topic", "transitions_topic",
                         "interventions_topic", "deliveries_dlq_topic", "worker_group",
                         "delivery_group")
        }
        if redis_db is not None:
            update["redis_url"] = self.redis_url.rsplit("/", 1)[0] + f"/{redis_db}"
        return self.model_copy(update=update)

    def to_env(self, base: dict[str, str]) -> dict[str, str]:
        """``base`` plus the SIGNALBOX_ variables that reproduce these settings in a child
        process; the unprefixed service variables are dropped so they cannot disagree."""
        env = {k: v for k, v in base.items()
               if k not in ("KAFKA_BOOTSTRAP_SERVERS", "REDIS_URL", "KINESIS_ENDPOINT_URL")}
        for name, value in self.model_dump().items():
            if value is not None:
                env[f"SIGNALBOX_{name.upper()}"] = str(value).lower() if isinstance(value, bool) else str(value)
        return env


def load_settings(**overrides: object) -> Settings:
    """Read and validate the environment; raise ``ConfigError`` naming each bad variable."""
    try:
        return Settings(**overrides)  # type: ignore[arg-type]
    except ValidationError as exc:
        problems = "; ".join(
            f"SIGNALBOX_{'_'.join(str(p) for p in err['loc']).upper()}: {err['msg']}"
            for err in exc.errors()
        )
        raise ConfigError(f"invalid configuration: {problems}") from None


@lru_cache(maxsize=1)
def get_settings() -> Settings:
    return load_settings()
