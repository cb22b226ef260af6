"""Retention and erasure in one store each; the operations over all are :mod:`.manage`.

:func:`delete_duckdb`, :func:`delete_postgres`, :func:`delete_clickhouse`,
:func:`delete_parquet` delete (or count, ``dry_run``) the selected replies with
their bytes, and the ``optouts`` rows that go with them (see :mod:`.manage`);
:func:`duckdb_opted_out`, :func:`postgres_opted_out`, :func:`clickhouse_opted_out`
say whether a store keeps an ``opted_out`` row of some senders. Every failure is
a :class:`~sms_replies.stores.selection.PrivacyStoreError`.
"""

from __future__ import annotations

import os
import time
import uuid
from collections.abc import Callable, Iterable
from pathlib import Path
from types import ModuleType
from typing import TYPE_CHECKING, Any

import duckdb

from sms_replies.files import fsync_directory
from sms_replies.stores import duckdb as duckdb_store
from sms_replies.stores.ddl import OPTOUTS, REPLIES, clickhouse_table, postgres_table
from sms_replies.stores.duckdb_endpoint import borrowed
from sms_replies.stores.errors import StoreError
from sms_replies.stores.selection import DEFAULT_TIMEOUT, PrivacyStoreError, Selection

if TYPE_CHECKING:
    from sms_replies.stores.clickhouse import ClickHouseSettings


def _postgres_store() -> ModuleType:
    """:mod:`sms_replies.stores.postgres`, imported when a PostgreSQL store is used: its
    driver (asyncpg) is the optional ``postgres`` extra, absent from ``make run``'s install."""
    try:
        from sms_replies.stores import postgres
    except ImportError:
        raise PrivacyStoreError(
            "postgres: needs the asyncpg package: pip install 'sms-replies[postgres]' "
            "(or: pip install -e '.[postgres]')"
        ) from None
    return postgres


# -- DuckDB ---------------------------------------------------------------------------


def delete_duckdb(
    path: Path, selection: Selection, *, timeout: float = DEFAULT_TIMEOUT, dry_run: bool = False
) -> int | None:
    """Delete (or, with ``dry_run``, count) the selected replies; None when there is no file.

    The selection's optouts rows go in the same transaction (see module docstring).
    After a deletion the file is replaced by a copy of what is left: DuckDB
    keeps deleted rows in freed blocks of the file until they are reused.
    """
    if not path.exists():
        return None
    where, params = selection.duckdb_where()
    try:
        # The file itself is rewritten: a running DuckDB sink lends it meanwhile.
        with borrowed(path):
            con = duckdb_store.connect(path, timeout=timeout)
            try:
                return _delete_duckdb(con, path, selection, where, params, dry_run)
            finally:
                con.close()
    except (StoreError, duckdb.Error, OSError, ValueError) as exc:
        raise PrivacyStoreError(f"duckdb {path}: {exc}") from None


def _delete_duckdb(
    con: duckdb.DuckDBPyConnection,
    path: Path,
    selection: Selection,
    where: str,
    params: list[Any],
    dry_run: bool,
) -> int:
    if not duckdb_store.table_exists(con, REPLIES.name):
        return 0
    row = con.execute(f"SELECT count(*) FROM {REPLIES.name} WHERE {where}", params).fetchone()
    count = int(row[0]) if row else 0
    optouts = duckdb_store.table_exists(con, OPTOUTS.name)
    if dry_run or (count == 0 and not optouts):
        return count
    con.execute("BEGIN TRANSACTION")
    if optouts:  # first: an inactivity selection reads the replies about to go
        con.execute(f"DELETE FROM {OPTOUTS.name} WHERE {selection.optouts_where(where)}", params)
    con.execute(f"DELETE FROM {REPLIES.name} WHERE {where}", params)
    con.execute("COMMIT")
    con.execute("CHECKPOINT")
    _rewrite_duckdb(con, path)
    return count


