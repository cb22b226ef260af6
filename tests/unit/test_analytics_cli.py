"""The `stats` and `campaign` click commands, on the sample store."""

from __future__ import annotations

import csv
import io
import json
from pathlib import Path

import duckdb
import pytest
from click.testing import CliRunner
from tests.analytics_sample import NUMBER_A, write_sample

from sms_replies.analytics.cli import campaign_group, stats_command

RANGE = ["--since", "2025-03-29", "--until", "2025-03-31"]


@pytest.fixture
def data_dir(tmp_path: Path) -> Path:
    write_sample(tmp_path / "replies.duckdb")
    return tmp_path


def run(command: object, args: list[str]) -> tuple[int, str]:
    result = CliRunner().invoke(command, args)  # type: ignore[arg-type]
    return result.exit_code, result.output


def test_stats_json(data_dir: Path) -> None:
    code, out = run(stats_command, ["--data-dir", str(data_dir), *RANGE, "--format", "json"])
    assert code == 0, out
    data = json.loads(out)
    assert data["start"] == "2025-03-29T00:00:00+01:00"
    assert data["end"] == "2025-03-31T00:00:00+02:00"
    assert data["totals"]["replies"] == 8
    assert data["totals"]["stops"] == 2
    assert data["totals"]["stop_share"] == 0.25
    assert data["totals"]["median_assembly_seconds"] == pytest.approx(8.0)  # r3 4.2 s, r4 11.8 s
    assert data["median_assembly_available"] is True
    assert [k["keyword"] for k in data["keywords"]] == ["OUI", "STOP", "INFO", "NON"]
    assert "timeseries" not in data


def test_stats_json_with_bucket(data_dir: Path) -> None:
    args = ["--data-dir", str(data_dir), *RANGE, "--bucket", "day", "--format", "json"]
    code, out = run(stats_command, args)
    assert code == 0, out
    points = json.loads(out)["timeseries"]["series"][0]["points"]
    assert [(p["t"], p["replies"]) for p in points] == [
        ("2025-03-29T00:00:00+01:00", 1),
        ("2025-03-30T00:00:00+01:00", 7),
    ]


def test_stats_env_data_dir_and_utc(data_dir: Path) -> None:
    result = CliRunner(env={"SMS_REPLIES_DATA_DIR": str(data_dir)}).invoke(
        stats_command,
        ["--since", "2025-03-29", "--until", "2025-03-30", "--tz", "UTC", "--format", "json"],
    )
    assert result.exit_code == 0, result.output
    assert json.loads(result.output)["totals"]["replies"] == 2  # r1 r2 on the UTC 29th


@pytest.mark.parametrize(
    ("command", "args"),
    [
        (stats_command, RANGE),
        (campaign_group, ["list"]),
        (campaign_group, ["delete", "x"]),
    ],
)
def test_commands_read_the_one_settings_object(
    data_dir: Path, command: object, args: list[str]
) -> None:
    """The store timeout (and every other setting) comes from Settings, checked like run's."""
    env = {"SMS_REPLIES_DATA_DIR": str(data_dir), "SMS_REPLIES_STORE_READ_TIMEOUT": "-1"}
    result = CliRunner(env=env).invoke(command, args)  # type: ignore[arg-type]
    assert result.exit_code == 1, result.output
    assert "SMS_REPLIES_STORE_READ_TIMEOUT" in result.output


def test_stats_zone_from_the_environment(data_dir: Path) -> None:
    args = ["--data-dir", str(data_dir), "--since", "2025-03-29", "--until", "2025-03-30"]
    result = CliRunner(env={"SMS_REPLIES_ANALYTICS_TZ": "UTC"}).invoke(
        stats_command, [*args, "--format", "json"]
    )
    assert result.exit_code == 0, result.output
    data = json.loads(result.output)
    assert data["tz"] == "UTC"
    assert data["totals"]["replies"] == 2  # UTC day 29: r1 r2 (in Paris, r2 is on the 30th)


def test_stats_csv_grouped(data_dir: Path) -> None:
    args = ["--data-dir", str(data_dir), *RANGE, "--group-by", "channel", "--format", "csv"]
    code, out = run(stats_command, args)
    assert code == 0, out
    rows = list(csv.DictReader(io.StringIO(out)))
    assert [(r["group"], r["replies"], r["stops"]) for r in rows] == [
        ("(total)", "8", "2"),
        ("long_number", "6", "1"),
        ("short_number", "2", "1"),
    ]


