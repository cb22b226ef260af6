"""docker-compose.yml cannot run here (no Docker engine): check what can be checked."""

from __future__ import annotations

import importlib
import pkgutil
import re
from pathlib import Path
from typing import Any
from urllib.parse import SplitResult, parse_qs, urlsplit

import pytest
import yaml
from pydantic_settings import BaseSettings

import sms_replies.sinks
from sms_replies.settings import Settings

COMPOSE = Path(__file__).parents[2] / "docker-compose.yml"
CLICKHOUSE = COMPOSE.parent / "deploy" / "compose.clickhouse.yml"
CADDYFILE = COMPOSE.parent / "deploy" / "Caddyfile"


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
    try:  # the analytics store URL (issue 13), read by stores/url.py
        from sms_replies.stores import url
    except ImportError:
        pass
    else:
        names.add(url.SETTING)
    return names


def compose(*overrides: Path) -> dict[str, Any]:
    """docker-compose.yml, with ``overrides`` merged as `docker compose -f ... -f ...` does."""
    loaded = yaml.safe_load(COMPOSE.read_text())
    assert isinstance(loaded, dict)
    for path in overrides:
        override = yaml.safe_load(path.read_text())
        assert isinstance(override, dict)
        loaded = _merge(loaded, override)
    return loaded


def _merge(base: Any, override: Any) -> Any:
    """Mappings merge key by key (environment, depends_on...); anything else is replaced."""
    if isinstance(base, dict) and isinstance(override, dict):
        return {k: _merge(base[k], v) if k in base else v for k, v in override.items()} | {
            k: v for k, v in base.items() if k not in override
        }
    return override


def url(value: str) -> SplitResult:
    """A URL compose interpolates (each ``${VAR:?message}`` replaced first, as compose does)."""
    return urlsplit(re.sub(r"\$\{[^}]*\}", "secret", value))


def interpolated(value: str) -> set[str]:
    """Names of the host variables a compose value interpolates (``${NAME:?...}``)."""
    return set(re.findall(r"\$\{([A-Z_][A-Z0-9_]*)", value))


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


@pytest.mark.parametrize("overrides", [(), (CLICKHOUSE,)], ids=["compose", "clickhouse"])
def test_every_variable_compose_sets_is_a_setting(overrides: tuple[Path, ...]) -> None:
    known = known_variables()
    used = {
        name
        for service in compose(*overrides)["services"].values()
        for name in (service.get("environment") or {})
        if name.startswith("SMS_REPLIES_")
    }
    assert used, "compose sets no SMS_REPLIES_ variable"
    assert used - known == set()


@pytest.mark.parametrize("overrides", [(), (CLICKHOUSE,)], ids=["compose", "clickhouse"])
def test_every_named_volume_is_declared(overrides: tuple[Path, ...]) -> None:
    loaded = compose(*overrides)
    named = {
        volume.split(":")[0]
        for service in loaded["services"].values()
        for volume in service.get("volumes", [])
        if not volume.startswith((".", "/"))
    }
    assert named == set(loaded["volumes"])


def test_every_service_points_at_the_compose_kafka() -> None:
    services = compose()["services"]
    for name in ("ingest", "worker", "sinks"):
        env = services[name]["environment"]
        assert env["SMS_REPLIES_KAFKA_BOOTSTRAP"] == "kafka:9092"
        assert env["SMS_REPLIES_KAFKA_EMBEDDED"] == "false"
    listeners = services["kafka"]["environment"]["KAFKA_ADVERTISED_LISTENERS"]
    assert "kafka:9092" in listeners


@pytest.mark.parametrize("overrides", [(), (CLICKHOUSE,)], ids=["compose", "clickhouse"])
def test_only_the_proxy_publishes_ports(overrides: tuple[Path, ...]) -> None:
    services = compose(*overrides)["services"]
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


