"""Pseudonymised senders, retention and erasure on a real DuckDB store (the sample set)."""

from __future__ import annotations

import asyncio
import dataclasses
import subprocess
import sys
from collections.abc import Iterator
from contextlib import contextmanager
from datetime import datetime
from pathlib import Path
from typing import Any

import duckdb
import pytest
from click.testing import CliRunner
from tests.analytics_sample import SAMPLE_REPLIES, write_sample

from sms_replies.analytics.privacy_cli import (
    Selection,
    Stores,
    apply_retention,
    erase_command,
    erase_sender,
    retention_command,
    retention_cutoff,
)
from sms_replies.privacy import (
    is_pseudonym,
    pseudonymize,
    pseudonymize_reply,
    sender_forms,
)
from sms_replies.records import Reply
from sms_replies.sinks.duckdb import DuckDBSink

KEY = b"test-key"
ADDED = "erasure list: added (the worker and the sinks drop this number from now on)\n"
KEPT = "{}: opt-out kept (the number stays on the stop-list; --forget-opt-out deletes it)\n"


def at(text: str) -> datetime:
    return datetime.fromisoformat(text)


# -- pure ---------------------------------------------------------------------------


def test_pseudonymize_is_hmac_sha256_hex() -> None:
    # RFC 4231, test case 2: HMAC-SHA256(key="Jefe", "what do ya want for nothing?").
    assert pseudonymize("what do ya want for nothing?", b"Jefe") == (
        "h:5bdcc146bf60754e6a042426089575c75a003f089d2739839dec58b964ec3843"
    )


def test_pseudonymize_is_stable_and_keyed() -> None:
    a = pseudonymize("+33600000001", KEY)
    assert a == pseudonymize("+33600000001", KEY)
    assert a != pseudonymize("+33600000002", KEY)
    assert a != pseudonymize("+33600000001", b"other-key")
    assert "33600000001" not in a
    assert is_pseudonym(a)
    assert not is_pseudonym("+33600000001")
    assert pseudonymize(a, KEY) == a  # a replayed record is not hashed twice


def test_pseudonymize_refuses_an_empty_key() -> None:
    with pytest.raises(ValueError, match="empty"):
        pseudonymize("+33600000001", b"")


def test_pseudonymize_reply_changes_only_the_sender() -> None:
    reply = SAMPLE_REPLIES[0]
    assert pseudonymize_reply(reply, None) is reply
    hashed = pseudonymize_reply(reply, KEY)
    assert hashed.sender == pseudonymize(reply.sender, KEY)
    assert dataclasses.replace(hashed, sender=reply.sender) == reply


def test_sender_forms() -> None:
    assert sender_forms("+33600000001", None) == ("+33600000001",)
    assert sender_forms("+33600000001", KEY) == (
        "+33600000001",
        pseudonymize("+33600000001", KEY),
    )


def test_selection_needs_exactly_one_criterion() -> None:
    with pytest.raises(ValueError, match="one of"):
        Selection()
    with pytest.raises(ValueError, match="one of"):
        Selection(senders=("+33600000001",), before=at("2025-01-01T00:00Z"))
    with pytest.raises(ValueError, match="aware"):
        Selection(before=datetime(2025, 1, 1))
    with pytest.raises(ValueError, match="at least 1"):
        retention_cutoff(0)


# -- DuckDB -------------------------------------------------------------------------


@pytest.fixture
def db(tmp_path: Path) -> Path:
    path = tmp_path / "replies.duckdb"
    write_sample(path)
    return path


@contextmanager
def held(path: Path, seconds: float) -> Iterator[None]:
    """Another process holds the file for writing, as the sink does during a batch."""
    holder = "import sys, time, duckdb\n" + (
        "con = duckdb.connect(sys.argv[1]); print('locked', flush=True); "
        "time.sleep(float(sys.argv[2])); con.close()"
    )
    proc = subprocess.Popen(
        [sys.executable, "-c", holder, str(path), str(seconds)], stdout=subprocess.PIPE, text=True
    )
    assert proc.stdout is not None
    try:
        assert proc.stdout.readline().strip() == "locked"
        yield
    finally:
        proc.wait(timeout=30)
        proc.stdout.close()