def _rewrite_duckdb(con: duckdb.DuckDBPyConnection, path: Path) -> None:
    """Copy the open database into a fresh file and put it in its place.

    ``con`` holds the write lock throughout: the sink waits, then opens the new
    file. Its write-ahead log is empty (checkpointed), so closing it later
    writes nothing beside the new file.
    """
    fresh = path.with_name(f".{path.name}.{uuid.uuid4().hex}.tmp")
    row = con.execute("SELECT current_database()").fetchone()
    name = str(row[0]) if row else path.stem
    try:
        con.execute(f"ATTACH '{_sql_string(str(fresh))}' AS erasure_copy")
        con.execute(f'COPY FROM DATABASE "{name}" TO erasure_copy')
        con.execute("DETACH erasure_copy")
        with fresh.open("rb+") as copied:
            os.fsync(copied.fileno())
        os.replace(fresh, path)
        fsync_directory(path.parent)
    finally:
        fresh.unlink(missing_ok=True)
        fresh.with_name(fresh.name + ".wal").unlink(missing_ok=True)


def _sql_string(text: str) -> str:
    return text.replace("'", "''")


# -- PostgreSQL -----------------------------------------------------------------------


async def delete_postgres(
    dsn: str,
    schema: str,
    selection: Selection,
    *,
    command_timeout: float = DEFAULT_TIMEOUT,
    dry_run: bool = False,
) -> int:
    """Delete (or count) the selected rows of ``<schema>.replies``; 0 when there is no table.

    The selection's optouts rows go in the same transaction. After a deletion,
    ``VACUUM FULL`` rewrites the tables so that the deleted rows' bytes leave
    their files (a plain VACUUM only marks them reusable).
    """
    table = postgres_table(REPLIES, schema)
    optouts = postgres_table(OPTOUTS, schema)
    where, params = selection.postgres_where(table)
    postgres_store = _postgres_store()
    try:
        con = await postgres_store.connect(dsn, command_timeout=command_timeout)
    except StoreError as exc:
        raise PrivacyStoreError(f"postgres: cannot connect: {exc}") from None
    try:
        if await con.fetchval("SELECT to_regclass($1)", table) is None:
            return 0
        if dry_run:
            return int(await con.fetchval(f"SELECT count(*) FROM {table} WHERE {where}", *params))
        has_optouts = await con.fetchval("SELECT to_regclass($1)", optouts) is not None
        async with con.transaction():
            gone = "DELETE 0"
            if has_optouts:  # first: an inactivity selection reads the replies about to go
                gone = await con.execute(
                    f"DELETE FROM {optouts} WHERE {selection.optouts_where(where)}", *params
                )
            status = await con.execute(f"DELETE FROM {table} WHERE {where}", *params)
        count = int(status.rsplit(" ", 1)[-1])  # "DELETE <n>"
        if count:
            await con.execute(f"VACUUM FULL {table}")
        if int(gone.rsplit(" ", 1)[-1]):
            await con.execute(f"VACUUM FULL {optouts}")
        return count
    except postgres_store.DRIVER_ERRORS as exc:
        raise PrivacyStoreError(f"postgres {table}: {type(exc).__name__}: {exc}") from None
    finally:
        await con.close()


# -- ClickHouse -----------------------------------------------------------------------


