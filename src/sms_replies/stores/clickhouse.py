"""ClickHouse (clickhouse-driver, native protocol): the client, the tables, the sink's writes.

Public API (blocking calls: run them in a thread; a ``Client`` is not thread-safe):

- :class:`ClickHouseSettings` (``SMS_REPLIES_CLICKHOUSE_*``: ``HOST``, ``PORT``
  (native, 9000), ``DATABASE``, ``USER``, ``PASSWORD``, ``SECURE``,
  ``CONNECT_TIMEOUT``, ``SEND_RECEIVE_TIMEOUT``) and its ``client(name)``.
- :func:`detect_features` ``(client)``: :class:`~sms_replies.stores.ddl.Features`
  from the server's system tables (18.16 has no ``DateTime64``: timestamps in
  whole seconds; no insert deduplication token).
- :func:`ensure_tables` ``(client, database, features)``: ``CREATE DATABASE IF
  NOT EXISTS``, the ``replies``, ``campaigns`` and ``optouts`` tables
  (ReplacingMergeTree each), and the columns the lists gained since.
- :func:`write_batch` ``(client, database, features, replies, decisions)``: the
  batch's opt-out decisions, then the replies not stored yet. Idempotence has
  three layers for replies (ReplacingMergeTree alone only deduplicates at
  merges): the batch first asks which of its reply_ids are stored (an external
  table, any batch size) and inserts only the others; where the server has
  ``insert_deduplication_token`` (22.2+) the insert carries one derived from its
  reply_ids; and **readers use FINAL** (:func:`read_sql`), which collapses the
  rare duplicates two racing writers leave. Decisions are inserted every time
  (a replay adds identical rows): ``optouts`` is a ReplacingMergeTree whose
  version is :func:`sms_replies.optout.version`, so ``FINAL`` keeps the latest
  decision per sender whatever the insert order. ``since`` is whole seconds on
  18.16; the version keeps the milliseconds.
- :func:`convert` ``(exc, action)``: a driver error as StoreError (data errors
  final, the rest retriable); :data:`OUTAGE_ERRORS`, :data:`CLIENT_DATA_ERRORS`.
"""

from __future__ import annotations

import hashlib
import logging
import struct
from collections.abc import Iterable, Sequence
from datetime import UTC, datetime
from typing import Any

from clickhouse_driver import Client, errors
from pydantic import Field, SecretStr
from pydantic_settings import BaseSettings, SettingsConfigDict

from sms_replies.optout import Decision, version
from sms_replies.records import Reply
from sms_replies.schema import to_columns, utc_from_ms
from sms_replies.stores.ddl import (
    CLICKHOUSE_OPTOUT_VERSION,
    OPTOUTS,
    REPLIES,
    TABLES,
    Features,
    clickhouse_add_column,
    clickhouse_columns_sql,
    clickhouse_create,
    clickhouse_table,
)
from sms_replies.stores.errors import StoreDataError, StoreError, StoreUnavailableError

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
#: Raised by the driver while serialising a value the column cannot hold.
CLIENT_DATA_ERRORS: tuple[type[BaseException], ...] = (
    errors.TypeMismatchError,
    errors.TooLargeStringSize,
    UnicodeError,
    TypeError,
    ValueError,
    OverflowError,
    struct.error,
)
#: Everything else the driver raises: the server or the network.
OUTAGE_ERRORS: tuple[type[BaseException], ...] = (errors.Error, OSError, EOFError, TimeoutError)


class ClickHouseSettings(BaseSettings):
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


def convert(exc: BaseException, action: str) -> StoreError:
    """A driver error as StoreError; the server's stack trace is dropped."""
    message = str(exc).split("Stack trace", 1)[0].strip()
    if isinstance(exc, errors.ServerException) and exc.code in _DATA_ERROR_CODES:
        return StoreDataError(f"clickhouse rejected the batch: {message}")
    if isinstance(exc, CLIENT_DATA_ERRORS):
        return StoreDataError(f"clickhouse cannot encode the batch: {type(exc).__name__}: {exc}")
    return StoreUnavailableError(f"clickhouse {action} failed: {type(exc).__name__}: {message}")


