"""Discovery of sinks through the ``sms_replies.sinks`` entry-point group."""

from __future__ import annotations

from importlib.metadata import EntryPoint, entry_points

from sms_replies.errors import ConfigError
from sms_replies.sinks.base import Sink

ENTRY_POINT_GROUP = "sms_replies.sinks"

# Built-in sinks whose driver is an optional extra: name -> (module, extra).
_EXTRAS = {"postgres": ("asyncpg", "postgres"), "clickhouse": ("clickhouse_driver", "clickhouse")}


# The built-in entry points of pyproject.toml (a unit test keeps them equal), so that
# a built-in sink added since the package was installed (an editable install run
# from a newer checkout) is found too. Installed entry points take precedence.
BUILT_IN = {
    "duckdb": "sms_replies.sinks.duckdb:DuckDBSink",
    "postgres": "sms_replies.sinks.postgres:PostgresSink",
    "clickhouse": "sms_replies.sinks.clickhouse:ClickHouseSink",
    "parquet": "sms_replies.sinks.parquet:ParquetSink",
    "webhook": "sms_replies.sinks.webhook:WebhookSink",
}


def available_sinks() -> dict[str, EntryPoint]:
    built_in = {
        name: EntryPoint(name=name, value=value, group=ENTRY_POINT_GROUP)
        for name, value in BUILT_IN.items()
    }
    return built_in | {ep.name: ep for ep in entry_points(group=ENTRY_POINT_GROUP)}


def load_sink(name: str) -> type[Sink]:
    """The sink class registered as ``name``; a clear ConfigError if it cannot be loaded."""
    sinks = available_sinks()
    if name not in sinks:
        known = ", ".join(sorted(sinks)) or "none"
        raise ConfigError(f"unknown sink {name!r} (installed sinks: {known})")
    try:
        cls = sinks[name].load()
    except ModuleNotFoundError as exc:
        module, extra = _EXTRAS.get(name, (exc.name, None))
        hint = f"pip install 'sms-replies[{extra}]'" if extra else f"install {module}"
        raise ConfigError(f"sink {name!r} needs {exc.name}: {hint}") from None
    if not (isinstance(cls, type) and issubclass(cls, Sink)):
        raise ConfigError(f"entry point {name!r} is not a sms_replies.sinks.Sink subclass")
    return cls
