"""docker-compose.yml cannot run here (no Docker engine): check what can be checked."""

from __future__ import annotations

import importlib
import pkgutil
from pathlib import Path
from typing import Any

import yaml
from pydantic_settings import BaseSettings

import sms_replies.sinks
from sms_replies.settings import Settings

COMPOSE = Path(__file__).parents[2] / "docker-compose.yml"


def known_variables() -> set[str]:
    """SMS_REPLIES_* names of the main settings and of every built-in sink's settings."""
    names = {f"SMS_REPLIES_{field.upper()}" for field in Settings.model_fields}
    for module in pkgutil.iter_modules(sms_replies.sinks.__path__):
        loaded = importlib.import_module(f"sms_replies.sinks.{module.name}")
        for value in vars(loaded).values():
            is_settings = isinstance(value, type) and issubclass(value, BaseSettings)
            if is_settings and value is not Settings:
                prefix = str(value.model_config.get("env_prefix", "")).upper()
                names |= {f"{prefix}{field.upper()}" for field in value.model_fields}
    return names


def compose() -> dict[str, Any]:
    loaded = yaml.safe_load(COMPOSE.read_text())
    assert isinstance(loaded, dict)
    return loaded


def test_compose_parses_and_runs_kafka_in_kraft_mode() -> None:
    services = compose()["services"]
    assert {"kafka", "ingest", "worker", "sinks"} <= set(services)
    kafka = services["kafka"]
    assert kafka["image"].startswith("apache/kafka:")
    assert kafka["environment"]["KAFKA_PROCESS_ROLES"] == "broker,controller"
    assert [services[s]["command"] for s in ("ingest", "worker", "sinks")] == [
        ["ingest"],
        ["worker"],
        ["sinks"],
    ]


def test_every_variable_compose_sets_is_a_setting() -> None:
    known = known_variables()
    used = {
        name
        for service in compose()["services"].values()
        for name in (service.get("environment") or {})
        if name.startswith("SMS_REPLIES_")
    }
    assert used, "compose sets no SMS_REPLIES_ variable"
    assert used - known == set()


def test_every_service_points_at_the_compose_kafka() -> None:
    services = compose()["services"]
    for name in ("ingest", "worker", "sinks"):
        env = services[name]["environment"]
        assert env["SMS_REPLIES_KAFKA_BOOTSTRAP"] == "kafka:9092"
        assert env["SMS_REPLIES_KAFKA_EMBEDDED"] == "false"
    listeners = services["kafka"]["environment"]["KAFKA_ADVERTISED_LISTENERS"]
    assert "kafka:9092" in listeners


def test_only_the_proxy_publishes_ports() -> None:
    services = compose()["services"]
    published = {name for name, service in services.items() if service.get("ports")}
    assert published == {"proxy"}
    assert services["proxy"]["image"].startswith("caddy:")
    assert "api" in services


def test_the_ingress_believes_forwarded_addresses_only_from_the_proxy() -> None:
    services = compose()["services"]
    proxy_address = services["proxy"]["networks"]["pipeline"]["ipv4_address"]
    assert services["ingest"]["environment"]["SMS_REPLIES_TRUSTED_PROXIES"] == proxy_address


def test_the_api_needs_a_token_in_compose() -> None:
    api = compose()["services"]["api"]["environment"]
    assert api["SMS_REPLIES_API_TOKEN"].startswith("${SMS_REPLIES_API_TOKEN:?")


def test_the_api_reaches_the_duckdb_sink_s_loopback_endpoint() -> None:
    # The sink owns replies.duckdb and serves readers on 127.0.0.1 only, and a reader
    # checks that the sink's pid is alive: the API needs both of its namespaces.
    api = compose()["services"]["api"]
    assert api["network_mode"] == "service:sinks"
    assert api["pid"] == "service:sinks"
    assert "networks" not in api


def test_the_image_runs_as_a_user_that_owns_the_data_volume() -> None:
    dockerfile = (COMPOSE.parent / "Dockerfile").read_text()
    user = [line.split()[1] for line in dockerfile.splitlines() if line.startswith("USER ")]
    assert user == ["replies"]
    assert "chown replies:replies /data" in dockerfile