def delete_clickhouse(
    selection: Selection,
    *,
    settings: ClickHouseSettings | None = None,
    timeout: float = DEFAULT_TIMEOUT,
    dry_run: bool = False,
) -> int:
    """Delete (or count) the selected rows with mutations, and wait until they are done."""
    from clickhouse_driver import Client

    from sms_replies.stores.clickhouse import OUTAGE_ERRORS, ClickHouseSettings

    c = settings or ClickHouseSettings()  # default: SMS_REPLIES_CLICKHOUSE_*
    table = clickhouse_table(REPLIES, c.database)
    client: Client = c.client("sms-replies-privacy")
    try:
        if not _clickhouse_has(client, c.database, REPLIES.name):
            return 0
        selection = _resolved(selection, lambda: _clickhouse_inactive(client, table, selection))
        if not selection.senders and selection.before is None:
            return 0
        params: dict[str, Any]
        if selection.before is not None:
            where, params = "received_at < %(before)s", {"before": selection.before}
        else:
            where, params = "sender IN %(senders)s", {"senders": tuple(selection.senders)}
        count = int(client.execute(f"SELECT count() FROM {table} WHERE {where}", params)[0][0])
        if dry_run:
            return count
        if _clickhouse_has(client, c.database, OPTOUTS.name):
            _clickhouse_delete_optouts(client, c.database, selection, where, params)
        if count:
            client.execute(f"ALTER TABLE {table} DELETE WHERE {where}", params)
        _wait_for_mutations(client, c.database, timeout)
        return count
    except OUTAGE_ERRORS as exc:
        message = str(exc).split("Stack trace", 1)[0].strip()
        raise PrivacyStoreError(f"clickhouse {table}: {type(exc).__name__}: {message}") from None
    finally:
        client.disconnect()


def _clickhouse_delete_optouts(
    client: Any, database: str, selection: Selection, where: str, params: dict[str, Any]
) -> None:
    """Every row (all versions) of the senders whose current decision goes.

    Deleting only the matching versions would leave an older one to win under FINAL
    (an erased ``opted_in`` would read ``opted_out`` again).
    """
    optouts = clickhouse_table(OPTOUTS, database)
    going = client.execute(
        f"SELECT sender FROM {optouts} FINAL WHERE {selection.optouts_where(where)}", params
    )
    if going:
        client.execute(
            f"ALTER TABLE {optouts} DELETE WHERE sender IN %(going)s",
            {"going": tuple(sender for (sender,) in going)},
        )


def _clickhouse_has(client: Any, database: str, name: str) -> bool:
    rows = client.execute(
        "SELECT count() FROM system.tables WHERE database = %(db)s AND name = %(t)s",
        {"db": database, "t": name},
    )
    return bool(rows[0][0])


def _wait_for_mutations(client: Any, database: str, timeout: float) -> None:
    deadline = time.monotonic() + timeout
    while client.execute(
        "SELECT count() FROM system.mutations "
        "WHERE database = %(db)s AND table IN (%(r)s, %(o)s) AND is_done = 0",
        {"db": database, "r": REPLIES.name, "o": OPTOUTS.name},
    )[0][0]:
        if time.monotonic() > deadline:
            raise PrivacyStoreError(f"clickhouse {database}: deletion not done after {timeout}s")
        time.sleep(0.2)


def _clickhouse_inactive(client: Any, table: str, selection: Selection) -> list[str]:
    rows = client.execute(
        f"SELECT sender FROM {table} FINAL GROUP BY sender HAVING max(received_at) < %(cutoff)s",
        {"cutoff": selection.inactive_before},
    )
    return [str(sender) for (sender,) in rows]


def _resolved(selection: Selection, inactive: Callable[[], Iterable[str]]) -> Selection:
    """``inactive_before`` turned into the list of those senders (stores without subqueries)."""
    if selection.inactive_before is None:
        return selection
    senders = tuple(inactive())
    return Selection(senders=senders) if senders else selection  # none: nothing to delete


# -- Parquet --------------------------------------------------------------------------


