"""Checks ``run`` makes before it starts anything: settings that cannot work, ports in use.

Each failure is a :class:`ConfigError` of one line naming the setting to change,
so that a typo or a second ``run`` on the same ports ends the command at once
instead of a child dying in a loop behind a "running" banner.
"""

from __future__ import annotations

import errno
import os
import socket
from dataclasses import dataclass

from pydantic import ValidationError

from sms_replies.errors import ConfigError
from sms_replies.settings import Settings
from sms_replies.sinks.registry import load_sink


def env_name(field: str) -> str:
    return f"SMS_REPLIES_{field.upper()}"


@dataclass(frozen=True, slots=True)
class Listener:
    """A port a process of the run will listen on, and the settings that choose it."""

    port_setting: str
    host_setting: str
    host: str
    port: int


def listeners(settings: Settings) -> list[Listener]:
    """Every fixed port of ``run`` (port 0 means any free one: nothing to check)."""
    found = [
        Listener("http_port", "http_host", settings.http_host, settings.http_port),
        Listener("api_port", "api_host", settings.api_host, settings.api_port),
        Listener(
            "sinks_web_port", "sinks_web_host", settings.sinks_web_host, settings.sinks_web_port
        ),
    ]
    if settings.worker_web_port:
        found += [
            Listener(
                "worker_web_port",
                "worker_web_host",
                settings.worker_web_host,
                settings.worker_web_port + i,
            )
            for i in range(settings.worker_processes)
        ]
    return [listener for listener in found if listener.port]


def check_ports(settings: Settings) -> None:
    """Bind each port the run will use, as its server will (SO_REUSEADDR), then let go."""
    for listener in listeners(settings):
        try:
            with socket.create_server((listener.host, listener.port)):
                pass
        except OSError as exc:
            raise ConfigError(_port_problem(listener, exc)) from None
    if not settings.kafka_bootstrap:  # the embedded broker takes any free port there
        try:
            with socket.create_server((settings.broker_host, 0)):
                pass
        except OSError as exc:
            raise ConfigError(
                f"{env_name('broker_host')}: cannot listen on {settings.broker_host} "
                f"({exc.strerror or exc})"
            ) from None


def _port_problem(listener: Listener, exc: OSError) -> str:
    where = f"{listener.host}:{listener.port}"
    if exc.errno == errno.EADDRINUSE:
        return (
            f"{env_name(listener.port_setting)}: {where} is already in use "
            "(another sms-replies run?); stop that process or choose another port"
        )
    # Not "in use": the address is not one of this machine's, or not allowed.
    return f"{env_name(listener.host_setting)}: cannot listen on {where} ({exc.strerror or exc})"


def check_config(settings: Settings) -> None:
    """Settings that load but cannot work together, and sinks that cannot be built."""
    if settings.ingest_workers > 1 and settings.http_port == 0:
        raise ConfigError(
            f"{env_name('ingest_workers')}: {settings.ingest_workers} processes need a "
            f"fixed {env_name('http_port')} (0 would give each its own port)"
        )
    for name in settings.sinks:
        try:
            load_sink(name).from_settings(settings)
        except ConfigError as exc:
            raise ConfigError(f"{env_name('sinks')}: {exc}") from None
        except ValidationError as exc:
            problems = "; ".join(
                f"{'.'.join(str(part) for part in error['loc'])}: {error['msg']}"
                for error in exc.errors()
            )
            raise ConfigError(f"{env_name('sinks')}: sink {name!r}: {problems}") from None
    if not settings.sinks:
        raise ConfigError(f"{env_name('sinks')}: no sink configured (default: duckdb)")
    try:
        settings.data_dir.mkdir(parents=True, exist_ok=True)
    except OSError as exc:
        raise ConfigError(
            f"{env_name('data_dir')}: cannot create {settings.data_dir} ({exc.strerror or exc})"
        ) from None
    if not os.access(settings.data_dir, os.W_OK | os.X_OK):
        raise ConfigError(f"{env_name('data_dir')}: {settings.data_dir} is not writable")


def preflight(settings: Settings) -> None:
    """Everything ``run`` can check before it starts a process; raises ConfigError."""
    check_config(settings)
    check_ports(settings)
