"""ClickHouse sink (clickhouse-driver, native TCP protocol).

Table ``<database>.replies``: ``ReplacingMergeTree`` ordered by ``reply_id``,
partitioned by month of ``received_at``. Idempotence by ``reply_id`` has three
layers, because ReplacingMergeTree alone only deduplicates eventually (at
merges):

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
import hashlib
import logging
import struct
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any, Self

from clickhouse_driver import Client, errors
from pydantic import Field, SecretStr
from pydantic_settings import BaseSettings, SettingsConfigDict

from sms_replies.errors import SinkWriteError
from sms_replies.records import Reply
from sms_replies.schema import COLUMN_NAMES, COLUMNS, TABLE, Column, to_columns, unique_by_id
from sms_replies.sinks.base import Sink, SinkContext

log = logging.getLogger(__name__)

# Server error codes about the data itself: retrying the same rows cannot help.
_DATA_ERROR_CODES = frozenset(
    {
        errors.ErrorCodes.CANNOT_PARSE_TEXT,
        errors.ErrorCodes.CANNOT_PARSE_INPUT_ASSERTION_FAILED,
        errors.ErrorCodes.CANNOT_PARSE_DATETIME,
        errors.ErrorCodes.TYPE_MISMATCH,
        errors.ErrorCodes.CANNOT_CONVERT_TYPE,
        errors.ErrorCodes.TOO_LARGE_ARRAY_SIZE,
        errors.ErrorCodes.TOO_LARGE_STRING_SIZE,
        errors.ErrorCodes.VALUE_IS_OUT_OF_RANGE_OF_DATA_TYPE,
        errors.ErrorCodes.CANNOT_INSERT_NULL_IN_ORDINARY_COLUMN,
    }
)
# Raised by the driver while serialising a value the column cannot hold.
_CLIENT_DATA_ERRORS = (
    errors.TypeMismatchError,
    errors.TooLargeStringSize,
    UnicodeError,
    TypeError,
    ValueError,
    OverflowError,
    struct.error,
)
_OUTAGE_ERRORS = (errors.Error, OSError, EOFError, TimeoutError)
DEDUPLICATION_WINDOW = 1000  # inserts remembered per table for the token


class ClickHouseSinkSettings(BaseSettings):
    model_config = SettingsConfigDict(env_prefix="SMS_REPLIES_CLICKHOUSE_", extra="ignore")

    host: str = Field("127.0.0.1", description="Server host.")
    port: int = Field(9000, ge=1, le=65535, description="Native protocol port.")
    database: str = Field(
        "default", pattern=r"^[A-Za-z_][A-Za-z0-9_]*$", description="Database of the table."
    )
    user: str = Field("default", description="User name.")
    password: SecretStr = Field(SecretStr(""), description="Password.")
    secure: bool = Field(False, description="TLS (port 9440 usually).")
    connect_timeout: float = Field(10.0, gt=0, description="Seconds to connect.")
    send_receive_timeout: float = Field(60.0, gt=0, description="Seconds per network read.")

    def client(self, name: str) -> Client:
        """A client of this server (it connects lazily, on its first query)."""
        return Client(
            host=self.host,
            port=self.port,
            user=self.user,
            password=self.password.get_secret_value(),
            secure=self.secure,
            connect_timeout=self.connect_timeout,
            send_receive_timeout=self.send_receive_timeout,
            sync_request_timeout=self.connect_timeout,
            client_name=name,
        )


FEATURES_SQL = (
    "SELECT version(), "
    "(SELECT count() FROM system.data_type_families WHERE name = 'DateTime64'), "
    "(SELECT count() FROM system.settings WHERE name = 'insert_deduplication_token'), "
    "(SELECT count() FROM system.merge_tree_settings "
    "WHERE name = 'non_replicated_deduplication_window')"
)


@dataclass(frozen=True, slots=True)
class Features:
    """What the server can do, read from its system tables."""

    version: str
    datetime64: bool
    deduplication_token: bool
    non_replicated_deduplication: bool

    @classmethod
    def detect(cls, client: Client) -> Features:
        return cls.from_row(client.execute(FEATURES_SQL)[0])

    @classmethod
    def from_row(cls, row: Sequence[Any]) -> Features:
        version, datetime64, token, window = row
        return cls(str(version), bool(int(datetime64)), bool(int(token)), bool(int(window)))

    @property
    def token_dedup(self) -> bool:
        """Both halves are needed: the token is ignored without the table's window."""
        return self.deduplication_token and self.non_replicated_deduplication


def column_type(column: Column, features: Features) -> str:
    base = {
        "text": "String",
        "boolean": "UInt8",
        "integer": "Int32",
        "timestamp": "DateTime64(3, 'UTC')" if features.datetime64 else "DateTime('UTC')",
        "text[]": "Array(String)",
    }[column.type]
    return f"Nullable({base})" if column.nullable else base


def ddl(database: str, features: Features) -> str:
    columns = ",\n  ".join(f"{c.name} {column_type(c, features)}" for c in COLUMNS)
    settings = (
        f"\nSETTINGS non_replicated_deduplication_window = {DEDUPLICATION_WINDOW}"
        if features.token_dedup
        else ""
    )
    return (
        f"CREATE TABLE IF NOT EXISTS `{database}`.{TABLE} (\n  {columns}\n)\n"
        "ENGINE = ReplacingMergeTree()\n"
        "PARTITION BY toYYYYMM(received_at)\n"
        f"ORDER BY reply_id{settings}"
    )


