"""The ``sms-replies`` command: run, ingest, worker, sinks, broker, stats."""

from __future__ import annotations

import asyncio
import functools
import logging
import signal
import sys
from collections.abc import Callable
from typing import Any, TypeVar

import click
from pydantic import ValidationError

from sms_replies import logs
from sms_replies.errors import SmsRepliesError
from sms_replies.settings import Settings, settings_problems

F = TypeVar("F", bound=Callable[..., Any])


def settings_options(func: F) -> F:
    """Add one flag per Settings field (``http_port`` -> ``--http-port``), env as fallback."""
    for name, info in reversed(Settings.model_fields.items()):
        flag = "--" + name.replace("_", "-")
        env = f"SMS_REPLIES_{name.upper()}"
        help_text = f"{info.description} [env {env}]"
        if info.annotation is bool:
            option = click.option(f"{flag}/--no-{flag[2:]}", name, default=None, help=help_text)
        else:
            option = click.option(flag, name, default=None, help=help_text)
        func = option(func)
    return func


def load_settings(component: str, overrides: dict[str, Any]) -> Settings:
    try:
        settings = Settings.load(**overrides)
    except ValidationError as exc:
        raise click.ClickException(settings_problems(exc)) from None
    if component == "worker":
        from sms_replies.health import worker_name

        component = worker_name(settings.worker_index)
    logs.configure(settings.log_level, component, settings.secret_values())
    return settings


def converting_errors(func: F) -> F:
    """Our errors end the command with their message, not a traceback."""

    @functools.wraps(func)
    def wrapper(*args: Any, **kwargs: Any) -> Any:
        try:
            return func(*args, **kwargs)
        except SmsRepliesError as exc:
            raise click.ClickException(str(exc)) from None

    return wrapper  # type: ignore[return-value]


@click.group(context_settings={"help_option_names": ["-h", "--help"]})
@click.version_option(package_name="sms-replies")
def main() -> None:
    """Capture SMS Partner campaign replies: ingress -> Kafka -> reassembly -> stores."""


@main.command()
@settings_options
@converting_errors
def run(**overrides: Any) -> None:
    """Everything on one machine: (embedded broker,) ingress, worker and sinks."""
    from sms_replies.analytics.guard import api_access
    from sms_replies.callback_token import banner, with_callback_token
    from sms_replies.supervisor import run_pipeline

    settings = load_settings("run", overrides)
    api_access(settings)  # fail now, not in a restart loop of the API process
    settings, token_source = with_callback_token(settings)
    logs.configure(settings.log_level, "run", settings.secret_values())  # the new token too
    run_pipeline(settings, on_ready=lambda: click.echo(banner(settings, token_source)))


@main.command()
@settings_options
@converting_errors
def ingest(**overrides: Any) -> None:
    """The HTTP ingress alone (--ingest-workers N: N processes on one port)."""
    from sms_replies.ingest.server import serve

    settings = load_settings("ingest", overrides)
    try:
        serve(settings)
    except ValueError as exc:
        raise click.UsageError(str(exc)) from None


@main.command()
@settings_options
@converting_errors
def worker(**overrides: Any) -> None:
    """The Faust worker that reassembles long replies."""
    from faust import Worker

    from sms_replies.broker.admin import wait_for_topics
    from sms_replies.streams.app import create_app

    settings = load_settings("worker", overrides)
    asyncio.run(
        wait_for_topics(
            settings.bootstrap,
            settings.topics,
            partitions=settings.topic_partitions,
            replication_factor=settings.replication_factor,
        )
    )
    settings.worker_state_dir.mkdir(parents=True, exist_ok=True)
    app = create_app(settings)
    # INFO, not Faust's WARN default: at WARN it installs a spinner and sets the
    # root logger to DEBUG, which costs ~20 % of throughput.
    on_terminal = logs.on_terminal(sys.stdout)
    process = Worker(
        app, loglevel=settings.log_level.lower(), override_logging=False, quiet=not on_terminal
    )
    if not on_terminal:
        process.spinner = None  # it writes cursor escape codes even to a file
    process.execute_from_commandline()


@main.command()
@settings_options
@converting_errors
def sinks(**overrides: Any) -> None:
    """The sink runners (SMS_REPLIES_SINKS), each with its own consumer group."""
    from sms_replies.sinks.service import serve_sinks

    settings = load_settings("sinks", overrides)
    asyncio.run(serve_sinks(settings))


@main.command()
@click.option("--host", default="127.0.0.1", show_default=True)
@click.option("--port", default=9092, show_default=True, type=int)
@converting_errors
def broker(host: str, port: int) -> None:
    """The embedded broker alone (Tansu, memory storage: nothing survives a stop)."""
    from sms_replies.broker.embedded import EmbeddedBroker

    logs.configure("INFO", "broker")
    signal.pthread_sigmask(signal.SIG_BLOCK, {signal.SIGINT, signal.SIGTERM})
    with EmbeddedBroker(host, port) as embedded:
        click.echo(
            f"embedded broker listening on {embedded.bootstrap}; use "
            f"SMS_REPLIES_KAFKA_BOOTSTRAP={embedded.bootstrap} SMS_REPLIES_KAFKA_EMBEDDED=true"
        )
        signal.sigwait({signal.SIGINT, signal.SIGTERM})


@main.command()
@settings_options
@click.option(
    "--store",
    metavar="URL",
    help="Store to read (same as --analytics-store): a DuckDB path or duckdb:///path, "
    "postgresql://user@host:port/db?schema=NAME, clickhouse://host:port/db.",
)
@converting_errors
def api(store: str | None, **overrides: Any) -> None:
    """The analytics API and dashboard (reads the store: DuckDB, PostgreSQL or ClickHouse)."""
    from aiohttp import web

    from sms_replies.analytics.api import create_api_app
    from sms_replies.analytics.guard import api_access
    from sms_replies.health import add_health_route
    from sms_replies.metrics import add_metrics_route
    from sms_replies.privacy import key_bytes
    from sms_replies.stores.url import parse_store_url

    settings = load_settings("api", overrides)
    if store is None and settings.analytics_store is not None:
        store = settings.analytics_store.get_secret_value()
    url = parse_store_url(store, default_duckdb=settings.duckdb_path)
    app = create_api_app(
        url,
        default_tz=settings.analytics_tz,
        store_timeout=settings.store_read_timeout,
        access=api_access(settings),  # refuses to serve beyond loopback without a token
        pseudonymize_key=key_bytes(settings.pseudonymize_key),
    )
    add_health_route(app, settings)
    add_metrics_route(app)
    logging.getLogger("sms_replies.api").info("analytics API reading %s", url)
    web.run_app(
        app,
        host=settings.api_host,
        port=settings.api_port,
        print=None,
        access_log=None,
    )


def _attach_analytics() -> None:
    from sms_replies.analytics.cli import campaign_group, optouts_group, stats_command
    from sms_replies.analytics.privacy_cli import erase_command, retention_command

    main.add_command(stats_command, "stats")
    main.add_command(campaign_group, "campaign")
    main.add_command(optouts_group, "optouts")
    main.add_command(retention_command, "retention")
    main.add_command(erase_command, "erase")

    from sms_replies.dead_letters_cli import dead_letters_group

    main.add_command(dead_letters_group, "dead-letters")


_attach_analytics()
