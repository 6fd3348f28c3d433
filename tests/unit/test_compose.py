"""docker-compose.yml cannot be run here (no Docker engine), so this checks that it agrees with
the settings module and with deploy/services.sh: services, ports and variable names."""

from __future__ import annotations

from pathlib import Path

import yaml

from processor.settings import Settings

ROOT = Path(__file__).resolve().parents[2]
COMPOSE = yaml.safe_load((ROOT / "docker-compose.yml").read_text())
APP_SERVICES = ("worker", "delivery", "api")


def _env(service: str) -> dict[str, str]:
    env = COMPOSE["services"][service].get("environment") or {}
    return {str(k): str(v) for k, v in env.items()}


def test_services_exist_with_the_project_commands() -> None:
    services = COMPOSE["services"]
    for name in ("kafka", "redis", "kinesis", *APP_SERVICES):
        assert name in services, name
    for name in APP_SERVICES:
        command = services[name]["command"]
        words = command if isinstance(command, list) else command.split()
        assert words[-1] == name


def test_every_signalbox_variable_is_a_setting() -> None:
    fields = {f"SIGNALBOX_{name.upper()}" for name in Settings.model_fields}
    for name in APP_SERVICES:
        env = _env(name)
        assert {"SIGNALBOX_KAFKA_BOOTSTRAP_SERVERS", "SIGNALBOX_REDIS_URL"} <= env.keys()
        unknown = {k for k in env if k.startswith("SIGNALBOX_")} - fields
        assert not unknown, f"{name}: {unknown} are not settings"


def test_host_ports_match_the_local_services() -> None:
    # The defaults of the settings model, not this shell's environment.
    kafka = str(Settings.model_fields["kafka_bootstrap_servers"].default)
    redis_url = str(Settings.model_fields["redis_url"].default)
    kafka_port = kafka.rsplit(":", 1)[1]
    redis_port = redis_url.rsplit(":", 1)[1].split("/")[0]
    published = {
        name: " ".join(str(p) for p in COMPOSE["services"][name].get("ports", []))
        for name in ("kafka", "redis", "kinesis", "api")
    }
    assert f"127.0.0.1:{kafka_port}:" in published["kafka"]
    assert f"127.0.0.1:{redis_port}:" in published["redis"]
    assert ":14567:" in published["kinesis"]
    api_port = _env("api")["SIGNALBOX_API_PORT"]
    assert f":{api_port}" in published["api"]
