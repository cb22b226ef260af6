"""Store URLs (--store, SMS_REPLIES_ANALYTICS_STORE): parsing, defaults, errors, no password."""

from __future__ import annotations

from pathlib import Path

import pytest
from click.testing import CliRunner

from sms_replies.analytics.cli import stats_command
from sms_replies.errors import ConfigError
from sms_replies.stores.url import StoreURL, parse_store_url

DEFAULT = Path("data/replies.duckdb")


def parse(text: str | None, **kwargs: str) -> StoreURL:
    return parse_store_url(text, default_duckdb=DEFAULT, **kwargs)


@pytest.mark.parametrize(
    ("text", "path"),
    [
        (None, DEFAULT),
        ("", DEFAULT),
        ("other/replies.duckdb", Path("other/replies.duckdb")),
        ("/srv/sms/replies.duckdb", Path("/srv/sms/replies.duckdb")),
        ("duckdb:///srv/sms/replies.duckdb", Path("/srv/sms/replies.duckdb")),
        ("duckdb:rel/x.duckdb", Path("rel/x.duckdb")),
        ("C:/x.duckdb", Path("C:/x.duckdb")),  # one letter is no scheme
    ],
)
def test_duckdb(text: str | None, path: Path) -> None:
    assert parse(text) == StoreURL("duckdb", path=path)


def test_postgresql_defaults_and_schema(monkeypatch: pytest.MonkeyPatch) -> None:
    url = parse("postgresql://bob@db.example/replies")
    assert (url.host, url.port, url.database, url.user, url.schema) == (
        "db.example",
        5432,
        "replies",
        "bob",
        "public",
    )
    monkeypatch.setenv("SMS_REPLIES_POSTGRES_SCHEMA_NAME", "sink_schema")
    assert parse("postgres://h:6543/db").schema == "sink_schema"  # the sink's setting
    assert parse("postgresql://h/db?schema=mine").schema == "mine"
    opts = parse("postgresql://h/db?schema=s&sslmode=require")
    assert opts.postgres_conninfo()["sslmode"] == "require"
    assert "schema" not in opts.postgres_conninfo()


def test_clickhouse_defaults() -> None:
    url = parse("clickhouse://ch.example/analytics")
    assert (url.backend, url.host, url.port, url.database) == (
        "clickhouse",
        "ch.example",
        9000,
        "analytics",
    )
    assert parse("clickhouse://h:9440/?secure=true").database == "default"
    assert parse("clickhouse://h:9440/db?secure=true").secure


@pytest.mark.parametrize(
    ("text", "needle"),
    [
        ("mysql://h/db", "unknown store scheme"),
        ("postgresql:///db", "without a host"),
        ("postgresql://h", "without a database"),
        ("postgresql://h/db?schema=", "?schema="),
        ("clickhouse://h/bad-name", "letters, digits"),
        ("clickhouse://h/db?compress=1", "unknown clickhouse"),
        ("clickhouse://h:notaport/db", "not a valid URL"),
        ("duckdb://", "without a path"),
    ],
)
def test_errors_name_the_setting(text: str, needle: str) -> None:
    with pytest.raises(ConfigError) as info:
        parse(text)
    assert "SMS_REPLIES_ANALYTICS_STORE / --store" in str(info.value)
    assert needle in str(info.value)


def test_password_is_never_shown() -> None:
    url = parse("postgresql://bob:p%40ss-secret@h:5433/db?schema=s")
    assert url.password is not None
    assert url.password.get_secret_value() == "p@ss-secret"
    assert url.postgres_conninfo()["password"] == "p@ss-secret"
    for shown in (repr(url), str(url), url.redacted()):
        assert "secret" not in shown
    assert str(url) == "postgresql://bob:***@h:5433/db?schema=s"
    ch = parse("clickhouse://u:pw-secret@h/db")
    assert "secret" not in repr(ch) + str(ch)


def test_cli_reports_a_bad_store_without_traceback(tmp_path: Path) -> None:
    result = CliRunner().invoke(stats_command, ["--store", "mysql://u:topsecret@h/db"])
    assert result.exit_code == 1
    assert "SMS_REPLIES_ANALYTICS_STORE / --store: unknown store scheme" in result.output
    assert "topsecret" not in result.output