def columns_sql(database: str) -> str:
    """Names of the table's columns (``database`` is a validated identifier)."""
    return f"SELECT name FROM system.columns WHERE database = '{database}' AND table = '{TABLE}'"


def add_column_sql(database: str, column: Column, features: Features) -> str:
    # 18.16 has no ADD COLUMN IF NOT EXISTS; rows already stored get the type's default.
    return (
        f"ALTER TABLE `{database}`.{TABLE} ADD COLUMN {column.name} {column_type(column, features)}"
    )


def read_sql(database: str) -> str:
    """The query readers should use: FINAL merges rows not yet deduplicated."""
    return f"SELECT {', '.join(COLUMN_NAMES)} FROM `{database}`.{TABLE} FINAL"


def deduplication_token(reply_ids: Iterable[str]) -> str:
    """Same reply_ids, same token, whatever their order in the batch."""
    return hashlib.sha256("\n".join(sorted(reply_ids)).encode()).hexdigest()


def insert_settings(features: Features, reply_ids: Iterable[str]) -> dict[str, Any]:
    if not features.token_dedup:
        return {}
    return {"insert_deduplicate": 1, "insert_deduplication_token": deduplication_token(reply_ids)}


def convert(exc: BaseException, action: str) -> SinkWriteError:
    """A driver error as SinkWriteError; the server's stack trace is dropped."""
    message = str(exc).split("Stack trace", 1)[0].strip()
    if isinstance(exc, errors.ServerException) and exc.code in _DATA_ERROR_CODES:
        return SinkWriteError(f"clickhouse rejected the batch: {message}", retriable=False)
    return SinkWriteError(
        f"clickhouse {action} failed: {type(exc).__name__}: {message}", retriable=True
    )


class ClickHouseSink(Sink):
    name = "clickhouse"

    def __init__(self, client_settings: ClickHouseSinkSettings) -> None:
        self.config = client_settings
        self.database = client_settings.database
        self._client: Client | None = None
        self._features: Features | None = None
        # The driver's Client is not thread-safe: one call at a time.
        self._lock = asyncio.Lock()

    @classmethod
    def from_settings(cls, settings: SinkContext) -> Self:
        return cls(ClickHouseSinkSettings())

    @property
    def features(self) -> Features | None:
        return self._features

    def _connected(self) -> Client:
        if self._client is None:
            self._client = self.config.client("sms-replies-clickhouse-sink")
        return self._client

    def _detected(self, client: Client) -> Features:
        if self._features is None:
            self._features = Features.detect(client)
            log.info("clickhouse sink: server %s, %s", self._features.version, self._features)
        return self._features

    async def setup(self) -> None:
        async with self._lock:
            try:
                await asyncio.to_thread(self._setup)
            except _OUTAGE_ERRORS as exc:
                raise convert(exc, "setup") from None

    def _setup(self) -> None:
        client = self._connected()
        features = self._detected(client)
        client.execute(f"CREATE DATABASE IF NOT EXISTS `{self.database}`")
        client.execute(ddl(self.database, features))
        present = {name for (name,) in client.execute(columns_sql(self.database))}
        for column in COLUMNS:
            if column.name not in present:
                log.warning("clickhouse sink: adding column %s", column.name)
                client.execute(add_column_sql(self.database, column, features))
        log.info("clickhouse sink ready: table %s.%s", self.database, TABLE)

    async def write(self, batch: Sequence[Reply]) -> None:
        replies = unique_by_id(batch)
        async with self._lock:
            try:
                inserted = await asyncio.to_thread(self._write, replies)
            except _CLIENT_DATA_ERRORS as exc:
                raise SinkWriteError(
                    f"clickhouse cannot encode the batch: {type(exc).__name__}: {exc}",
                    retriable=False,
                ) from None
            except _OUTAGE_ERRORS as exc:
                raise convert(exc, "write") from None
        log.debug("clickhouse sink: %d inserted (%d in batch)", inserted, len(replies))

    def _write(self, replies: list[Reply]) -> int:
        client = self._connected()
        features = self._detected(client)
        stored = self._stored_ids(client, [reply.reply_id for reply in replies])
        new = [reply for reply in replies if reply.reply_id not in stored]
        if not new:
            return 0
        columns = to_columns(new, datetime.now(UTC))
        client.execute(
            f"INSERT INTO `{self.database}`.{TABLE} ({', '.join(COLUMN_NAMES)}) VALUES",
            [columns[name] for name in COLUMN_NAMES],
            columnar=True,
            settings=insert_settings(features, (reply.reply_id for reply in new)),
        )
        return len(new)

    def _stored_ids(self, client: Client, reply_ids: list[str]) -> set[str]:
        rows = client.execute(
            f"SELECT reply_id FROM `{self.database}`.{TABLE} "
            "WHERE reply_id IN (SELECT reply_id FROM batch_ids)",
            external_tables=[
                {
                    "name": "batch_ids",
                    "structure": [("reply_id", "String")],
                    "data": [{"reply_id": reply_id} for reply_id in reply_ids],
                }
            ],
        )
        return {reply_id for (reply_id,) in rows}

    async def close(self) -> None:
        client, self._client = self._client, None
        if client is not None:
            async with self._lock:
                await asyncio.to_thread(client.disconnect)
