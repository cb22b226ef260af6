"""The ClickHouse reader (clickhouse-driver), and when it may read without ``FINAL``."""

from __future__ import annotations

from datetime import UTC, datetime
from typing import Any, Final, cast

from sqlalchemy.sql import ClauseElement, visitors
from sqlalchemy.sql.selectable import TableClause

from sms_replies.schema import TABLE
from sms_replies.stores.dialects import CLICKHOUSE_DATETIME64, ClickHouseDialect, Instant
from sms_replies.stores.errors import StoreError, StoreUnavailableError
from sms_replies.stores.readers._base import (
    _TIMESTAMPS,
    DEFAULT_TIMEOUT,
    QUERY_TIMEOUT,
    _BaseReader,
    _driver,
    _utc,
    compile_statement,
    log,
)
from sms_replies.stores.url import Backend, StoreURL

#: The first ClickHouse release with ``GROUPING SETS`` and the ``grouping()`` function.
GROUPING_SETS_SINCE: Final = (22, 9)


class ClickHouseReader(_BaseReader):
    backend: Backend = "clickhouse"
    _grouping_sets: bool | None = None  # has_grouping_sets(), once asked

    def __init__(self, url: StoreURL, *, timeout: float = DEFAULT_TIMEOUT, write: bool = False):
        super().__init__()
        client_class = _driver("clickhouse_driver", "clickhouse").Client

        self.url = url
        self.schema = url.database
        self._client = client_class(
            host=url.host or "127.0.0.1",
            port=url.port or 9000,
            user=url.user or "default",
            password=url.password.get_secret_value() if url.password else "",
            database="default",
            secure=url.secure,
            connect_timeout=timeout,
            send_receive_timeout=QUERY_TIMEOUT,
            sync_request_timeout=timeout,
            client_name="sms-replies-analytics",
        )

    def _load_catalog(self) -> dict[str, frozenset[str]]:
        rows = self._execute(
            "SELECT table, name, type FROM system.columns WHERE database = %(db)s",
            {"db": self.schema},
        )
        catalog: dict[str, set[str]] = {}
        for name, col, col_type in rows:
            catalog.setdefault(str(name), set()).add(str(col))
            if str(col) in _TIMESTAMPS and "DateTime64" in str(col_type):
                self.dialect = CLICKHOUSE_DATETIME64  # a current server's tables
        return {k: frozenset(v) for k, v in catalog.items()}

    def has_grouping_sets(self) -> bool:
        """Whether the server takes ``GROUP BY GROUPING SETS`` with ``grouping()``
        (ClickHouse 22.9 and later; 18.16 does not). Asked once a reader."""
        if self._grouping_sets is None:
            ((version,),) = self._execute("SELECT version()", None)
            major, minor = (int(x) for x in str(version).split(".")[:2])
            self._grouping_sets = (major, minor) >= GROUPING_SETS_SINCE
        return self._grouping_sets

    def fetch(self, stmt: ClauseElement) -> list[tuple[Any, ...]]:
        """The rows of ``stmt``; ``replies`` read without FINAL when it has nothing to collapse.

        ``FINAL`` makes the server merge every part on the fly (on 18.16 in one
        thread: 2.6x at 1 M rows, docs/analytics.md, Scale). It changes nothing
        when each partition of ``replies`` is a single part that came out of a
        merge (level > 0): a ReplacingMergeTree merge keeps one row per key, and
        rows of one key never sit in two partitions unless two sinks raced on two
        different deliveries of one reply across a month's end (FINAL would
        collapse those; nothing else does). The parts are listed before and after
        the statement: parts are immutable and a new one gets a new name, so an
        unchanged list means the statement read exactly those parts; otherwise it
        runs again with FINAL.
        """
        self.columns("")  # the catalog (and so the timestamps' precision) first
        if isinstance(self.dialect, ClickHouseDialect) and _reads_table(stmt, TABLE):
            parts = self.replies_parts()
            if collapsed(parts):
                fast = self.dialect.reading_without_final(frozenset({TABLE}))
                sql, params = compile_statement(stmt, fast)
                rows = self._run(sql, params)
                if self.replies_parts() == parts:
                    return [tuple(_utc(v) for v in row) for row in rows]
                log.debug("clickhouse: parts of %s changed while reading; again with FINAL", TABLE)
        return super().fetch(stmt)

    def replies_parts(self) -> list[tuple[str, str, int]]:
        """(partition, name, merge level) of each active part of ``replies``, by name."""
        rows = self._execute(
            "SELECT partition, name, level FROM system.parts "
            "WHERE active AND database = %(db)s AND table = %(table)s ORDER BY name",
            {"db": self.schema, "table": TABLE},
        )
        return [(str(p), str(n), int(level)) for p, n, level in rows]

    def _execute(self, sql: str, params: Any) -> list[tuple[Any, ...]]:
        from clickhouse_driver import errors

        try:
            return cast(list[tuple[Any, ...]], self._client.execute(sql, params or None))
        except errors.ServerException as exc:
            message = str(exc).split("Stack trace", 1)[0].strip()
            raise StoreError(f"ClickHouse {self.url} failed: {message}") from None
        except (errors.Error, OSError, EOFError, TimeoutError) as exc:
            raise StoreUnavailableError(
                f"cannot reach ClickHouse at {self.url}: {type(exc).__name__}: {exc}"
            ) from None

    def _run(self, sql: str, params: Any) -> list[tuple[Any, ...]]:
        return self._execute(sql, params)

    def _run_write(self, sql: str, params: Any) -> int:
        self._execute(sql, params)
        return -1

    def insert(self, name: str, row: dict[str, Any]) -> None:
        # The native protocol sends rows as data, not in the statement's text.
        values = {}
        for key, value in row.items():
            if isinstance(value, datetime):  # the column's precision, rounded up like bounds
                self.columns("")
                bound = Instant().process_bind_param(value, self.dialect)
                if isinstance(bound, int):
                    value = datetime.fromtimestamp(bound, tz=UTC)
                else:
                    value = datetime.fromisoformat(bound).replace(tzinfo=UTC)
            values[key] = int(value) if isinstance(value, bool) else value
        from clickhouse_driver import errors

        try:
            self._client.execute(
                f"INSERT INTO `{self.schema}`.{name} ({', '.join(values)}) VALUES", [values]
            )
        except errors.ServerException as exc:
            message = str(exc).split("Stack trace", 1)[0].strip()
            raise StoreError(f"ClickHouse {self.url} failed: {message}") from None
        except (errors.Error, OSError, EOFError, TimeoutError) as exc:
            raise StoreUnavailableError(
                f"cannot reach ClickHouse at {self.url}: {type(exc).__name__}: {exc}"
            ) from None

    def close(self) -> None:
        self._client.disconnect()


def collapsed(parts: list[tuple[str, str, int]]) -> bool:
    """Whether these parts (:meth:`ClickHouseReader.replies_parts`) hold at most one row
    per key within each partition: one part per partition, each out of a merge (a part
    as inserted, level 0, keeps the duplicates of its insert)."""
    partitions = [p for p, _, _ in parts]
    return len(set(partitions)) == len(partitions) and all(level > 0 for _, _, level in parts)


def _reads_table(stmt: ClauseElement, name: str) -> bool:
    return any(
        isinstance(element, TableClause) and element.name == name
        for element in visitors.iterate(stmt)
    )
