"""Sink discovery through the entry-point group, and its error messages."""

from __future__ import annotations

import sys
from importlib.metadata import EntryPoint
from pathlib import Path

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


def test_sms_replies_sinks_is_the_one_import_for_sink_authors() -> None:
    """Everything a sink needs, and the example sink imports nothing else of sms_replies."""
    import ast

    import sms_replies.sinks as surface

    for name in surface.__all__:
        assert getattr(surface, name) is not None, name
    needed = {"Sink", "Reply", "SinkWriteError", "COLUMNS", "COLUMN_NAMES", "to_row"}
    assert needed <= set(surface.__all__)
    example = Path(__file__).parents[2] / "examples" / "jsonl-sink" / "src"
    modules = {
        node.module
        for path in example.rglob("*.py")
        for node in ast.walk(ast.parse(path.read_text()))
        if isinstance(node, ast.ImportFrom) and node.module
    }
    assert {m for m in modules if m.split(".")[0] == "sms_replies"} == {"sms_replies.sinks"}


def test_built_in_sinks_need_only_the_sink_context(tmp_path: Path) -> None:
    """from_settings reads the SinkContext's fields (data_dir, duckdb_path, postgres_dsn,
    resubscribe_keywords), nothing else of Settings."""
    from dataclasses import dataclass

    from pydantic import SecretStr

    from sms_replies.sinks import SinkContext, load_sink

    @dataclass(frozen=True)
    class OnlyTheContext:
        data_dir: Path
        duckdb_path: Path
        postgres_dsn: SecretStr | None
        resubscribe_keywords: tuple[str, ...]

    context: SinkContext = OnlyTheContext(
        tmp_path,
        tmp_path / "replies.duckdb",
        SecretStr("postgresql://127.0.0.1/test"),
        ("START",),
    )
    for name in ("duckdb", "parquet", "postgres", "clickhouse"):
        assert load_sink(name).from_settings(context).name == name