def test_stats_table(data_dir: Path) -> None:
    code, out = run(stats_command, ["--data-dir", str(data_dir), *RANGE, "--group-by", "recipient"])
    assert code == 0, out
    assert "25.0%" in out  # STOP share
    assert "OUI" in out
    assert "(short number)" in out


def test_stats_on_missing_store_warns_and_fails(tmp_path: Path) -> None:
    """A new user outside the repository got zeros and exit 0: now a warning and exit 1."""
    missing = tmp_path / "none"
    result = CliRunner().invoke(stats_command, ["--data-dir", str(missing), "--format", "json"])
    assert result.exit_code == 1, result.output
    assert "Warning: the store" in result.stderr
    assert "does not exist" in result.stderr
    assert result.stdout == ""  # no zeros a script could take for figures
    assert not missing.exists()  # reading never creates the store


def test_stats_on_store_without_replies_table_fails(tmp_path: Path) -> None:
    path = tmp_path / "empty.duckdb"
    duckdb.connect(str(path)).close()
    result = CliRunner().invoke(stats_command, ["--store", f"duckdb://{path}"])
    assert result.exit_code == 1
    assert "holds no replies table" in result.stderr


def test_tables_are_not_cut_at_80_columns_in_a_pipe(data_dir: Path) -> None:
    """`stats | head` cut tables at 80 columns (rich's width when stdout is no terminal)."""
    args = ["--data-dir", str(data_dir), *RANGE, "--group-by", "campaign"]
    code, out = run(
        campaign_group,
        [
            "add",
            "--data-dir",
            str(data_dir),
            "spring-A",
            "--recipient",
            "0700000001",
            "--start",
            "2025-03-29",
            "--end",
            "2025-03-30T12:00",
            "--delivered",
            "100",
        ],
    )
    assert code == 0, out
    code, out = run(stats_command, args)
    assert code == 0, out
    assert "…" not in out
    header = next(line for line in out.splitlines() if "campaign" in line and "replies" in line)
    assert "opt-out rate" in header  # the whole header on one line
    assert len(header) > 80


@pytest.mark.parametrize(
    ("args", "needle"),
    [
        (["--since", "someday"], "--since"),
        (["--tz", "Mars/Olympus"], "--tz"),
        (["--since", "2025-03-02", "--until", "2025-03-01"], "--since"),
        (["--group-by", "sender"], "--group-by"),
    ],
)
def test_stats_bad_input(data_dir: Path, args: list[str], needle: str) -> None:
    code, out = run(stats_command, ["--data-dir", str(data_dir), *args])
    assert code == 2
    assert needle in out


def test_campaign_commands(data_dir: Path) -> None:
    d = ["--data-dir", str(data_dir)]
    add = [
        "add",
        *d,
        "spring-A",
        "--recipient",
        "0700000001",
        "--start",
        "2025-03-29",
        "--end",
        "2025-03-30T12:00",
        "--delivered",
        "100",
    ]
    code, out = run(campaign_group, add)
    assert code == 0, out
    assert NUMBER_A in out
    code, out = run(campaign_group, add)
    assert code == 1
    assert "already exists" in out
    code, out = run(campaign_group, ["list", *d, "--format", "json"])
    assert code == 0, out
    (item,) = json.loads(out)["campaigns"]
    assert item["campaign"]["start"] == "2025-03-29T00:00:00+01:00"
    assert item["campaign"]["end"] == "2025-03-30T12:00:00+02:00"
    assert (item["stats"]["replies"], item["reply_rate"], item["opt_out_rate"]) == (4, 0.02, 0.01)
    code, out = run(stats_command, [*d, *RANGE, "--campaign", "spring-A", "--format", "json"])
    assert code == 0, out
    assert json.loads(out)["totals"]["replies"] == 4
    code, out = run(campaign_group, ["list", *d])
    assert code == 0
    assert "spring-A" in out
    code, out = run(campaign_group, ["delete", *d, "spring-A"])
    assert code == 0, out
    code, out = run(campaign_group, ["delete", *d, "spring-A"])
    assert code == 1
    assert "unknown campaign" in out
    code, out = run(stats_command, [*d, *RANGE, "--campaign", "spring-A"])
    assert code == 1


def test_campaign_add_needs_a_number(data_dir: Path) -> None:
    code, out = run(
        campaign_group,
        ["add", "--data-dir", str(data_dir), "x", "--start", "2025-01-01", "--end", "2025-01-02"],
    )
    assert code == 2
    assert "--recipient" in out
