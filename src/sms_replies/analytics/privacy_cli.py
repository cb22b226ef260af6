"""Retention and erasure: ``sms-replies retention`` and ``sms-replies erase --phone N``.

Both delete reply rows from every configured store, **so that their bytes are
gone**, not only their rows, and print a count per store:

- DuckDB ``<data-dir>/replies.duckdb`` (when the file exists): DELETE, then the
  database is copied into a fresh file that replaces it (DuckDB keeps freed
  blocks, and CHECKPOINT does not clear them). The copy is made while the
  command holds the file's write lock, which the sink waits for (``--timeout``).
- PostgreSQL ``<schema>.replies`` (``$SMS_REPLIES_POSTGRES_DSN``): DELETE, then
  ``VACUUM FULL``, which rewrites the table into new files (a plain VACUUM only
  marks the space reusable).
- ClickHouse ``<database>.replies`` (when ``$SMS_REPLIES_SINKS`` names it, its
  ``SMS_REPLIES_CLICKHOUSE_*`` settings): ``ALTER TABLE … DELETE``, a mutation
  that rewrites the parts holding the rows; the command waits for it. The
  server removes the replaced parts after its ``old_parts_lifetime`` (8 min by
  default).
- Parquet ``<directory>/date=*/part-*.parquet`` (when the sinks name it,
  ``SMS_REPLIES_PARQUET_DIRECTORY``): each part holding selected rows is
  rewritten without them (atomically, under the same name) or removed.

``erase`` first adds the number's keyed hash to the erasure list
(:mod:`sms_replies.erasures`), which the worker and the sinks consult, so that
nothing that comes later (a part the provider re-sends, a reply still in the
replies topic) brings it back; then it deletes the number in clear and, with
``$SMS_REPLIES_PSEUDONYMIZE_KEY``, its pseudonym.

``retention`` deletes the replies received more than ``--days`` days ago, or
with ``--policy cnil`` every reply of the numbers whose last reply is more
than 3 years old (the CNIL's rule for prospects: 3 years after the last
contact).

The lead attaches :data:`retention_command` and :data:`erase_command` to the
``sms-replies`` group. :func:`apply_retention` and :func:`erase_sender` are the
same operations as library calls.
"""

from __future__ import annotations

import asyncio
import os
import uuid
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any, Final

import click
import duckdb

from sms_replies.analytics.campaigns import normalise_number
from sms_replies.analytics.cli import command_settings
from sms_replies.analytics.params import InvalidQueryError
from sms_replies.analytics.store import _connect_with_retry, _table_exists, borrowed_store
from sms_replies.erasures import add_erasure, unseen_by
from sms_replies.errors import SmsRepliesError
from sms_replies.files import fsync_directory
from sms_replies.privacy import sender_forms
from sms_replies.schema import TABLE
from sms_replies.settings import Settings

DEFAULT_TIMEOUT: Final = 30.0
#: The CNIL's rule: a prospect's data is kept 3 years after the last contact.
CNIL_YEARS: Final = 3
POLICIES: Final = ("cnil",)
#: Seconds ``erase`` waits for running sinks to read the erasure list before deleting.
SINKS_WAIT: Final = 5.0


class PrivacyStoreError(SmsRepliesError):
    """A store could not be reached or refused the deletion (nothing is half-deleted)."""

    retriable = True


@dataclass(frozen=True, slots=True)
class Stores:
    """The stores to delete from; ``None`` / False leaves one out."""

    duckdb_path: Path | None = None
    postgres_dsn: str | None = None
    postgres_schema: str = "public"
    clickhouse: bool = False  # settings from SMS_REPLIES_CLICKHOUSE_*
    parquet_dir: Path | None = None
    timeout: float = DEFAULT_TIMEOUT


