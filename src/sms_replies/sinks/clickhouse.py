"""ClickHouse sink (clickhouse-driver): glue over :mod:`sms_replies.stores.clickhouse`.

Table ``<database>.replies``: ``ReplacingMergeTree`` ordered by ``reply_id``,
partitioned by month of ``received_at``; ``<database>.optouts``: the opt-out
list, a ``ReplacingMergeTree`` whose version orders the decisions. Idempotence
by ``reply_id`` has three layers, because ReplacingMergeTree alone only
deduplicates eventually (at merges):

1. Each batch first asks which of its reply_ids are stored already (the ids go
   as an external table, so a batch of any size fits in one query) and inserts
   only the others: the first stored version wins, and a replayed batch adds
   nothing.
2. Where the server has ``insert_deduplication_token`` (22.2+), the insert
   carries one derived from its reply_ids and the table keeps a
   ``non_replicated_deduplication_window``: a retried insert whose first try
   did land is dropped by the server.
3. Two writers racing past step 1 can still store a reply twice until a merge;
   **readers use FINAL** (:func:`read_sql`), which collapses them.

Features are detected from the server's system tables, not its version number:
18.16 (Debian's package) lacks ``DateTime64`` (timestamps are then
``DateTime('UTC')``, whole seconds) and the deduplication token (step 2 is then
skipped). Booleans are ``UInt8`` everywhere (``Bool`` only exists since 21.12).

Settings (``SMS_REPLIES_CLICKHOUSE_*``): ``HOST``, ``PORT`` (native, 9000),
``DATABASE``, ``USER``, ``PASSWORD``, ``SECURE``, ``CONNECT_TIMEOUT``,
``SEND_RECEIVE_TIMEOUT``.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Sequence
from typing import Self

from clickhouse_driver import Client

from sms_replies import optout
from sms_replies.errors import SinkWriteError
from sms_replies.records import Reply
from sms_replies.schema import Column, unique_by_id
from sms_replies.sinks.base import Sink, SinkContext
from sms_replies.stores import clickhouse as store
from sms_replies.stores.clickhouse import (
    ClickHouseSettings,
    deduplication_token,
    insert_settings,
    read_sql,
)
from sms_replies.stores.ddl import (
    DEDUPLICATION_WINDOW,
    FEATURES_SQL,
    REPLIES,
    Features,
    clickhouse_add_column,
    clickhouse_columns_sql,
    clickhouse_create,
    clickhouse_type,
)
from sms_replies.stores.errors import StoreError

log = logging.getLogger(__name__)

__all__ = [
    "DEDUPLICATION_WINDOW",
    "FEATURES_SQL",
    "ClickHouseSink",
    "ClickHouseSinkSettings",
    "Features",
    "add_column_sql",
    "column_type",
    "columns_sql",
    "ddl",
    "deduplication_token",
    "insert_settings",
    "read_sql",
]

#: The settings' old name (they are the store's, shared by the privacy commands).
ClickHouseSinkSettings = ClickHouseSettings
column_type = clickhouse_type


def ddl(database: str, features: Features) -> str:
    """The replies table's DDL (kept for code written before :mod:`sms_replies.stores`)."""
    return clickhouse_create(REPLIES, database, features)


def columns_sql(database: str) -> str:
    return clickhouse_columns_sql(REPLIES, database)


def add_column_sql(database: str, column: Column, features: Features) -> str:
    return clickhouse_add_column(REPLIES, database, column, features)


class ClickHouseSink(Sink):
    name = "clickhouse"

    def __init__(
        self,
        client_settings: ClickHouseSettings,
        *,
        resubscribe_keywords: frozenset[str] | None = None,
    ) -> None:
        self.config = client_settings
        self.database = client_settings.database
        self.resubscribe = (
            frozenset(optout.DEFAULT_RESUBSCRIBE_KEYWORDS)
            if resubscribe_keywords is None
            else resubscribe_keywords
        )
        self._client: Client | None = None
        self._features: Features | None = None
        # The driver's Client is not thread-safe: one call at a time.
        self._lock = asyncio.Lock()

    @classmethod
    def from_settings(cls, settings: SinkContext) -> Self:
        return cls(
            ClickHouseSettings(),
            resubscribe_keywords=optout.resubscribe_keywords(settings.resubscribe_keywords),
        )

    @property
    def features(self) -> Features | None:
        return self._features

    def _connected(self) -> Client:
        if self._client is None:
            self._client = self.config.client("sms-replies-clickhouse-sink")
        return self._client

    def _detected(self, client: Client) -> Features:
        if self._features is None:
            self._features = store.detect_features(client)
            log.info("clickhouse sink: server %s, %s", self._features.version, self._features)
        return self._features

    async def setup(self) -> None:
        async with self._lock:
            try:
                await asyncio.to_thread(self._setup)
            except StoreError as exc:
                raise SinkWriteError(str(exc), retriable=exc.retriable) from None

    def _setup(self) -> None:
        client = self._connected()
        store.ensure_tables(client, self.database, self._detected(client))
        log.info("clickhouse sink ready: table %s.%s", self.database, REPLIES.name)

    async def write(self, batch: Sequence[Reply]) -> None:
        replies = unique_by_id(batch)
        try:
            decisions = optout.batch_decisions(replies, self.resubscribe)
        except (TypeError, ValueError) as exc:
            raise SinkWriteError(f"replies not writable: {exc}", retriable=False) from None
        async with self._lock:
            try:
                inserted = await asyncio.to_thread(self._write, replies, decisions)
            except StoreError as exc:
                raise SinkWriteError(str(exc), retriable=exc.retriable) from None
        log.debug("clickhouse sink: %d inserted (%d in batch)", inserted, len(replies))

    def _write(self, replies: list[Reply], decisions: list[optout.Decision]) -> int:
        client = self._connected()
        return store.write_batch(client, self.database, self._detected(client), replies, decisions)

    async def close(self) -> None:
        client, self._client = self._client, None
        if client is not None:
            async with self._lock:
                await asyncio.to_thread(client.disconnect)
