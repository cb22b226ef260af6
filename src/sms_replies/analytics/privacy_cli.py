"""Retention and erasure: ``sms-replies retention --days N`` and ``sms-replies erase --phone N``.

Both delete reply rows from every configured store and print a count per store:

- DuckDB: ``<data-dir>/replies.duckdb`` when the file exists (``--data-dir``,
  ``$SMS_REPLIES_DATA_DIR``). The sink holds the file for milliseconds per batch;
  the deletion waits for it (``--timeout``), then checkpoints so the file no
  longer holds the deleted rows' blocks in its write-ahead log.
- PostgreSQL: ``<schema>.replies`` when a DSN is configured
  (``$SMS_REPLIES_POSTGRES_DSN``, schema ``$SMS_REPLIES_POSTGRES_SCHEMA_NAME``,
  default ``public``: the PostgreSQL sink's settings).

ClickHouse and Parquet stores are *not* handled: when ``$SMS_REPLIES_SINKS``
names them, the commands say so (and exit 1 for ``erase``) so that nobody
believes an erasure complete when it is not.

``erase`` deletes the number in clear and, when ``$SMS_REPLIES_PSEUDONYMIZE_KEY``
is set, its pseudonym (:func:`sms_replies.privacy.pseudonymize`), since rows
written before the key was set keep the number in clear.

The lead attaches :data:`retention_command` and :data:`erase_command` to the
``sms-replies`` group. :func:`apply_retention` and :func:`erase_sender` are the
same operations as library calls.
"""

from __future__ import annotations

import asyncio
from collections.abc import Sequence
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any, Final

import click
import duckdb

from sms_replies.analytics.campaigns import normalise_number
from sms_replies.analytics.params import InvalidQueryError
from sms_replies.analytics.store import _connect_with_retry, _table_exists
from sms_replies.errors import SmsRepliesError
from sms_replies.privacy import sender_forms
from sms_replies.schema import TABLE

DB_FILE: Final = "replies.duckdb"
DEFAULT_TIMEOUT: Final = 30.0
# Stores these commands cannot reach; their data must be deleted by other means.
UNHANDLED_SINKS: Final = ("clickhouse", "parquet")


class PrivacyStoreError(SmsRepliesError):
    """A store could not be reached or refused the deletion (nothing is half-deleted)."""

    retriable = True


@dataclass(frozen=True, slots=True)
class Stores:
    """The stores to delete from; ``None`` leaves one out."""

    duckdb_path: Path | None = None
    postgres_dsn: str | None = None
    postgres_schema: str = "public"
    timeout: float = DEFAULT_TIMEOUT


@dataclass(frozen=True, slots=True)
class Selection:
    """The rows to delete: sent by one of ``senders``, or received before ``before``."""

    senders: tuple[str, ...] = ()
    before: datetime | None = None

    def __post_init__(self) -> None:
        if (self.before is None) == (not self.senders):
            raise ValueError("give either senders or before")
        if self.before is not None and self.before.tzinfo is None:
            raise ValueError("before must be timezone-aware")

    def duckdb_where(self) -> tuple[str, list[Any]]:
        if self.before is not None:
            return "received_at < ?", [self.before]
        return f"sender IN ({', '.join('?' for _ in self.senders)})", list(self.senders)

    def postgres_where(self) -> tuple[str, list[Any]]:
        if self.before is not None:
            return "received_at < $1", [self.before]
        return "sender = ANY($1::text[])", [list(self.senders)]


# -- one store each -------------------------------------------------------------------


def delete_duckdb(
    path: Path, selection: Selection, *, timeout: float = DEFAULT_TIMEOUT, dry_run: bool = False
) -> int | None:
    """Delete (or, with ``dry_run``, count) the selected rows; None when there is no store file."""
    if not path.exists():
        return None
    where, params = selection.duckdb_where()
    con = _connect_with_retry(path, read_only=False, timeout=timeout)
    try:
        if not _table_exists(con, TABLE):
            return 0
        if dry_run:
            row = con.execute(f"SELECT count(*) FROM {TABLE} WHERE {where}", params).fetchone()
        else:
            row = con.execute(f"DELETE FROM {TABLE} WHERE {where}", params).fetchone()
            con.execute("CHECKPOINT")
        return int(row[0]) if row else 0
    except duckdb.Error as exc:
        raise PrivacyStoreError(f"duckdb {path}: {exc}") from None
    finally:
        con.close()