@dataclass(frozen=True, slots=True)
class Selection:
    """The rows to delete: sent by one of ``senders``, received before ``before``, or
    sent by a number whose last reply came before ``inactive_before``."""

    senders: tuple[str, ...] = ()
    before: datetime | None = None
    inactive_before: datetime | None = None

    def __post_init__(self) -> None:
        given = [bool(self.senders), self.before is not None, self.inactive_before is not None]
        if sum(given) != 1:
            raise ValueError("give one of senders, before or inactive_before")
        for value in (self.before, self.inactive_before):
            if value is not None and value.tzinfo is None:
                raise ValueError("times must be timezone-aware")

    @property
    def cutoff(self) -> datetime | None:
        return self.before or self.inactive_before

    def _time_where(self, table: str, mark: str) -> tuple[str, list[Any]] | None:
        """The condition of a time-based selection, ``mark`` its parameter; None: by sender."""
        if self.before is not None:
            return f"received_at < {mark}", [self.before]
        if self.inactive_before is not None:
            return (
                f"sender IN (SELECT sender FROM {table} GROUP BY sender "
                f"HAVING max(received_at) < {mark})",
                [self.inactive_before],
            )
        return None

    def duckdb_where(self) -> tuple[str, list[Any]]:
        return self._time_where(TABLE, "?") or (
            f"sender IN ({', '.join('?' for _ in self.senders)})",
            list(self.senders),
        )

    def postgres_where(self, table: str) -> tuple[str, list[Any]]:
        return self._time_where(table, "$1") or ("sender = ANY($1::text[])", [list(self.senders)])


# -- one store each -------------------------------------------------------------------


def delete_duckdb(
    path: Path, selection: Selection, *, timeout: float = DEFAULT_TIMEOUT, dry_run: bool = False
) -> int | None:
    """Delete (or, with ``dry_run``, count) the selected rows; None when there is no store file.

    After a deletion the file is replaced by a copy of what is left: DuckDB
    keeps deleted rows in freed blocks of the file until they are reused.
    """
    if not path.exists():
        return None
    where, params = selection.duckdb_where()
    # The file itself is rewritten: a running DuckDB sink lends it meanwhile.
    with borrowed_store(path):
        con = _connect_with_retry(path, read_only=False, timeout=timeout)
        try:
            if not _table_exists(con, TABLE):
                return 0
            row = con.execute(f"SELECT count(*) FROM {TABLE} WHERE {where}", params).fetchone()
            count = int(row[0]) if row else 0
            if dry_run or count == 0:
                return count
            con.execute(f"DELETE FROM {TABLE} WHERE {where}", params)
            con.execute("CHECKPOINT")
            _rewrite_duckdb(con, path)
            return count
        except duckdb.Error as exc:
            raise PrivacyStoreError(f"duckdb {path}: {exc}") from None
        finally:
            con.close()


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


async def delete_postgres(
    dsn: str,
    schema: str,
    selection: Selection,
    *,
    command_timeout: float = DEFAULT_TIMEOUT,
    dry_run: bool = False,
) -> int:
    """Delete (or count) the selected rows of ``<schema>.replies``; 0 when there is no table.

    After a deletion, ``VACUUM FULL`` rewrites the table so that the deleted
    rows' bytes leave its files (a plain VACUUM only marks them reusable).
    """
    import asyncpg

    from sms_replies.sinks.postgres import quote_ident

    table = f"{quote_ident(schema)}.{TABLE}"
    where, params = selection.postgres_where(table)
    try:
        con = await asyncpg.connect(dsn, timeout=command_timeout, command_timeout=command_timeout)
    except (asyncpg.PostgresError, asyncpg.InterfaceError, OSError, TimeoutError) as exc:
        raise PrivacyStoreError(f"postgres: cannot connect: {type(exc).__name__}: {exc}") from None
    try:
        if await con.fetchval("SELECT to_regclass($1)", table) is None:
            return 0
        if dry_run:
            return int(await con.fetchval(f"SELECT count(*) FROM {table} WHERE {where}", *params))
        status = await con.execute(f"DELETE FROM {table} WHERE {where}", *params)
        count = int(status.rsplit(" ", 1)[-1])  # "DELETE <n>"
        if count:
            await con.execute(f"VACUUM FULL {table}")
        return count
    except (asyncpg.PostgresError, asyncpg.InterfaceError, OSError, TimeoutError) as exc:
        raise PrivacyStoreError(f"postgres {table}: {type(exc).__name__}: {exc}") from None
    finally:
        await con.close()


