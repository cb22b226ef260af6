"""Sink discovery through the entry-point group, and its error messages."""

from __future__ import annotations

import sys
from importlib.metadata import EntryPoint

import pytest

from sms_replies.errors import ConfigError
from sms_replies.sinks import available_sinks, load_sink, registry
from sms_replies.sinks.duckdb import DuckDBSink


def test_built_in_sinks_are_registered() -> None:
    assert {"duckdb", "postgres", "clickhouse", "parquet"} <= set(available_sinks())
    assert load_sink("duckdb") is DuckDBSink


def test_unknown_sink_names_the_installed_ones() -> None:
    with pytest.raises(ConfigError, match=r"unknown sink 'kafkaesque'.*duckdb"):
        load_sink("kafkaesque")


def test_missing_driver_says_which_extra_to_install(monkeypatch: pytest.MonkeyPatch) -> None:
    # Make the driver unimportable, as on an install without the extra.
    monkeypatch.setitem(sys.modules, "asyncpg", None)
    monkeypatch.delitem(sys.modules, "sms_replies.sinks.postgres", raising=False)
    with pytest.raises(ConfigError, match=r"pip install 'sms-replies\[postgres\]'"):
        load_sink("postgres")


def test_entry_point_that_is_not_a_sink_is_refused(monkeypatch: pytest.MonkeyPatch) -> None:
    bogus = EntryPoint(
        name="bogus", value="sms_replies.settings:Settings", group="sms_replies.sinks"
    )
    monkeypatch.setattr(registry, "available_sinks", lambda: {"bogus": bogus})
    with pytest.raises(ConfigError, match=r"not a sms_replies\.sinks\.Sink subclass"):
        registry.load_sink("bogus")
