"""Reading the store next to a writer in another process."""

from __future__ import annotations

import subprocess
import sys
import time
from collections.abc import Iterator
from contextlib import contextmanager
from datetime import datetime
from pathlib import Path

import duckdb
import pytest
from tests.analytics_sample import write_sample

from sms_replies.analytics.campaigns import Campaign, declare_campaign
from sms_replies.analytics.store import StoreBusyError, StoreError, open_reader

# Holds the file open for writing (as the sink does during a batch) for argv[2] seconds.
_HOLDER = """
import sys, time, duckdb
con = duckdb.connect(sys.argv[1])
print("locked", flush=True)
time.sleep(float(sys.argv[2]))
con.close()
"""


@contextmanager
def held(path: Path, seconds: float) -> Iterator[subprocess.Popen[str]]:
    proc = subprocess.Popen(
        [sys.executable, "-c", _HOLDER, str(path), str(seconds)],
        stdout=subprocess.PIPE,
        text=True,
    )
    try:
        assert proc.stdout is not None
        assert proc.stdout.readline().strip() == "locked"
        yield proc
    finally:
        proc.wait(timeout=30)
        assert proc.stdout is not None
        proc.stdout.close()


@pytest.fixture
def db(tmp_path: Path) -> Path:
    path = tmp_path / "replies.duckdb"
    write_sample(path)
    return path


def test_reader_waits_for_a_short_write_lock(db: Path) -> None:
    with held(db, 0.5):
        started = time.monotonic()
        with open_reader(db, timeout=10) as con:
            assert con.execute("SELECT count(*) FROM replies").fetchone() == (9,)
        assert time.monotonic() - started >= 0.2


def test_reader_gives_up_with_a_retriable_error(db: Path) -> None:
    with held(db, 2.0), pytest.raises(StoreBusyError) as info, open_reader(db, timeout=0.2):
        pass
    assert info.value.retriable is True
    assert "locked" in str(info.value)


def test_campaign_declaration_waits_for_the_lock(db: Path) -> None:
    campaign = Campaign.create(
        "c",
        short_number=True,
        start=datetime.fromisoformat("2025-01-01T00:00Z"),
        end=datetime.fromisoformat("2025-01-02T00:00Z"),
    )
    with held(db, 0.5):
        declare_campaign(db, campaign, timeout=10)
    with open_reader(db) as con:
        assert con.execute("SELECT name FROM campaigns").fetchall() == [("c",)]


def test_not_a_database(tmp_path: Path) -> None:
    path = tmp_path / "replies.duckdb"
    path.write_bytes(b"not a duckdb file" * 1000)
    with pytest.raises(StoreError) as info, open_reader(path):
        pass
    assert not isinstance(info.value, StoreBusyError)
    assert info.value.retriable is False


def test_store_without_tables_reads_empty(tmp_path: Path) -> None:
    path = tmp_path / "replies.duckdb"
    duckdb.connect(str(path)).close()
    with open_reader(path) as con:
        assert con.execute("SELECT count(*) FROM replies").fetchone() == (0,)
        assert con.execute("SELECT count(*) FROM campaigns").fetchone() == (0,)