def delete_clickhouse(
    selection: Selection, *, timeout: float = DEFAULT_TIMEOUT, dry_run: bool = False
) -> int:
    """Delete (or count) the selected rows with a mutation, and wait until it is done."""
    import time

    from clickhouse_driver import errors

    from sms_replies.sinks.clickhouse import ClickHouseSinkSettings

    c = ClickHouseSinkSettings()
    table = f"`{c.database}`.{TABLE}"
    client = c.client("sms-replies-privacy")
    try:
        exists = client.execute(
            "SELECT count() FROM system.tables WHERE database = %(db)s AND name = %(t)s",
            {"db": c.database, "t": TABLE},
        )[0][0]
        if not exists:
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
        if dry_run or count == 0:
            return count
        client.execute(f"ALTER TABLE {table} DELETE WHERE {where}", params)
        deadline = time.monotonic() + timeout
        while client.execute(
            "SELECT count() FROM system.mutations "
            "WHERE database = %(db)s AND table = %(t)s AND is_done = 0",
            {"db": c.database, "t": TABLE},
        )[0][0]:
            if time.monotonic() > deadline:
                raise PrivacyStoreError(f"clickhouse {table}: deletion not done after {timeout}s")
            time.sleep(0.2)
        return count
    except (errors.Error, OSError, EOFError) as exc:
        message = str(exc).split("Stack trace", 1)[0].strip()
        raise PrivacyStoreError(f"clickhouse {table}: {type(exc).__name__}: {message}") from None
    finally:
        client.disconnect()


def _clickhouse_inactive(client: Any, table: str, selection: Selection) -> list[str]:
    rows = client.execute(
        f"SELECT sender FROM {table} FINAL GROUP BY sender HAVING max(received_at) < %(cutoff)s",
        {"cutoff": selection.inactive_before},
    )
    return [str(sender) for (sender,) in rows]


def _resolved(selection: Selection, inactive: Any) -> Selection:
    """``inactive_before`` turned into the list of those senders (stores without subqueries)."""
    if selection.inactive_before is None:
        return selection
    senders = tuple(inactive())
    return Selection(senders=senders) if senders else selection  # none: nothing to delete


def delete_parquet(directory: Path, selection: Selection, *, dry_run: bool = False) -> int | None:
    """Rewrite (or remove) every part holding selected rows; None when there is no directory."""
    import pyarrow as pa
    import pyarrow.compute as pc
    import pyarrow.parquet as pq

    from sms_replies.sinks.parquet import PART_GLOB, ParquetSinkSettings

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
    compression = ParquetSinkSettings().compression
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


# -- every configured store -----------------------------------------------------------


async def delete_everywhere(
    stores: Stores, selection: Selection, *, dry_run: bool = False
) -> dict[str, int | None]:
    """Counts per store name (``None``: that store has no file yet), for configured stores."""
    counts: dict[str, int | None] = {}
    if stores.duckdb_path is not None:
        counts["duckdb"] = await asyncio.to_thread(
            delete_duckdb, stores.duckdb_path, selection, timeout=stores.timeout, dry_run=dry_run
        )
    if stores.postgres_dsn is not None:
        counts["postgres"] = await delete_postgres(
            stores.postgres_dsn,
            stores.postgres_schema,
            selection,
            command_timeout=stores.timeout,
            dry_run=dry_run,
        )
    if stores.clickhouse:
        counts["clickhouse"] = await asyncio.to_thread(
            delete_clickhouse, selection, timeout=stores.timeout, dry_run=dry_run
        )
    if stores.parquet_dir is not None:
        counts["parquet"] = await asyncio.to_thread(
            delete_parquet, stores.parquet_dir, selection, dry_run=dry_run
        )
    return counts