def delete_parquet(directory: Path, selection: Selection, *, dry_run: bool = False) -> int | None:
    """Rewrite (or remove) every part holding selected rows; None when there is no directory."""
    import pyarrow as pa
    import pyarrow.compute as pc
    import pyarrow.parquet as pq

    from sms_replies.stores.parquet import PART_GLOB, ParquetSettings

    if not directory.is_dir():
        return None
    parts = sorted(directory.glob(PART_GLOB))

    def inactive() -> list[str]:
        last: dict[str, Any] = {}
        for path in parts:
            table = pq.read_table(path, columns=["sender", "received_at"])
            grouped = table.group_by("sender").aggregate([("received_at", "max")])
            for sender, at in zip(
                grouped["sender"].to_pylist(), grouped["received_at_max"].to_pylist(), strict=True
            ):
                last[sender] = max(at, last.get(sender, at))
        return [sender for sender, at in last.items() if at < selection.inactive_before]

    selection = _resolved(selection, inactive)
    if not selection.senders and selection.before is None:
        return 0
    compression = ParquetSettings().compression
    count = 0
    for path in parts:
        table = pq.read_table(path)
        if selection.before is not None:
            cutoff = pa.scalar(selection.before, type=table.schema.field("received_at").type)
            selected = pc.less(table["received_at"], cutoff)
        else:
            selected = pc.is_in(table["sender"], value_set=pa.array(selection.senders))
        hits = pc.sum(selected).as_py() or 0
        if not hits:
            continue
        count += hits
        if dry_run:
            continue
        kept = table.filter(pc.invert(selected))
        if kept.num_rows == 0:
            path.unlink()
        else:
            temporary = path.with_name(f".{path.name}.{uuid.uuid4().hex}.tmp")
            with temporary.open("wb") as out:
                pq.write_table(kept, out, compression=compression)
                out.flush()
                os.fsync(out.fileno())
            os.replace(temporary, path)
        fsync_directory(path.parent)
    return count


# -- the opt-outs an erasure keeps ----------------------------------------------------


_OPTED_OUT = f"SELECT count(*) FROM {OPTOUTS.name} WHERE status = 'opted_out' AND sender IN "


def duckdb_opted_out(path: Path, senders: list[str], timeout: float) -> bool:
    try:
        with borrowed(path, 60.0):
            con = duckdb_store.connect(path, read_only=True, timeout=timeout)
            try:
                if not duckdb_store.table_exists(con, OPTOUTS.name):
                    return False
                marks = ", ".join("?" for _ in senders)
                row = con.execute(f"{_OPTED_OUT}({marks})", senders).fetchone()
            finally:
                con.close()
    except (StoreError, duckdb.Error, OSError, ValueError) as exc:
        raise PrivacyStoreError(f"duckdb {path}: {exc}") from None
    return bool(row and row[0])


async def postgres_opted_out(
    dsn: str, schema: str, senders: list[str], *, command_timeout: float
) -> bool:
    table = postgres_table(OPTOUTS, schema)
    postgres_store = _postgres_store()
    try:
        con = await postgres_store.connect(dsn, command_timeout=command_timeout)
    except StoreError as exc:
        raise PrivacyStoreError(f"postgres: cannot connect: {exc}") from None
    try:
        if await con.fetchval("SELECT to_regclass($1)", table) is None:
            return False
        return bool(
            await con.fetchval(
                f"SELECT count(*) FROM {table} WHERE status = 'opted_out' "
                "AND sender = ANY($1::text[])",
                senders,
            )
        )
    except postgres_store.DRIVER_ERRORS as exc:
        raise PrivacyStoreError(f"postgres {table}: {type(exc).__name__}: {exc}") from None
    finally:
        await con.close()


def clickhouse_opted_out(senders: list[str], settings: ClickHouseSettings | None = None) -> bool:
    from sms_replies.stores.clickhouse import OUTAGE_ERRORS, ClickHouseSettings

    c = settings or ClickHouseSettings()
    client = c.client("sms-replies-privacy")
    try:
        if not _clickhouse_has(client, c.database, OPTOUTS.name):
            return False
        rows = client.execute(
            f"SELECT count() FROM {clickhouse_table(OPTOUTS, c.database)} FINAL "
            "WHERE status = 'opted_out' AND sender IN %(senders)s",
            {"senders": tuple(senders)},
        )
        return bool(rows[0][0])
    except OUTAGE_ERRORS as exc:
        message = str(exc).split("Stack trace", 1)[0].strip()
        raise PrivacyStoreError(f"clickhouse optouts: {type(exc).__name__}: {message}") from None
    finally:
        client.disconnect()