async def sink_write(path: Path, reply: Reply) -> None:
    async with DuckDBSink(path, serve=False) as sink:  # it keeps the file open until closed
        await sink.write([reply])


def ids(path: Path) -> list[str]:
    con = duckdb.connect(str(path), read_only=True)
    try:
        return [
            r[0] for r in con.execute("SELECT reply_id FROM replies ORDER BY reply_id").fetchall()
        ]
    finally:
        con.close()


def test_retention_deletes_older_rows(db: Path) -> None:
    # Cutoff 2025-03-30 09:15 UTC: r1..r6 (up to 09:00) and r9 (the 28th) go; r7 (09:30), r8 stay.
    counts = asyncio.run(
        apply_retention(Stores(duckdb_path=db), 1, now=at("2025-03-31T09:15Z"), dry_run=True)
    )
    assert counts == {"duckdb": 7}
    assert len(ids(db)) == 9  # dry run
    counts = asyncio.run(apply_retention(Stores(duckdb_path=db), 1, now=at("2025-03-31T09:15Z")))
    assert counts == {"duckdb": 7}
    assert ids(db) == ["r7", "r8"]
    again = asyncio.run(apply_retention(Stores(duckdb_path=db), 1, now=at("2025-03-31T09:15Z")))
    assert again == {"duckdb": 0}


def test_erase_deletes_clear_and_pseudonymised_rows(db: Path) -> None:
    # r2 and r7 are from +33600000002 in clear; r20 is from it pseudonymised (key set later).
    later = dataclasses.replace(SAMPLE_REPLIES[6], reply_id="r20", provider_message_ids=("x",))
    asyncio.run(sink_write(db, pseudonymize_reply(later, KEY)))
    without_key = asyncio.run(erase_sender(Stores(duckdb_path=db), "+33600000002", dry_run=True))
    assert without_key == {"duckdb": 2}  # without the key only the clear rows are found
    counts = asyncio.run(erase_sender(Stores(duckdb_path=db), "+33600000002", key=KEY))
    assert counts == {"duckdb": 3}
    assert ids(db) == ["r1", "r3", "r4", "r5", "r6", "r8", "r9"]


def test_missing_store_is_reported_not_created(tmp_path: Path) -> None:
    path = tmp_path / "replies.duckdb"
    counts = asyncio.run(erase_sender(Stores(duckdb_path=path), "+33600000002"))
    assert counts == {"duckdb": None}
    assert not path.exists()


# -- click --------------------------------------------------------------------------


def test_erase_command_normalises_the_number(db: Path) -> None:
    result = CliRunner().invoke(
        erase_command,
        ["--phone", "06 00 00 00 01", "--data-dir", str(db.parent)],
        env={"SMS_REPLIES_POSTGRES_DSN": None, "SMS_REPLIES_SINKS": None},
    )
    assert result.exit_code == 0, result.output
    assert result.output == ADDED + "duckdb: deleted 2\n"  # r1, r3
    assert "r1" not in ids(db)
    assert "r3" not in ids(db)


def test_erase_command_uses_the_key_from_the_environment(db: Path) -> None:
    hashed = pseudonymize_reply(
        dataclasses.replace(SAMPLE_REPLIES[4], reply_id="r21", provider_message_ids=("y",)), KEY
    )
    asyncio.run(sink_write(db, hashed))
    result = CliRunner().invoke(
        erase_command,
        ["--phone", "+33600000004", "--data-dir", str(db.parent)],
        env={"SMS_REPLIES_PSEUDONYMIZE_KEY": KEY.decode(), "SMS_REPLIES_POSTGRES_DSN": None},
    )
    assert result.exit_code == 0, result.output
    # r5 in clear, r21 hashed; r5 was a STOP: the number stays on the stop-list.
    assert result.output == ADDED + "duckdb: deleted 2\n" + KEPT.format("duckdb")


