"""PostgreSQL (asyncpg): connecting, the tables of a schema, and the sink's writes.

Public API (every driver error leaves as a :class:`~sms_replies.stores.errors.StoreError`):

- :func:`connect` ``(dsn, *, command_timeout)`` and :func:`create_pool` ``(dsn, *,
  max_size, command_timeout, application_name)``: an outage (refused, timeout, a server gone) is a
  :class:`~sms_replies.stores.errors.StoreUnavailableError` (retriable).
- :func:`ensure_tables` ``(conn, schema)``: ``CREATE SCHEMA IF NOT EXISTS``, the
  ``replies``, ``campaigns`` and ``optouts`` tables, and the columns the lists
  gained since; serialised between processes by an advisory lock (concurrent
  ``CREATE ... IF NOT EXISTS`` race otherwise).
- :func:`write_batch` ``(conn, schema, rows, decisions, *, command_timeout)``: one
  transaction: ``COPY`` into a temporary staging table (50-80x faster than
  ``executemany`` for large batches), ``INSERT ... ON CONFLICT (reply_id) DO
  NOTHING`` (the first stored version wins), then the opt-out decisions
  upserted with ``ON CONFLICT (sender) DO UPDATE ... WHERE`` the new decision
  ranks higher (:mod:`sms_replies.optout`): any order, any replay, same table.
- :func:`close_pool` ``(pool, *, command_timeout)``: a dead pool is terminated.
- :func:`convert` ``(exc, action)``: a driver error as StoreError: SQLSTATE
  classes 22/23 and client-side encoding errors are
  :class:`~sms_replies.stores.errors.StoreDataError` (final), anything else retriable.
- :data:`DRIVER_ERRORS`: what to catch around asyncpg calls and pass to :func:`convert`.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import AsyncIterator, Sequence
from contextlib import asynccontextmanager
from typing import Any, TypeAlias

import asyncpg
from asyncpg.pool import PoolConnectionProxy

from sms_replies.optout import Decision
from sms_replies.schema import utc_from_ms
from sms_replies.stores.ddl import (
    OPTOUTS,
    REPLIES,
    TABLES,
    postgres_add_column,
    postgres_create,
    postgres_indexes,
    postgres_table,
    quote_ident,
)
from sms_replies.stores.errors import StoreDataError, StoreError, StoreUnavailableError

log = logging.getLogger(__name__)

Connection: TypeAlias = "asyncpg.Connection[Any] | PoolConnectionProxy[Any]"

# SQLSTATE classes of errors about the data itself: retrying cannot help.
_DATA_ERROR_CLASSES = ("22", "23")
# Serialises concurrent ensure_tables() of several processes (CREATE IF NOT EXISTS races).
SETUP_LOCK_KEY = 0x736D735F7265706C  # "sms_repl"
STAGING = "replies_staging"

#: Outages and server-side errors; anything else is a bug and should propagate.
DRIVER_ERRORS: tuple[type[BaseException], ...] = (
    asyncpg.PostgresError,
    asyncpg.InterfaceError,
    # Raised by a connection the server terminated while the pool held it.
    asyncpg.InternalClientError,
    OSError,
    TimeoutError,
)
#: Raised by asyncpg while encoding a value for its column (a wrong Python type).
ENCODE_ERRORS: tuple[type[BaseException], ...] = (
    TypeError,
    ValueError,
    OverflowError,
    UnicodeError,
)


def convert(exc: BaseException, action: str) -> StoreError:
    """A driver error as StoreError: data rejected (class 22/23) is final."""
    if isinstance(exc, asyncpg.PostgresError) and str(exc.sqlstate or "").startswith(
        _DATA_ERROR_CLASSES
    ):
        return StoreDataError(f"postgres rejected the batch: {exc}")
    if isinstance(exc, asyncpg.DataError):  # client-side encoding of a value
        return StoreDataError(f"postgres cannot encode the batch: {exc}")
    return StoreUnavailableError(f"postgres {action} failed: {type(exc).__name__}: {exc}")


async def connect(dsn: str, *, command_timeout: float) -> asyncpg.Connection[Any]:
    """One connection (``command_timeout``: to connect, and per command)."""
    try:
        con: asyncpg.Connection[Any] = await asyncpg.connect(
            dsn, timeout=command_timeout, command_timeout=command_timeout
        )
    except DRIVER_ERRORS as exc:
        raise convert(exc, "connect") from None
    return con


async def create_pool(
    dsn: str, *, max_size: int, command_timeout: float, application_name: str
) -> asyncpg.Pool[Any]:
    try:
        pool: asyncpg.Pool[Any] = await asyncpg.create_pool(
            dsn,
            min_size=1,
            max_size=max_size,
            timeout=command_timeout,
            command_timeout=command_timeout,
            server_settings={"application_name": application_name},
        )
    except DRIVER_ERRORS as exc:
        raise convert(exc, "connect") from None
    return pool


Target: TypeAlias = "Connection | asyncpg.Pool[Any]"


@asynccontextmanager
async def _connection(target: Target, action: str) -> AsyncIterator[Connection]:
    """``target`` itself, or a connection of the pool ``target`` (released after)."""
    if not isinstance(target, asyncpg.Pool):
        yield target
        return
    try:
        async with target.acquire() as conn:
            yield conn
    except DRIVER_ERRORS as exc:  # acquiring or releasing; the body converts its own
        raise convert(exc, action) from None


async def close_pool(pool: asyncpg.Pool[Any], *, command_timeout: float) -> None:
    """Close the pool; a dead one (the server gone) is terminated instead."""
    try:
        await asyncio.wait_for(pool.close(), command_timeout)
    except DRIVER_ERRORS as exc:  # closing a dead pool: nothing left to release
        log.warning("postgres: closing the pool failed: %s", exc)
        pool.terminate()


async def ensure_tables(target: Target, schema: str) -> None:
    """The schema, the tables and their missing columns, in one locked transaction.

    ``target``: a connection, or a pool to take one from.
    """
    async with _connection(target, "setup") as conn:
        await _ensure_tables(conn, schema)


async def _ensure_tables(conn: Connection, schema: str) -> None:
    try:
        async with conn.transaction():
            await conn.execute("SELECT pg_advisory_xact_lock($1)", SETUP_LOCK_KEY)
            await conn.execute(f"CREATE SCHEMA IF NOT EXISTS {quote_ident(schema)}")
            for table in TABLES:
                await conn.execute(postgres_create(table, schema))
                rows = await conn.fetch(
                    "SELECT column_name FROM information_schema.columns "
                    "WHERE table_schema = $1 AND table_name = $2",
                    schema,
                    table.name,
                )
                present = {row["column_name"] for row in rows}
                for column in table.columns:
                    if column.name not in present:
                        log.warning(
                            "postgres: adding column %s to %s",
                            column.name,
                            postgres_table(table, schema),
                        )
                        await conn.execute(postgres_add_column(table, schema, column))
                for index in postgres_indexes(table, schema):
                    await conn.execute(index)
    except DRIVER_ERRORS as exc:
        raise convert(exc, "setup") from None


def insert_sql(schema: str) -> str:
    names = ", ".join(REPLIES.column_names)
    return (
        f"INSERT INTO {postgres_table(REPLIES, schema)} ({names}) "
        f"SELECT {names} FROM {STAGING} ON CONFLICT ({REPLIES.key}) DO NOTHING"
    )


def upsert_optouts_sql(schema: str) -> str:
    """Upsert of decisions given as arrays $1..$5 (sender, status, since, reply_id, source)."""
    table = postgres_table(OPTOUTS, schema)
    new_out = "(CASE WHEN excluded.status = 'opted_out' THEN 1 ELSE 0 END)"
    old_out = "(CASE WHEN held.status = 'opted_out' THEN 1 ELSE 0 END)"
    later = (
        "excluded.since > held.since OR (excluded.since = held.since AND "
        f"({new_out} > {old_out} OR ({new_out} = {old_out} AND "
        'excluded.reply_id COLLATE "C" > held.reply_id COLLATE "C")))'
    )
    names = ", ".join(OPTOUTS.column_names)
    updates = ", ".join(f"{n} = excluded.{n}" for n in OPTOUTS.column_names if n != OPTOUTS.key)
    return (
        f"INSERT INTO {table} AS held ({names}) "
        "SELECT * FROM unnest($1::text[], $2::text[], $3::timestamptz[], $4::text[], $5::text[]) "
        f"ON CONFLICT ({OPTOUTS.key}) DO UPDATE SET {updates} WHERE {later}"
    )


def decision_arrays(decisions: Sequence[Decision]) -> tuple[list[Any], ...]:
    return (
        [d.sender for d in decisions],
        [d.status for d in decisions],
        [utc_from_ms(d.since_ms) for d in decisions],
        [d.reply_id for d in decisions],
        [d.source for d in decisions],
    )


async def write_batch(
    target: Target,
    schema: str,
    rows: Sequence[tuple[Any, ...]],
    decisions: Sequence[Decision],
    *,
    command_timeout: float,
) -> str:
    """Replies (rows in ``REPLIES`` column order) and decisions in one transaction.

    ``target``: a connection, or a pool to take one from. Returns the replies
    INSERT's status (``INSERT 0 <n>``).
    """
    async with _connection(target, "write") as conn:
        return await _write_batch(conn, schema, rows, decisions, command_timeout)


async def _write_batch(
    conn: Connection,
    schema: str,
    rows: Sequence[tuple[Any, ...]],
    decisions: Sequence[Decision],
    command_timeout: float,
) -> str:
    try:
        async with conn.transaction():
            await conn.execute(
                f"CREATE TEMP TABLE {STAGING} (LIKE {postgres_table(REPLIES, schema)}) "
                "ON COMMIT DROP"
            )
            await conn.copy_records_to_table(
                STAGING, records=rows, columns=REPLIES.column_names, timeout=command_timeout
            )
            status: str = await conn.execute(insert_sql(schema))
            if decisions:
                arrays = decision_arrays(decisions)
                await conn.execute(upsert_optouts_sql(schema), *arrays)
    except DRIVER_ERRORS as exc:
        raise convert(exc, "write") from None
    except ENCODE_ERRORS as exc:
        raise StoreDataError(
            f"postgres cannot encode the batch: {type(exc).__name__}: {exc}"
        ) from None
    return status
