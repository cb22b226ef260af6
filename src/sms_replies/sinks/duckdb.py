"""DuckDB sink: the embedded default store (``<data_dir>/replies.duckdb``).

Batches are bulk-loaded from an Arrow table with ``INSERT ... ON CONFLICT DO
NOTHING`` in one transaction, together with the batch's opt-out decisions
(the ``optouts`` upsert): :func:`sms_replies.stores.duckdb.write_batch`.

DuckDB allows one writing process, and a reading process keeps the writer
out: so the sink keeps the one read-write connection for its whole life, and
other processes (``sms-replies stats``, the API, an analyst's
``open_reader``) run their statements through the sink's loopback endpoint
(:mod:`sms_replies.stores.duckdb_endpoint`), on cursors of that connection,
beside the writes. Opening, tables and writes are :mod:`sms_replies.stores.duckdb`;
this module is the sink's glue.
"""

from __future__ import annotations

import asyncio
import logging
import threading
import time
from collections.abc import Sequence
from datetime import UTC, datetime
from pathlib import Path
from typing import Self

import duckdb
import pyarrow as pa

from sms_replies import optout
from sms_replies.errors import SinkWriteError
from sms_replies.records import Reply
from sms_replies.schema import unique_by_id
from sms_replies.sinks.base import Sink, SinkContext
from sms_replies.stores import duckdb as store
from sms_replies.stores.ddl import REPLIES, duckdb_create
from sms_replies.stores.duckdb import ARROW_SCHEMA
from sms_replies.stores.duckdb_endpoint import StoreEndpoint
from sms_replies.stores.errors import StoreError

log = logging.getLogger(__name__)

__all__ = ["ARROW_SCHEMA", "DuckDBSink", "connect", "ddl"]


def ddl() -> str:
    """The replies table's DDL (kept for code written before :mod:`sms_replies.stores`)."""
    return duckdb_create(REPLIES)


def connect(path: Path, *, read_only: bool = False) -> duckdb.DuckDBPyConnection:
    """Open the store; a lock held by a writer is a retriable SinkWriteError."""
    try:
        return store.connect(path, read_only=read_only)
    except StoreError as exc:
        raise SinkWriteError(str(exc), retriable=True) from None


class DuckDBSink(Sink):
    """Owns the store: one read-write connection from ``setup`` to ``close``.

    Other processes (API, CLI, analysts' Python) go through its
    :class:`~sms_replies.stores.duckdb_endpoint.StoreEndpoint`: no reader can
    hold the file and starve the writes.
    """

    name = "duckdb"

    def __init__(
        self,
        path: Path,
        *,
        serve: bool = True,
        resubscribe_keywords: frozenset[str] | None = None,
    ) -> None:
        self.path = path
        self.resubscribe = (
            frozenset(optout.DEFAULT_RESUBSCRIBE_KEYWORDS)
            if resubscribe_keywords is None
            else resubscribe_keywords
        )
        self._con: duckdb.DuckDBPyConnection | None = None
        self._lent_until = 0.0  # monotonic time until which the store is lent out
        self._guard = threading.Lock()  # a write and a lend never overlap
        self._endpoint = None
        if serve:
            self._endpoint = StoreEndpoint(
                path, self._serving_connection, self._lend, self._is_lent
            )

    @classmethod
    def from_settings(cls, settings: SinkContext) -> Self:
        return cls(
            settings.duckdb_path,
            resubscribe_keywords=optout.resubscribe_keywords(settings.resubscribe_keywords),
        )

    async def setup(self) -> None:
        if self._endpoint is not None:
            self._endpoint.announce_opening()
        try:
            await asyncio.to_thread(self._connection)
            if self._endpoint is not None:
                await self._endpoint.start()
        except OSError as exc:
            raise SinkWriteError(f"duckdb store endpoint: {exc}", retriable=True) from None

    def _connection(self) -> duckdb.DuckDBPyConnection:
        """The connection, opened (and the tables created or migrated) on first use."""
        if self._con is not None:
            return self._con
        if time.monotonic() < self._lent_until:
            raise SinkWriteError("the store is lent to another process", retriable=True)
        self.path.parent.mkdir(parents=True, exist_ok=True)
        con = connect(self.path)
        try:
            store.ensure_tables(con)
        except StoreError as exc:
            con.close()
            raise SinkWriteError(f"duckdb setup failed: {exc}", retriable=True) from None
        self._con = con
        log.info("duckdb sink ready at %s", self.path)
        return con

    async def write(self, batch: Sequence[Reply]) -> None:
        replies = unique_by_id(batch)
        try:
            table = store.replies_table(replies, datetime.now(UTC))
            decisions = store.decisions_table(optout.batch_decisions(replies, self.resubscribe))
        except StoreError as exc:
            raise SinkWriteError(str(exc), retriable=False) from None
        await asyncio.to_thread(self._write, table, decisions)

    def _write(self, batch: pa.Table, decisions: pa.Table) -> None:
        with self._guard:
            try:
                store.write_batch(self._connection(), batch, decisions)
            except StoreError as exc:
                if exc.retriable:
                    # The next attempt starts from a fresh connection (an invalidated
                    # database after an I/O error stays unusable).
                    self._reset()
                raise SinkWriteError(str(exc), retriable=exc.retriable) from None

    def _serving_connection(self) -> duckdb.DuckDBPyConnection | None:
        """For the endpoint: the connection, reopened after a lend or an error; None if not."""
        con = self._con
        if con is not None:
            return con
        try:
            with self._guard:
                return self._connection()
        except SinkWriteError:
            return None

    def _lend(self, seconds: float) -> None:
        """Close the store and keep off it for ``seconds``; 0: take it back now."""
        with self._guard:
            if seconds <= 0:
                self._lent_until = 0.0
                return
            self._lent_until = time.monotonic() + seconds
            self._reset()

    def _is_lent(self) -> bool:
        return time.monotonic() < self._lent_until

    def _reset(self) -> None:
        con, self._con = self._con, None
        if con is not None:
            con.close()

    async def close(self) -> None:
        if self._endpoint is not None:
            await self._endpoint.stop()
        await asyncio.to_thread(self._reset)