def retention_cutoff(days: int, now: datetime | None = None) -> datetime:
    if days < 1:
        raise ValueError("days must be at least 1")
    return (now or datetime.now(UTC)) - timedelta(days=days)


def years_before(now: datetime, years: int) -> datetime:
    """The same date ``years`` earlier (29 February: the 28th)."""
    try:
        return now.replace(year=now.year - years)
    except ValueError:
        return now.replace(year=now.year - years, day=28)


async def apply_retention(
    stores: Stores, days: int, *, now: datetime | None = None, dry_run: bool = False
) -> dict[str, int | None]:
    """Delete the replies received more than ``days`` days before ``now`` (default: now)."""
    selection = Selection(before=retention_cutoff(days, now))
    return await delete_everywhere(stores, selection, dry_run=dry_run)


async def apply_policy(
    stores: Stores, policy: str, *, now: datetime | None = None, dry_run: bool = False
) -> dict[str, int | None]:
    """``cnil``: every reply of the numbers whose last reply is more than 3 years old."""
    if policy != "cnil":
        raise ValueError(f"unknown retention policy {policy!r}")
    cutoff = years_before(now or datetime.now(UTC), CNIL_YEARS)
    return await delete_everywhere(stores, Selection(inactive_before=cutoff), dry_run=dry_run)


async def erase_sender(
    stores: Stores, number: str, *, key: bytes | None = None, dry_run: bool = False
) -> dict[str, int | None]:
    """Delete every reply of ``number`` (E.164), in clear and pseudonymised under ``key``."""
    return await delete_everywhere(
        stores, Selection(senders=sender_forms(number, key)), dry_run=dry_run
    )


# -- click ----------------------------------------------------------------------------


def _store_options(func: Any) -> Any:
    options = [
        click.option(
            "--data-dir",
            type=click.Path(path_type=Path, file_okay=False),
            help="Directory holding replies.duckdb (skipped when the file is absent) "
            "and the erasure list [settings: env SMS_REPLIES_DATA_DIR, default ./data].",
        ),
        click.option(
            "--postgres-dsn",
            help="PostgreSQL store to delete from too "
            "[settings: env SMS_REPLIES_POSTGRES_DSN, unset: none].",
        ),
        click.option(
            "--postgres-schema",
            envvar="SMS_REPLIES_POSTGRES_SCHEMA_NAME",
            default="public",
            show_default=True,
            show_envvar=True,
            help="Schema of the PostgreSQL replies table.",
        ),
        click.option(
            "--sinks",
            help="Active sinks: clickhouse and parquet stores are reached when named "
            "(their SMS_REPLIES_CLICKHOUSE_* / SMS_REPLIES_PARQUET_DIRECTORY settings) "
            "[settings: env SMS_REPLIES_SINKS, default duckdb].",
        ),
        click.option(
            "--timeout",
            type=click.FloatRange(min=0, min_open=True),
            default=DEFAULT_TIMEOUT,
            show_default=True,
            help="Seconds to wait for each store (DuckDB lock, PostgreSQL connect/command, "
            "ClickHouse mutation).",
        ),
        click.option("--dry-run", is_flag=True, help="Count the rows, delete nothing."),
    ]
    for option in reversed(options):
        func = option(func)
    return func


def _stores(settings: Settings, schema: str, timeout: float) -> Stores:
    from sms_replies.sinks.parquet import ParquetSinkSettings

    names = set(settings.sinks)
    parquet_dir = None
    if "parquet" in names:
        parquet_dir = ParquetSinkSettings().directory or settings.data_dir / "parquet"
    dsn = settings.postgres_dsn
    return Stores(
        duckdb_path=settings.duckdb_path,
        postgres_dsn=(dsn.get_secret_value() or None) if dsn is not None else None,
        postgres_schema=schema,
        clickhouse="clickhouse" in names,
        parquet_dir=parquet_dir,
        timeout=timeout,
    )