def test_erase_leaves_no_byte_of_the_number_or_its_texts(db: Path, tmp_path: Path) -> None:
    """DuckDB file and Parquet parts: not only the rows, their bytes (main left them)."""
    from sms_replies.sinks.parquet import ParquetSink

    parquet = tmp_path / "parquet"
    asyncio.run(_write_parquet(ParquetSink(parquet, compression="none"), SAMPLE_REPLIES))
    erased = [r for r in SAMPLE_REPLIES if r.sender == "+33600000001"]
    kept = [r for r in SAMPLE_REPLIES if r.sender != "+33600000001"]
    needles = [b"+33600000001", *(r.text.encode() for r in erased)]
    assert all(n in db.read_bytes() for n in needles[:1])
    assert any(n in p.read_bytes() for p in parquet.rglob("*.parquet") for n in needles)
    result = CliRunner().invoke(
        erase_command,
        ["--phone", "0600000001", "--data-dir", str(db.parent)],
        env={
            "SMS_REPLIES_SINKS": "duckdb,parquet",
            "SMS_REPLIES_PARQUET_DIRECTORY": str(parquet),
            "SMS_REPLIES_POSTGRES_DSN": None,
        },
    )
    assert result.exit_code == 0, result.output
    assert result.output == ADDED + "duckdb: deleted 2\nparquet: deleted 2\n"
    for path in [*db.parent.rglob("*"), *parquet.rglob("*")]:
        if path.is_file() and path.name not in ("erasures", "erasures.key"):
            data = path.read_bytes()
            assert [n for n in needles if n in data] == [], path
    assert sorted(ids(db)) == sorted(r.reply_id for r in kept)
    import pyarrow.parquet as pq

    left = [
        i for p in parquet.rglob("part-*.parquet") for i in pq.read_table(p)["reply_id"].to_pylist()
    ]
    assert sorted(left) == sorted(r.reply_id for r in kept)
    # The erasure list holds a keyed hash, never the number.
    listed = (db.parent / "erasures").read_text()
    assert "600000001" not in listed
    assert is_pseudonym(listed.strip())


async def _write_parquet(sink: Any, replies: Any) -> None:
    await sink.setup()
    await sink.write(replies)
    await sink.close()


@pytest.mark.parametrize(
    ("command", "args", "needle"),
    [
        (erase_command, ["--phone", "not a number"], "--phone"),
        (retention_command, ["--days", "0"], "--days"),
        (retention_command, [], "--days or --policy"),
        (retention_command, ["--days", "3", "--policy", "cnil"], "--days or --policy"),
        (retention_command, ["--policy", "gdpr"], "--policy"),
    ],
)
def test_bad_input(db: Path, command: object, args: list[str], needle: str) -> None:
    result = CliRunner().invoke(command, [*args, "--data-dir", str(db.parent)])  # type: ignore[arg-type]
    assert result.exit_code == 2
    assert needle in result.output
    assert len(ids(db)) == 9


def test_retention_command(db: Path) -> None:
    # Every sample reply is from March 2025, long before "now": all older than 30 days.
    result = CliRunner().invoke(
        retention_command,
        ["--days", "30", "--data-dir", str(db.parent), "--dry-run"],
        env={"SMS_REPLIES_POSTGRES_DSN": None},
    )
    assert result.exit_code == 0, result.output
    assert result.output == "duckdb: would delete 9\n"
    result = CliRunner().invoke(
        retention_command,
        ["--days", "30", "--data-dir", str(db.parent)],
        env={"SMS_REPLIES_POSTGRES_DSN": None},
    )
    assert result.exit_code == 0, result.output
    assert result.output == "duckdb: deleted 9\n"
    assert ids(db) == []