def test_the_api_reads_the_postgresql_the_sinks_write() -> None:
    services = compose()["services"]
    api = services["api"]
    assert api["command"] == ["api"]
    assert api["networks"] == ["pipeline"]  # its own container, no other's namespaces
    assert "network_mode" not in api
    assert "pid" not in api
    assert api["depends_on"]["postgres"] == {"condition": "service_healthy"}
    raw = api["environment"]["SMS_REPLIES_ANALYTICS_STORE"]
    store = url(raw)
    sink = url(services["sinks"]["environment"]["SMS_REPLIES_POSTGRES_DSN"])
    postgres = services["postgres"]["environment"]
    assert store.scheme == "postgresql"
    assert (store.hostname, store.port) == ("postgres", 5432) == (sink.hostname, sink.port)
    assert store.path == sink.path == f"/{postgres['POSTGRES_DB']}"
    assert store.username == sink.username == postgres["POSTGRES_USER"]
    # The same password variable as the server's (not a copy that could drift).
    assert store.password == "secret"
    assert interpolated(raw) == interpolated(postgres["POSTGRES_PASSWORD"]) == {"POSTGRES_PASSWORD"}
    # The schema the postgres sink writes (its default, unless compose sets another).
    sink_schema = services["sinks"]["environment"].get("SMS_REPLIES_POSTGRES_SCHEMA_NAME", "public")
    assert parse_qs(store.query) == {"schema": [sink_schema]}


def test_the_proxy_forwards_to_what_compose_runs_as_the_caddyfile_expects() -> None:
    services = compose()["services"]
    proxy = services["proxy"]["environment"]
    ingest, api = services["ingest"], services["api"]
    assert proxy["PROXY_UPSTREAM"] == f"ingest:{ingest['environment']['SMS_REPLIES_HTTP_PORT']}"
    assert proxy["PROXY_API_UPSTREAM"] == f"api:{api['environment']['SMS_REPLIES_API_PORT']}"
    assert ingest["environment"]["SMS_REPLIES_HTTP_PORT"] in ingest["expose"]
    assert api["environment"]["SMS_REPLIES_API_PORT"] in api["expose"]
    assert {"ingest", "api"} <= set(services["proxy"]["depends_on"])
    # Every placeholder of the Caddyfile is set by compose, and compose sets nothing else.
    placeholders = set(re.findall(r"\{\$([A-Z_]+)", CADDYFILE.read_text()))
    assert placeholders == set(proxy)
    # The API answers to the public name the proxy serves (Caddy passes Host through).
    site = interpolated(proxy["PROXY_SITE"])
    assert interpolated(api["environment"]["SMS_REPLIES_API_ALLOWED_HOSTS"]) == site
    assert interpolated(proxy["PROXY_ANALYTICS_CLIENTS"]) == {"SMS_REPLIES_ANALYTICS_CLIENTS"}
    assert proxy["PROXY_ANALYTICS_CLIENTS"].endswith(":-private_ranges}")


def test_the_clickhouse_override_feeds_and_answers_from_clickhouse() -> None:
    services = compose(CLICKHOUSE)["services"]
    server = services["clickhouse"]
    assert server["image"].startswith("clickhouse/clickhouse-server:")
    assert server["networks"] == ["pipeline"]
    sinks = services["sinks"]["environment"]
    assert "clickhouse" in sinks["SMS_REPLIES_SINKS"].split(",")
    assert "postgres" in sinks["SMS_REPLIES_SINKS"].split(",")  # kept: the override adds
    assert sinks["SMS_REPLIES_KAFKA_BOOTSTRAP"] == "kafka:9092"  # merged, not replaced
    assert services["sinks"]["depends_on"]["postgres"] == {"condition": "service_healthy"}
    raw = services["api"]["environment"]["SMS_REPLIES_ANALYTICS_STORE"]
    store = url(raw)
    assert store.scheme == "clickhouse"
    assert (store.hostname, store.port) == (sinks["SMS_REPLIES_CLICKHOUSE_HOST"], 9000)
    assert str(store.port) == sinks["SMS_REPLIES_CLICKHOUSE_PORT"]
    assert store.path == f"/{sinks['SMS_REPLIES_CLICKHOUSE_DATABASE']}"
    assert store.path == f"/{server['environment']['CLICKHOUSE_DB']}"
    assert store.username == sinks["SMS_REPLIES_CLICKHOUSE_USER"]
    assert store.username == server["environment"]["CLICKHOUSE_USER"]
    assert store.password == "secret"
    assert interpolated(raw) == interpolated(server["environment"]["CLICKHOUSE_PASSWORD"])
    assert services["api"]["depends_on"]["clickhouse"] == {"condition": "service_healthy"}


def test_the_image_runs_as_a_user_that_owns_the_data_volume() -> None:
    dockerfile = (COMPOSE.parent / "Dockerfile").read_text()
    user = [line.split()[1] for line in dockerfile.splitlines() if line.startswith("USER ")]
    assert user == ["replies"]
    assert "chown replies:replies /data" in dockerfile
