"""`sms-replies optouts list|check` on a DuckDB store written by the real DuckDBSink."""

from __future__ import annotations

import asyncio
import csv
import dataclasses
import io
import json
from pathlib import Path

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


def test_store_without_optouts_table_lists_nothing(tmp_path: Path) -> None:
    listed = json.loads(run(["list", "--data-dir", str(tmp_path), "--format", "json"]))
    assert listed["optouts"] == []
    assert listed["count"] == 0
