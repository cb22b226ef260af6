"""Retention and erasure on the real PostgreSQL at 127.0.0.1:5432, rows written by PostgresSink."""

from __future__ import annotations

import asyncio
import dataclasses
import uuid
from collections.abc import AsyncIterator
from datetime import datetime
from pathlib import Path

import asyncpg
import pytest
from click.testing import CliRunner

from sms_replies.analytics.privacy_cli import (
    Stores,
    apply_retention,
    erase_command,
    erase_sender,
    retention_command,
)
from sms_replies.privacy import pseudonymize, pseudonymize_reply
from sms_replies.sinks.postgres import PostgresSink, PostgresSinkSettings
from tests.analytics_sample import SAMPLE_REPLIES, write_sample_async

pytestmark = pytest.mark.integration

DSN = "postgresql://postgres@127.0.0.1:5432/test"
KEY = b"integration-key"


@pytest.fixture
async def schema() -> AsyncIterator[str]:
    """The sample replies, plus r20 (a reply of +33600000002 pseudonymised), in a fresh schema."""
    name = f"privacy_test_{uuid.uuid4().hex[:12]}"
    sink = PostgresSink(DSN, schema=name)
    try:
        await sink.setup()
        later = dataclasses.replace(
            SAMPLE_REPLIES[6], reply_id="r20", provider_message_ids=("r20-p1",)
        )
        await sink.write([*SAMPLE_REPLIES, pseudonymize_reply(later, KEY)])
        yield name
    finally:
        await sink.close()
        con = await asyncpg.connect(DSN)
        try:
            await con.execute(f'DROP SCHEMA IF EXISTS "{name}" CASCADE')
        finally:
            await con.close()


async def rows(schema: str) -> list[tuple[str, str]]:
    con = await asyncpg.connect(DSN)
    try:
        records = await con.fetch(f'SELECT reply_id, sender FROM "{schema}".replies ORDER BY 1')
        return [(r["reply_id"], r["sender"]) for r in records]
    finally:
        await con.close()


def test_sink_settings_name_the_same_variables() -> None:
    """The commands read SMS_REPLIES_POSTGRES_DSN / _SCHEMA_NAME, as the sink does."""
    fields = PostgresSinkSettings.model_fields
    assert {"dsn", "schema_name"} <= set(fields)
    assert PostgresSinkSettings.model_config.get("env_prefix") == "SMS_REPLIES_POSTGRES_"


async def test_erase_with_key_deletes_both_forms(schema: str) -> None:
    stores = Stores(postgres_dsn=DSN, postgres_schema=schema)
    assert ("r20", pseudonymize("+33600000002", KEY)) in await rows(schema)
    counts = await erase_sender(stores, "+33600000002", key=KEY)
    assert counts == {"postgres": 3}  # r2, r7 in clear, r20 hashed
    left = await rows(schema)
    assert [r for r, _ in left] == ["r1", "r3", "r4", "r5", "r6", "r8", "r9"]
    assert await erase_sender(stores, "+33600000002", key=KEY) == {"postgres": 0}


async def test_erase_without_key_leaves_the_pseudonymised_row(schema: str) -> None:
    counts = await erase_sender(Stores(postgres_dsn=DSN, postgres_schema=schema), "+33600000002")
    assert counts == {"postgres": 2}
    assert "r20" in [r for r, _ in await rows(schema)]


async def test_retention(schema: str) -> None:
    stores = Stores(postgres_dsn=DSN, postgres_schema=schema)
    now = datetime.fromisoformat("2025-03-31T09:15Z")
    # Cutoff 2025-03-30 09:15 UTC: r1..r6 and r9 go; r7 (09:30), r20 (a copy of r7), r8 stay.
    assert await apply_retention(stores, 1, now=now, dry_run=True) == {"postgres": 7}
    assert len(await rows(schema)) == 10
    assert await apply_retention(stores, 1, now=now) == {"postgres": 7}
    assert [r for r, _ in await rows(schema)] == ["r20", "r7", "r8"]


async def test_missing_table_counts_zero() -> None:
    stores = Stores(postgres_dsn=DSN, postgres_schema=f"absent_{uuid.uuid4().hex[:8]}")
    assert await erase_sender(stores, "+33600000002") == {"postgres": 0}


async def test_unreachable_server_is_an_error(tmp_path: Path) -> None:
    result = await asyncio.to_thread(
        CliRunner().invoke,
        erase_command,
        ["--phone", "+33600000002", "--data-dir", str(tmp_path), "--timeout", "2"],
        env={"SMS_REPLIES_POSTGRES_DSN": "postgresql://postgres@127.0.0.1:1/test"},
    )
    assert result.exit_code == 1
    assert "postgres: cannot connect" in result.output


