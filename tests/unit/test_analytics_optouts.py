"""`sms-replies optouts list|check` on a DuckDB store written by the real DuckDBSink."""

from __future__ import annotations

import asyncio
import csv
import dataclasses
import io
import json
from pathlib import Path

import duckdb
import pytest
from click.testing import CliRunner
from tests.analytics_sample import SAMPLE_REPLIES

from sms_replies.analytics.cli import optouts_group
from sms_replies.privacy import pseudonymize
from sms_replies.sinks.duckdb import DuckDBSink

KEY = "unit-test pseudonymisation key"


@pytest.fixture
def data_dir(tmp_path: Path) -> Path:
    # r2 (+33600000002, STOP text) then r7 (same sender, "oui": nothing); r5 short-number stop.
    start = dataclasses.replace(
        SAMPLE_REPLIES[6],
        reply_id="start",
        text="Start",
        keyword="START",
        received_at_ms=SAMPLE_REPLIES[6].received_at_ms + 1000,
        sender="+33600000004",
    )
    hashed = dataclasses.replace(
        SAMPLE_REPLIES[1], reply_id="hashed", sender=pseudonymize("+33611111111", KEY.encode())
    )

    async def write() -> None:
        async with DuckDBSink(tmp_path / "replies.duckdb", serve=False) as sink:
            await sink.write([*SAMPLE_REPLIES, start, hashed])

    asyncio.run(write())
    return tmp_path


def run(args: list[str], **env: str) -> str:
    result = CliRunner(env=env).invoke(optouts_group, args)
    assert result.exit_code == 0, result.output
    return result.stdout


def test_list_formats(data_dir: Path) -> None:
    d = ["--data-dir", str(data_dir)]
    listed = json.loads(run(["list", *d, "--format", "json"]))
    senders = [o["sender"] for o in listed["optouts"]]
    # +33600000004 sent START after its provider STOP: opted back in, not listed.
    assert set(senders) == {"+33600000002", pseudonymize("+33611111111", KEY.encode())}
    assert listed["count"] == 2
    everyone = json.loads(run(["list", *d, "--all", "--format", "json"]))
    assert {o["sender"]: o["status"] for o in everyone["optouts"]}["+33600000004"] == "opted_in"
    rows = list(csv.DictReader(io.StringIO(run(["list", *d, "--format", "csv"]))))
    assert [r["sender"] for r in rows] == senders
    assert "+33600000002" in run(["list", *d])
    assert json.loads(run(["list", *d, "--since", "2026-01-01", "--format", "json"]))["count"] == 0


def test_check_normalises_and_hashes(data_dir: Path) -> None:
    d = ["--data-dir", str(data_dir)]
    assert "OPTED OUT since 2025-03-30T00:10:00+01:00" in run(
        ["check", *d, "--phone", "06 00 00 00 02"]
    )
    assert "opted back in" in run(["check", *d, "--phone", "33600000004"])
    assert "not on the opt-out list" in run(["check", *d, "--phone", "0611111111"])
    hashed = json.loads(
        run(
            ["check", *d, "--phone", "0611111111", "--format", "json"],
            SMS_REPLIES_PSEUDONYMIZE_KEY=KEY,
        )
    )
    assert hashed["opted_out"] is True


def test_check_refuses_what_is_no_number(data_dir: Path) -> None:
    result = CliRunner().invoke(
        optouts_group, ["check", "--data-dir", str(data_dir), "--phone", "abc"]
    )
    assert result.exit_code == 2
    assert "--phone" in result.output


def refused(args: list[str]) -> str:
    """A command that cannot answer: exit status 1 and a warning on stderr, nothing on stdout."""
    result = CliRunner().invoke(optouts_group, args)
    assert result.exit_code == 1, result.output
    assert result.stdout == ""
    return result.stderr


@pytest.mark.parametrize("command", [["list"], ["check", "--phone", "0612345678"]])
def test_a_store_that_does_not_exist_is_no_empty_list(tmp_path: Path, command: list[str]) -> None:
    path = tmp_path / "elsewhere.duckdb"
    for fmt in ("table", "json", "csv"):
        warning = refused([*command, "--store", str(path), "--format", fmt])
        assert f"the store duckdb://{path} does not exist" in warning
    assert not path.exists()  # reading never creates it


@pytest.mark.parametrize("command", [["list"], ["check", "--phone", "0612345678"]])
def test_a_store_written_before_the_opt_out_list_cannot_tell(
    tmp_path: Path, command: list[str]
) -> None:
    """Replies but no optouts table: 'cannot tell', not 'nobody opted out'."""
    path = tmp_path / "replies.duckdb"

    async def write() -> None:  # a STOP stored, then the table a sink of today adds removed
        async with DuckDBSink(path, serve=False) as sink:
            await sink.write(SAMPLE_REPLIES)

    asyncio.run(write())
    con = duckdb.connect(str(path))
    try:
        con.execute("DROP TABLE optouts")
        assert con.execute("SELECT count(*) FROM replies WHERE is_stop").fetchone() != (0,)
    finally:
        con.close()
    warning = refused([*command, "--store", str(path)])
    assert f"the store duckdb://{path} keeps no opt-out list yet" in warning
    assert "cannot tell who opted out" in warning


def test_a_store_with_an_empty_list_answers(tmp_path: Path) -> None:
    """An optouts table with no row is a true answer: nobody opted out."""

    async def write() -> None:
        async with DuckDBSink(tmp_path / "replies.duckdb", serve=False) as sink:
            await sink.write([SAMPLE_REPLIES[0]])  # "oui": decides nothing

    asyncio.run(write())
    d = ["--data-dir", str(tmp_path)]
    listed = json.loads(run(["list", *d, "--format", "json"]))
    assert (listed["count"], listed["optouts"]) == (0, [])
    assert "not on the opt-out list" in run(["check", *d, "--phone", "0612345678"])


def test_check_documents_its_exit_statuses() -> None:
    text = CliRunner().invoke(optouts_group, ["check", "--help"]).output
    assert "Exit status:" in text
    for line in ("0  answered", "1  cannot tell", "2  invalid input"):
        assert line in text
