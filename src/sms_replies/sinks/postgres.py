"""PostgreSQL sink (asyncpg).

Table ``<schema>.replies`` with ``reply_id`` as primary key; ``setup`` creates
it and adds the columns that :data:`~sms_replies.schema.COLUMNS` gained since
(nullable: the rows already stored have no value for them).

Each batch is one transaction: ``COPY`` into a temporary staging table (COPY is
50-80x faster than ``executemany`` for large batches), then
``INSERT INTO replies SELECT ... ON CONFLICT (reply_id) DO NOTHING``, so that a
replayed batch, or a reply stored by another writer, leaves the first row as it
was.

Settings (``SMS_REPLIES_POSTGRES_*``): ``DSN`` (falls back to the process
setting of the same name), ``SCHEMA_NAME`` (default ``public``),
``POOL_MAX_SIZE``, ``TIMEOUT`` (seconds for connecting and for each command).
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Sequence
from datetime import UTC, datetime
from typing import Self

import asyncpg
from asyncpg.pool import PoolConnectionProxy
from pydantic import Field, SecretStr
from pydantic_settings import BaseSettings, SettingsConfigDict

from sms_replies.errors import ConfigError, SinkWriteError
from sms_replies.records import Reply
from sms_replies.schema import (
    COLUMN_NAMES,
    COLUMNS,
    ROW_ERRORS,
    TABLE,
    LogicalType,
    to_row,
    unique_by_id,
)
from sms_replies.sinks.base import Sink, SinkContext

log = logging.getLogger(__name__)

PG_TYPES: dict[LogicalType, str] = {
    "text": "text",
    "boolean": "boolean",
    "integer": "integer",
    "timestamp": "timestamptz",
    "text[]": "text[]",
}
_STAGING = "replies_staging"
APPLICATION_NAME = "sms-replies-postgres-sink"
# SQLSTATE classes of errors about the data itself: retrying cannot help.
_DATA_ERROR_CLASSES = ("22", "23")
# Serialises concurrent setup() of several sink processes (CREATE IF NOT EXISTS races).
_SETUP_LOCK_KEY = 0x736D735F7265706C  # "sms_repl"


class PostgresSinkSettings(BaseSettings):
    model_config = SettingsConfigDict(env_prefix="SMS_REPLIES_POSTGRES_", extra="ignore")

    dsn: SecretStr | None = Field(None, description="libpq DSN, e.g. postgresql://u@h/db.")
    schema_name: str = Field("public", min_length=1, description="Schema of the table.")
    pool_max_size: int = Field(4, ge=1, description="Most connections in the pool.")
    timeout: float = Field(30.0, gt=0, description="Seconds to connect and per command.")


def quote_ident(name: str) -> str:
    return '"' + name.replace('"', '""') + '"'


def ddl(schema: str) -> str:
    columns = ",\n  ".join(
        f"{c.name} {PG_TYPES[c.type]}"
        + (" PRIMARY KEY" if c.name == "reply_id" else "")
        + ("" if c.nullable else " NOT NULL")
        for c in COLUMNS
    )
    return f"CREATE TABLE IF NOT EXISTS {quote_ident(schema)}.{TABLE} (\n  {columns}\n)"


def insert_sql(schema: str) -> str:
    names = ", ".join(COLUMN_NAMES)
    return (
        f"INSERT INTO {quote_ident(schema)}.{TABLE} ({names}) "
        f"SELECT {names} FROM {_STAGING} ON CONFLICT (reply_id) DO NOTHING"
    )


def convert(exc: BaseException, action: str) -> SinkWriteError:
    """A driver error as SinkWriteError: data rejected (class 22/23) is final."""
    if isinstance(exc, asyncpg.PostgresError) and str(exc.sqlstate or "").startswith(
        _DATA_ERROR_CLASSES
    ):
        return SinkWriteError(f"postgres rejected the batch: {exc}", retriable=False)
    if isinstance(exc, asyncpg.DataError):  # client-side encoding of a value
        return SinkWriteError(f"postgres cannot encode the batch: {exc}", retriable=False)
    return SinkWriteError(f"postgres {action} failed: {type(exc).__name__}: {exc}", retriable=True)


# Outages and server-side errors; anything else is a bug and should propagate.
_DRIVER_ERRORS = (
    asyncpg.PostgresError,
    asyncpg.InterfaceError,
    # Raised by a connection the server terminated while the pool held it.
    asyncpg.InternalClientError,
    OSError,
    TimeoutError,
)
# Raised by asyncpg while encoding a value for its column (a wrong Python type).
_ENCODE_ERRORS = (TypeError, ValueError, OverflowError, UnicodeError)


class PostgresSink(Sink):
    name = "postgres"

    def __init__(
        self, dsn: str, *, schema: str = "public", pool_max_size: int = 4, timeout: float = 30.0
    ) -> None:
        self.dsn = dsn
        self.schema = schema
        self.pool_max_size = pool_max_size
        self.timeout = timeout
        self._pool: asyncpg.Pool | None = None

    @classmethod
    def from_settings(cls, settings: SinkContext) -> Self:
        own = PostgresSinkSettings()
        dsn = own.dsn or settings.postgres_dsn
        if dsn is None:
            raise ConfigError("the postgres sink needs SMS_REPLIES_POSTGRES_DSN")
        return cls(
            dsn.get_secret_value(),
            schema=own.schema_name,
            pool_max_size=own.pool_max_size,
            timeout=own.timeout,
        )

    @property
    def table(self) -> str:
        return f"{quote_ident(self.schema)}.{TABLE}"

    async def _get_pool(self) -> asyncpg.Pool:
        if self._pool is None:
            try:
                self._pool = await asyncpg.create_pool(
                    self.dsn,
                    min_size=1,
                    max_size=self.pool_max_size,
                    timeout=self.timeout,
                    command_timeout=self.timeout,
                    server_settings={"application_name": APPLICATION_NAME},
                )
            except _DRIVER_ERRORS as exc:
                raise convert(exc, "connect") from None
        return self._pool

    async def setup(self) -> None:
        pool = await self._get_pool()
        try:
            async with pool.acquire() as con, con.transaction():
                await con.execute("SELECT pg_advisory_xact_lock($1)", _SETUP_LOCK_KEY)
                await con.execute(f"CREATE SCHEMA IF NOT EXISTS {quote_ident(self.schema)}")
                await con.execute(ddl(self.schema))
                await self._add_missing_columns(con)
        except _DRIVER_ERRORS as exc:
            raise convert(exc, "setup") from None
        log.info("postgres sink ready: table %s", self.table)

    async def _add_missing_columns(self, con: PoolConnectionProxy[asyncpg.Record]) -> None:
        rows = await con.fetch(
            "SELECT column_name FROM information_schema.columns "
            "WHERE table_schema = $1 AND table_name = $2",
            self.schema,
            TABLE,
        )
        present = {row["column_name"] for row in rows}
        for column in COLUMNS:
            if column.name not in present:
                log.warning("postgres sink: adding column %s to %s", column.name, self.table)
                await con.execute(
                    f"ALTER TABLE {self.table} ADD COLUMN IF NOT EXISTS "
                    f"{column.name} {PG_TYPES[column.type]}"
                )

    async def write(self, batch: Sequence[Reply]) -> None:
        ingested_at = datetime.now(UTC)
        try:
            records = [to_row(reply, ingested_at) for reply in unique_by_id(batch)]
        except ROW_ERRORS as exc:
            raise SinkWriteError(f"replies not writable: {exc}", retriable=False) from None
        pool = await self._get_pool()
        try:
            async with pool.acquire() as con, con.transaction():
                await con.execute(
                    f"CREATE TEMP TABLE {_STAGING} (LIKE {self.table}) ON COMMIT DROP"
                )
                await con.copy_records_to_table(
                    _STAGING, records=records, columns=COLUMN_NAMES, timeout=self.timeout
                )
                status = await con.execute(insert_sql(self.schema))
        except _DRIVER_ERRORS as exc:
            raise convert(exc, "write") from None
        except _ENCODE_ERRORS as exc:
            raise SinkWriteError(
                f"postgres cannot encode the batch: {type(exc).__name__}: {exc}", retriable=False
            ) from None
        log.debug("postgres sink: %s (%d in batch)", status, len(records))

    async def close(self) -> None:
        pool, self._pool = self._pool, None
        if pool is not None:
            try:
                await asyncio.wait_for(pool.close(), self.timeout)
            except _DRIVER_ERRORS as exc:  # closing a dead pool: nothing left to release
                log.warning("postgres sink: closing the pool failed: %s", exc)
                pool.terminate()