async def test_commands_report_each_store(schema: str, tmp_path: Path) -> None:
    await write_sample_async(tmp_path / "replies.duckdb")
    env = {
        "SMS_REPLIES_POSTGRES_DSN": DSN,
        "SMS_REPLIES_POSTGRES_SCHEMA_NAME": schema,
        "SMS_REPLIES_PSEUDONYMIZE_KEY": KEY.decode(),
        "SMS_REPLIES_SINKS": "duckdb,postgres",
    }
    erase = await asyncio.to_thread(
        CliRunner().invoke,
        erase_command,
        ["--phone", "0600000002", "--data-dir", str(tmp_path)],
        env=env,
    )
    assert erase.exit_code == 0, erase.output
    assert erase.output == (
        "erasure list: added (the worker and the sinks drop this number from now on)\n"
        "duckdb: deleted 2\npostgres: deleted 3\n"
        # r2 was a STOP: the number stays on the stop-list (docs/analytics.md, privacy).
        "duckdb: opt-out kept (the number stays on the stop-list; --forget-opt-out deletes it)\n"
        "postgres: opt-out kept (the number stays on the stop-list; --forget-opt-out deletes it)\n"
    )
    retention = await asyncio.to_thread(
        CliRunner().invoke,
        retention_command,
        ["--days", "30", "--data-dir", str(tmp_path)],
        env=env,
    )
    assert retention.exit_code == 0, retention.output
    # Everything left is from March 2025, more than 30 days ago: 9 - 2 and 10 - 3.
    assert retention.output == "duckdb: deleted 7\npostgres: deleted 7\n"
    assert await rows(schema) == []


async def relation_bytes(schema: str) -> bytes | None:
    """The bytes of the table's files (heap and TOAST) after a checkpoint; None if unreadable.

    The server's data directory is readable only when the tests run as root or
    as postgres: elsewhere the test falls back to the rows.
    """
    con = await asyncpg.connect(DSN)
    try:
        await con.execute("CHECKPOINT")  # shared buffers written to the files
        data_dir = Path(await con.fetchval("SHOW data_directory"))
        table = f'"{schema}".replies'
        paths = [await con.fetchval("SELECT pg_relation_filepath($1::regclass)", table)]
        toast = await con.fetchval(
            "SELECT reltoastrelid::regclass::text FROM pg_class WHERE oid = $1::regclass", table
        )
        if toast and toast != "-":
            paths.append(await con.fetchval("SELECT pg_relation_filepath($1::regclass)", toast))
    except asyncpg.InsufficientPrivilegeError:
        return None
    finally:
        await con.close()
    data = b""
    for relative in paths:
        for path in sorted((data_dir / relative).parent.glob(Path(relative).name + "*")):
            try:
                data += path.read_bytes()
            except PermissionError:
                return None
    return data


async def test_erase_leaves_no_byte_in_the_table_files(schema: str) -> None:
    """DELETE alone leaves the rows' bytes in the heap files; the erasure rewrites them."""
    kept = {r.text for r in SAMPLE_REPLIES if r.sender != "+33600000002"}
    erased = {
        r.text
        for r in SAMPLE_REPLIES
        if r.sender == "+33600000002" and not any(r.text in text for text in kept)
    }
    needles = [b"+33600000002", *(text.encode() for text in erased)]
    assert len(needles) > 1  # at least one text of its own
    before = await relation_bytes(schema)
    if before is None:
        pytest.skip("the server's data directory is not readable here")
    assert all(needle in before for needle in needles)
    stores = Stores(postgres_dsn=DSN, postgres_schema=schema)
    counts = await erase_sender(stores, "+33600000002", key=KEY)  # r20 is its pseudonymised copy
    assert counts == {"postgres": 3}
    after = await relation_bytes(schema)
    assert after is not None
    assert [n for n in needles if n in after] == []
    assert b"+33600000001" in after  # what was kept is still there to be found


async def test_cnil_policy_deletes_numbers_silent_for_three_years(schema: str) -> None:
    """Every reply of a number whose last reply is more than 3 years old; the others stay."""
    from sms_replies.analytics.privacy_cli import apply_policy

    stores = Stores(postgres_dsn=DSN, postgres_schema=schema)
    # Samples are from 2025-03-29..31. Three years after, only the numbers whose
    # last reply came before 2025-03-30 10:00 UTC are gone, all their replies.
    now = datetime.fromisoformat("2028-03-30T10:00Z")
    con = await asyncpg.connect(DSN)
    try:
        last = await con.fetch(
            f'SELECT sender, max(received_at) AS at FROM "{schema}".replies GROUP BY sender'
        )
        cutoff = datetime.fromisoformat("2025-03-30T10:00Z")
        silent = {r["sender"] for r in last if r["at"] < cutoff}
        expected = await con.fetchval(
            f'SELECT count(*) FROM "{schema}".replies WHERE sender = ANY($1::text[])', list(silent)
        )
    finally:
        await con.close()
    assert silent
    assert len(silent) < len(last)  # some numbers are kept: a real cut
    assert await apply_policy(stores, "cnil", now=now) == {"postgres": expected}
    assert {s for _, s in await rows(schema)} == {r["sender"] for r in last} - silent


async def test_store_url_names_the_postgres_store(schema: str, tmp_path: Path) -> None:
    """--store postgresql://...?schema=NAME: no DSN variable needed; the DuckDB file is absent."""
    erase = await asyncio.to_thread(
        CliRunner().invoke,
        erase_command,
        [
            "--phone",
            "0600000002",
            "--data-dir",
            str(tmp_path),
            "--store",
            f"postgresql://postgres@127.0.0.1:5432/test?schema={schema}",
        ],
        env={"SMS_REPLIES_POSTGRES_DSN": None, "SMS_REPLIES_PSEUDONYMIZE_KEY": KEY.decode()},
    )
    assert erase.exit_code == 0, erase.output
    assert "postgres: deleted 3\n" in erase.output
    assert "+33600000002" not in {sender for _, sender in await rows(schema)}