def _wait_for_sinks(data_dir: Path, names: list[str], wait: float) -> None:
    """Until every sink has read the list between two writes, so that none lands after
    the deletion; a sink that is not running has no write under way (and will read
    the list before its first)."""
    import time

    deadline = time.monotonic() + wait
    while (late := unseen_by(data_dir, names)) and time.monotonic() < deadline:
        time.sleep(0.1)
    if late:
        click.echo(f"sinks {', '.join(late)}: not running, or busy for {wait:.0f}s", err=True)


def _report(counts: dict[str, int | None], dry_run: bool) -> None:
    verb = "would delete" if dry_run else "deleted"
    for store, count in counts.items():
        if count is None:
            click.echo(f"{store}: no store file, nothing to delete")
        else:
            click.echo(f"{store}: {verb} {count}")


def _run(coro: Any) -> dict[str, int | None]:
    try:
        result: dict[str, int | None] = asyncio.run(coro)
    except SmsRepliesError as exc:
        raise click.ClickException(str(exc)) from None
    return result


@click.command("retention")
@click.option(
    "--days",
    type=click.IntRange(min=1),
    help="Delete the replies received more than this many days ago.",
)
@click.option(
    "--policy",
    type=click.Choice(POLICIES),
    help="cnil: delete every reply of the numbers whose last reply is more than "
    "3 years old (the CNIL's rule: 3 years after the last contact).",
)
@_store_options
def retention_command(
    days: int | None,
    policy: str | None,
    data_dir: Path | None,
    postgres_dsn: str | None,
    postgres_schema: str,
    sinks: str | None,
    timeout: float,
    dry_run: bool,
) -> None:
    """Delete old replies (--days N or --policy cnil) from every configured store."""
    if (days is None) == (policy is None):
        raise click.UsageError("give either --days or --policy")
    settings = command_settings(data_dir=data_dir, postgres_dsn=postgres_dsn, sinks=sinks)
    stores = _stores(settings, postgres_schema, timeout)
    if policy is not None:
        counts = _run(apply_policy(stores, policy, dry_run=dry_run))
    else:
        assert days is not None
        counts = _run(apply_retention(stores, days, dry_run=dry_run))
    _report(counts, dry_run)


@click.command("erase")
@click.option("--phone", required=True, help="The number to erase (E.164 or national, e.g. 06...).")
@click.option(
    "--pseudonymize-key",
    envvar="SMS_REPLIES_PSEUDONYMIZE_KEY",
    show_envvar=True,
    help="Key of the pseudonymised senders (prefer the variable to the flag).",
)
@_store_options
def erase_command(
    phone: str,
    pseudonymize_key: str | None,
    data_dir: Path | None,
    postgres_dsn: str | None,
    postgres_schema: str,
    sinks: str | None,
    timeout: float,
    dry_run: bool,
) -> None:
    """Erase --phone: list it for the worker and the sinks, delete its replies everywhere.

    The number's keyed hash goes to the erasure list first (so that no reply of
    it is stored again), then every configured store deletes its replies and
    rewrites its files; counts per store are printed.
    """
    try:
        number = normalise_number(phone, param="phone")
    except InvalidQueryError as exc:
        raise click.BadParameter(exc.message, param_hint="--phone") from None
    settings = command_settings(data_dir=data_dir, postgres_dsn=postgres_dsn, sinks=sinks)
    key = pseudonymize_key.encode("utf-8") if pseudonymize_key else None
    if not dry_run:
        add_erasure(settings.data_dir, number, key)
        click.echo("erasure list: added (the worker and the sinks drop this number from now on)")
        _wait_for_sinks(settings.data_dir, settings.sinks, SINKS_WAIT)
    stores = _stores(settings, postgres_schema, timeout)
    counts = _run(erase_sender(stores, number, key=key, dry_run=dry_run))
    _report(counts, dry_run)
