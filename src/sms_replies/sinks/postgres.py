"""PostgreSQL sink (asyncpg): the glue between the runner and :mod:`sms_replies.stores.postgres`.

Table ``<schema>.replies`` with ``reply_id`` as primary key, and
``<schema>.optouts`` (the opt-out list) and ``<schema>.campaigns``; ``setup``
creates them and adds the columns the lists of ``schema.py`` gained since
(nullable: the rows already stored have no value for them).

Each batch is one transaction (:func:`sms_replies.stores.postgres.write_batch`):
``COPY`` into a temporary staging table, then ``INSERT INTO replies SELECT ...
ON CONFLICT (reply_id) DO NOTHING``, so that a replayed batch, or a reply
stored by another writer, leaves the first row as it was; then the batch's
opt-out decisions, upserted so that the latest decision wins.

Settings (``SMS_REPLIES_POSTGRES_*``): ``DSN`` (falls back to the process
setting of the same name), ``SCHEMA_NAME`` (default ``public``),
``POOL_MAX_SIZE``, ``TIMEOUT`` (seconds for connecting and for each command).
"""

from __future__ import annotations

import logging
from collections.abc import Sequence
from datetime import UTC, datetime
from typing import Any, Self

import asyncpg
from pydantic import Field, SecretStr
from pydantic_settings import BaseSettings, SettingsConfigDict

from sms_replies import optout
from sms_replies.errors import ConfigError, SinkWriteError
from sms_replies.records import Reply
from sms_replies.schema import ROW_ERRORS, to_row, unique_by_id
from sms_replies.sinks.base import Sink, SinkContext
from sms_replies.stores import postgres as store
from sms_replies.stores.ddl import REPLIES, postgres_create, postgres_table, quote_ident
from sms_replies.stores.errors import StoreError

log = logging.getLogger(__name__)

__all__ = ["APPLICATION_NAME", "PostgresSink", "PostgresSinkSettings", "ddl", "quote_ident"]

APPLICATION_NAME = "sms-replies-postgres-sink"


class PostgresSinkSettings(BaseSettings):
    model_config = SettingsConfigDict(env_prefix="SMS_REPLIES_POSTGRES_", extra="ignore")

    dsn: SecretStr | None = Field(None, description="libpq DSN, e.g. postgresql://u@h/db.")
    schema_name: str = Field("public", min_length=1, description="Schema of the table.")
    pool_max_size: int = Field(4, ge=1, description="Most connections in the pool.")
    timeout: float = Field(30.0, gt=0, description="Seconds to connect and per command.")


def ddl(schema: str) -> str:
    """The replies table's DDL (kept for code written before :mod:`sms_replies.stores`)."""
    return postgres_create(REPLIES, schema)


def _sink_error(exc: StoreError) -> SinkWriteError:
    return SinkWriteError(str(exc), retriable=exc.retriable)


class PostgresSink(Sink):
    name = "postgres"

    def __init__(
        self,
        dsn: str,
        *,
        schema: str = "public",
        pool_max_size: int = 4,
        timeout: float = 30.0,
        resubscribe_keywords: frozenset[str] | None = None,
    ) -> None:
        self.dsn = dsn
        self.schema = schema
        self.pool_max_size = pool_max_size
        self.timeout = timeout
        self.resubscribe = (
            frozenset(optout.DEFAULT_RESUBSCRIBE_KEYWORDS)
            if resubscribe_keywords is None
            else resubscribe_keywords
        )
        self._pool: asyncpg.Pool[Any] | None = None

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
            resubscribe_keywords=optout.resubscribe_keywords(settings.resubscribe_keywords),
        )

    @property
    def table(self) -> str:
        return postgres_table(REPLIES, self.schema)

    async def _get_pool(self) -> asyncpg.Pool[Any]:
        if self._pool is None:
            try:
                self._pool = await store.create_pool(
                    self.dsn,
                    max_size=self.pool_max_size,
                    command_timeout=self.timeout,
                    application_name=APPLICATION_NAME,
                )
            except StoreError as exc:
                raise _sink_error(exc) from None
        return self._pool

    async def setup(self) -> None:
        try:
            await store.ensure_tables(await self._get_pool(), self.schema)
        except StoreError as exc:
            raise _sink_error(exc) from None
        log.info("postgres sink ready: table %s", self.table)

    async def write(self, batch: Sequence[Reply]) -> None:
        ingested_at = datetime.now(UTC)
        replies = unique_by_id(batch)
        try:
            records = [to_row(reply, ingested_at) for reply in replies]
        except ROW_ERRORS as exc:
            raise SinkWriteError(f"replies not writable: {exc}", retriable=False) from None
        decisions = optout.batch_decisions(replies, self.resubscribe)
        try:
            status = await store.write_batch(
                await self._get_pool(),
                self.schema,
                records,
                decisions,
                command_timeout=self.timeout,
            )
        except StoreError as exc:
            raise _sink_error(exc) from None
        log.debug("postgres sink: %s (%d in batch)", status, len(records))

    async def close(self) -> None:
        pool, self._pool = self._pool, None
        if pool is not None:
            await store.close_pool(pool, command_timeout=self.timeout)