async def delete_postgres(
    dsn: str,
    schema: str,
    selection: Selection,
    *,
    command_timeout: float = DEFAULT_TIMEOUT,
    dry_run: bool = False,
) -> int:
    """Delete (or count) the selected rows of ``<schema>.replies``; 0 when there is no table."""
    import asyncpg

    from sms_replies.sinks.postgres import quote_ident

    table = f"{quote_ident(schema)}.{TABLE}"
    where, params = selection.postgres_where()
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
        return int(status.rsplit(" ", 1)[-1])  # "DELETE <n>"
    except (asyncpg.PostgresError, asyncpg.InterfaceError, OSError, TimeoutError) as exc:
        raise PrivacyStoreError(f"postgres {table}: {type(exc).__name__}: {exc}") from None
    finally:
        await con.close()


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
    return counts


def retention_cutoff(days: int, now: datetime | None = None) -> datetime:
    if days < 1:
        raise ValueError("days must be at least 1")
    return (now or datetime.now(UTC)) - timedelta(days=days)


async def apply_retention(
    stores: Stores, days: int, *, now: datetime | None = None, dry_run: bool = False
) -> dict[str, int | None]:
    """Delete the replies received more than ``days`` days before ``now`` (default: now)."""
    selection = Selection(before=retention_cutoff(days, now))
    return await delete_everywhere(stores, selection, dry_run=dry_run)


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
            envvar="SMS_REPLIES_DATA_DIR",
            default=Path("data"),
            show_default=True,
            show_envvar=True,
            help="Directory holding replies.duckdb (skipped when the file is absent).",
        ),
        click.option(
            "--postgres-dsn",
            envvar="SMS_REPLIES_POSTGRES_DSN",
            show_envvar=True,
            help="PostgreSQL store to delete from too (unset: none).",
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
            envvar="SMS_REPLIES_SINKS",
            default="duckdb",
            show_default=True,
            show_envvar=True,
            help="Active sinks; named to warn about stores these commands cannot reach.",
        ),
        click.option(
            "--timeout",
            type=click.FloatRange(min=0, min_open=True),
            default=DEFAULT_TIMEOUT,
            show_default=True,
            help="Seconds to wait for each store (DuckDB lock, PostgreSQL connect/command).",
        ),
        click.option("--dry-run", is_flag=True, help="Count the rows, delete nothing."),
    ]
    for option in reversed(options):
        func = option(func)
    return func


def _stores(data_dir: Path, dsn: str | None, schema: str, timeout: float) -> Stores:
    return Stores(
        duckdb_path=data_dir / DB_FILE,
        postgres_dsn=dsn or None,
        postgres_schema=schema,
        timeout=timeout,
    )


def _unhandled(sinks: str) -> list[str]:
    return [s.strip() for s in sinks.split(",") if s.strip() in UNHANDLED_SINKS]


def _report(counts: dict[str, int | None], unhandled: Sequence[str], dry_run: bool) -> None:
    verb = "would delete" if dry_run else "deleted"
    for store, count in counts.items():
        if count is None:
            click.echo(f"{store}: no store file, nothing to delete")
        else:
            click.echo(f"{store}: {verb} {count}")
    for store in unhandled:
        click.echo(f"{store}: NOT HANDLED, delete these rows there by hand", err=True)


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
    required=True,
    help="Delete the replies received more than this many days ago.",
)
@_store_options
def retention_command(
    days: int,
    data_dir: Path,
    postgres_dsn: str | None,
    postgres_schema: str,
    sinks: str,
    timeout: float,
    dry_run: bool,
) -> None:
    """Delete replies older than --days from every configured store; print counts per store."""
    stores = _stores(data_dir, postgres_dsn, postgres_schema, timeout)
    counts = _run(apply_retention(stores, days, dry_run=dry_run))
    _report(counts, _unhandled(sinks), dry_run)


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
    data_dir: Path,
    postgres_dsn: str | None,
    postgres_schema: str,
    sinks: str,
    timeout: float,
    dry_run: bool,
) -> None:
    """Delete every reply from --phone in every configured store; print counts per store.

    Exits 1 when an active sink's store (ClickHouse, Parquet) cannot be reached by
    this command: the erasure is then incomplete.
    """
    try:
        number = normalise_number(phone, param="phone")
    except InvalidQueryError as exc:
        raise click.BadParameter(exc.message, param_hint="--phone") from None
    key = pseudonymize_key.encode("utf-8") if pseudonymize_key else None
    stores = _stores(data_dir, postgres_dsn, postgres_schema, timeout)
    counts = _run(erase_sender(stores, number, key=key, dry_run=dry_run))
    unhandled = _unhandled(sinks)
    _report(counts, unhandled, dry_run)
    if unhandled:
        raise click.exceptions.Exit(1)