def test_waits_for_the_sink_lock_then_gives_up(db: Path) -> None:
    """The sink holds the file for a batch: a short hold is waited for, a long one is an error."""
    env = {"SMS_REPLIES_POSTGRES_DSN": None}
    args = ["--days", "1", "--data-dir", str(db.parent), "--dry-run"]
    with held(db, 0.5):
        result = CliRunner().invoke(retention_command, [*args, "--timeout", "10"], env=env)
    assert result.exit_code == 0, result.output
    assert result.output == "duckdb: would delete 9\n"
    with held(db, 3):
        result = CliRunner().invoke(retention_command, [*args, "--timeout", "0.3"], env=env)
    assert result.exit_code == 1, result.output
    assert "stayed locked" in result.output


# -- at the ingress edge: any format, the rejects audit ------------------------------


@pytest.mark.parametrize("given", ["+33600000001", "33600000001", "0600000001", "06 00 00 00 01"])
def test_pseudonymize_any_format_gives_the_e164_pseudonym(given: str) -> None:
    from sms_replies.privacy import e164, pseudonymize_any

    assert e164(given) == "+33600000001"
    assert pseudonymize_any(given, KEY) == pseudonymize("+33600000001", KEY)


def test_pseudonymize_part_replaces_the_sender_and_its_keys() -> None:
    from sms_replies.bounds import Bounds, check_part
    from sms_replies.privacy import pseudonymize_part
    from sms_replies.records import Concat, RawPart

    part = RawPart(
        channel="long_number",
        sender="+33600000001",
        recipient="+33700000001",
        text="hi",
        provider_message_id="m1",
        message_type="text",
        received_at_ms=1,
        concat=Concat(ref=7, total=2, part=1),
    )
    assert pseudonymize_part(part, None) is part
    hashed = pseudonymize_part(part, KEY)
    assert hashed.sender == pseudonymize("+33600000001", KEY)
    assert pseudonymize_part(hashed, KEY) == hashed
    for derived in (hashed.encode(), hashed.partition_key, (hashed.reassembly_key or "").encode()):
        assert b"600000001" not in derived
    check_part(hashed, Bounds())  # the worker takes the pseudonymised part


def test_scrub_params_and_bodies() -> None:
    import orjson

    from sms_replies.privacy import WITHHELD, scrub_body, scrub_pairs, scrub_params

    hashed = pseudonymize("+33600000001", KEY)
    query = {"msisdn": "33600000001", "to": "33700000001", "text": "x"}
    assert scrub_params(query, KEY) == {**query, "msisdn": hashed}
    assert scrub_params(query, None) == query
    assert scrub_pairs([("phone_number", "0600000001"), ("to", "1")], KEY) == [
        ("phone_number", hashed),
        ("to", "1"),
    ]
    form_type = "application/x-www-form-urlencoded"
    form = scrub_body(b"phone_number=06+00+00+00+01&text=STOP", form_type, KEY)
    assert form == f"phone_number={hashed.replace(':', '%3A')}&text=STOP".encode()
    body = orjson.dumps({"msisdn": 33600000001, "text": "x"})
    assert orjson.loads(scrub_body(body, "application/json", KEY) or b"") == {
        "msisdn": hashed,
        "text": "x",
    }
    for unreadable, content_type in (
        (b'{"msisdn": "3360', "application/json"),
        (b"--b\r\nmsisdn 33600000001", "multipart/form-data"),
        (b"msisdn=33600000001", "text/plain"),
        (b"msisdn=33600000001&text=r\xe9ponse", form_type),
    ):
        assert scrub_body(unreadable, content_type, KEY) == WITHHELD.encode()
    assert scrub_body(b"msisdn=33600000001", "text/plain", None) == b"msisdn=33600000001"
