"""Before starting anything, `run` refuses settings that cannot work, naming the setting."""

from __future__ import annotations

import socket
from pathlib import Path

import pytest
from click.testing import CliRunner

from sms_replies import cli
from sms_replies.broker.embedded import free_port
from sms_replies.errors import ConfigError
from sms_replies.preflight import check_config, check_ports, listeners
from sms_replies.settings import Settings


def settings_on_free_ports(tmp_path: Path, **extra: object) -> Settings:
    return Settings.load(
        http_port=free_port(),
        api_port=free_port(),
        sinks_web_port=free_port(),
        worker_web_port=free_port(),
        data_dir=tmp_path,
        **extra,
    )


def test_every_fixed_port_of_the_run_is_checked(tmp_path: Path) -> None:
    settings = Settings.load(
        http_port=9000, api_port=9001, sinks_web_port=0, worker_web_port=7000, worker_processes=2
    )
    assert sorted((x.port_setting, x.port) for x in listeners(settings)) == [
        ("api_port", 9001),
        ("http_port", 9000),
        ("worker_web_port", 7000),
        ("worker_web_port", 7001),
    ]


@pytest.mark.parametrize("taken", ["http_port", "api_port", "sinks_web_port", "worker_web_port"])
def test_a_port_in_use_is_named(tmp_path: Path, taken: str) -> None:
    settings = settings_on_free_ports(tmp_path)
    held = socket.create_server(("127.0.0.1", getattr(settings, taken)))
    with held, pytest.raises(ConfigError) as info:
        check_ports(settings)
    assert str(info.value).startswith(f"SMS_REPLIES_{taken.upper()}: 127.0.0.1:")
    assert "already in use" in str(info.value)
    check_ports(settings)  # free again


def test_an_address_not_of_this_machine_names_the_host_setting(tmp_path: Path) -> None:
    settings = settings_on_free_ports(tmp_path, api_host="192.0.2.1")  # TEST-NET-1
    with pytest.raises(ConfigError, match=r"^SMS_REPLIES_API_HOST: cannot listen on 192\.0\.2\.1"):
        check_ports(settings)
    broker = settings_on_free_ports(tmp_path, broker_host="192.0.2.1")
    with pytest.raises(ConfigError, match=r"^SMS_REPLIES_BROKER_HOST: cannot listen"):
        check_ports(broker)


def test_unknown_sinks_and_impossible_combinations_are_refused(tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match=r"^SMS_REPLIES_SINKS: unknown sink 'cvs' \(installed"):
        check_config(Settings.load(sinks="duckdb,cvs", data_dir=tmp_path))
    with pytest.raises(ConfigError, match=r"^SMS_REPLIES_SINKS: .*SMS_REPLIES_POSTGRES_DSN"):
        check_config(Settings.load(sinks="postgres", data_dir=tmp_path))
    with pytest.raises(ConfigError, match=r"^SMS_REPLIES_INGEST_WORKERS: "):
        check_config(Settings.load(ingest_workers=2, http_port=0, data_dir=tmp_path))
    (tmp_path / "file").write_text("")
    with pytest.raises(ConfigError, match=r"^SMS_REPLIES_DATA_DIR: cannot create"):
        check_config(Settings.load(data_dir=tmp_path / "file" / "data"))
    check_config(Settings.load(sinks="duckdb,parquet", data_dir=tmp_path))


def test_an_invalid_value_is_one_line_naming_the_variable(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("SMS_REPLIES_HTTP_PORT", "99999")
    monkeypatch.setattr("sms_replies.supervisor.run_pipeline", lambda *a, **k: None)
    result = CliRunner().invoke(cli.main, ["run"])
    assert result.exit_code == 1
    [line] = result.output.strip().splitlines()
    assert line.startswith("Error: SMS_REPLIES_HTTP_PORT: Input should be less than or equal")