def detect_features(client: Client) -> Features:
    try:
        return Features.detect(client)
    except OUTAGE_ERRORS as exc:
        raise convert(exc, "connect") from None


def ensure_tables(client: Client, database: str, features: Features) -> None:
    """The database, the tables and their missing columns."""
    try:
        client.execute(f"CREATE DATABASE IF NOT EXISTS `{database}`")
        for table in TABLES:
            client.execute(clickhouse_create(table, database, features))
            present = {name for (name,) in client.execute(clickhouse_columns_sql(table, database))}
            for column in table.columns:
                if column.name not in present:
                    log.warning("clickhouse: adding column %s.%s", table.name, column.name)
                    client.execute(clickhouse_add_column(table, database, column, features))
    except OUTAGE_ERRORS as exc:
        raise convert(exc, "setup") from None


def read_sql(database: str) -> str:
    """The query readers should use for replies: FINAL merges rows not yet deduplicated."""
    return (
        f"SELECT {', '.join(REPLIES.column_names)} FROM {clickhouse_table(REPLIES, database)} FINAL"
    )


def optouts_sql(database: str) -> str:
    """The opt-out list as readers should read it (FINAL: the latest decision per sender)."""
    return (
        f"SELECT {', '.join(OPTOUTS.column_names)} FROM {clickhouse_table(OPTOUTS, database)} FINAL"
    )


def deduplication_token(reply_ids: Iterable[str]) -> str:
    """Same reply_ids, same token, whatever their order in the batch."""
    return hashlib.sha256("\n".join(sorted(reply_ids)).encode()).hexdigest()


def insert_settings(features: Features, reply_ids: Iterable[str]) -> dict[str, Any]:
    if not features.token_dedup:
        return {}
    return {"insert_deduplicate": 1, "insert_deduplication_token": deduplication_token(reply_ids)}


def stored_ids(client: Client, database: str, reply_ids: list[str]) -> set[str]:
    rows = client.execute(
        f"SELECT reply_id FROM {clickhouse_table(REPLIES, database)} "
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


def _insert_decisions(client: Client, database: str, decisions: Sequence[Decision]) -> None:
    names = [*OPTOUTS.column_names, CLICKHOUSE_OPTOUT_VERSION]
    columns = [
        [d.sender for d in decisions],
        [d.status for d in decisions],
        [utc_from_ms(d.since_ms) for d in decisions],
        [d.reply_id for d in decisions],
        [d.source for d in decisions],
        [version(d) for d in decisions],
    ]
    client.execute(
        f"INSERT INTO {clickhouse_table(OPTOUTS, database)} ({', '.join(names)}) VALUES",
        columns,
        columnar=True,
    )


def write_batch(
    client: Client,
    database: str,
    features: Features,
    replies: Sequence[Reply],
    decisions: Sequence[Decision],
) -> int:
    """Decisions, then the replies not stored yet; returns how many replies were inserted.

    Decisions go first: a crash between the two inserts replays the batch, which
    writes both again; replies first would not lose a decision either (they are
    inserted on every replay), but this way a stored reply always has its decision.
    """
    try:
        if decisions:
            _insert_decisions(client, database, decisions)
        stored = stored_ids(client, database, [reply.reply_id for reply in replies])
        new = [reply for reply in replies if reply.reply_id not in stored]
        if not new:
            return 0
        columns = to_columns(new, datetime.now(UTC))
        client.execute(
            f"INSERT INTO {clickhouse_table(REPLIES, database)} "
            f"({', '.join(REPLIES.column_names)}) VALUES",
            [columns[name] for name in REPLIES.column_names],
            columnar=True,
            settings=insert_settings(features, (reply.reply_id for reply in new)),
        )
        return len(new)
    except CLIENT_DATA_ERRORS as exc:
        raise convert(exc, "write") from None
    except OUTAGE_ERRORS as exc:
        raise convert(exc, "write") from None
