"""A current ClickHouse engine in-process (chdb) as one more store of the scale benchmark.

Production runs a current ClickHouse server (``deploy/compose.clickhouse.yml``),
while the server that installs on these machines is Debian's 18.16 (2018). chdb
(PyPI) embeds a current ClickHouse engine: the benchmark loads the same replies
into a MergeTree table of the product's DDL (DateTime64, as a current server
gets it) in a local directory and runs the product's own queries through the
ClickHouse reader, with chdb in place of the native-protocol client. What that
measures is the engine (the SQL the reader compiles, on a current version); not
the server's network protocol nor its default settings.
"""

from __future__ import annotations

import contextlib
from collections.abc import Iterator
from datetime import datetime
from pathlib import Path
from typing import Any

import chdb
from chdb import session as chdb_session

from benchmarks.stores_synth import Generator, campaigns
from sms_replies.schema import CAMPAIGNS_TABLE, COLUMN_NAMES, TABLE
from sms_replies.stores.ddl import (
    CAMPAIGNS,
    FEATURES_SQL,
    REPLIES,
    Features,
    clickhouse_create,
)
from sms_replies.stores.readers import ClickHouseReader, Reader
from sms_replies.stores.url import StoreURL

DATABASE = "scale_bench"


def _literal(value: Any) -> str:
    """A bound value as clickhouse-driver substitutes it into the statement."""
    if value is None:
        return "NULL"
    if isinstance(value, bool):
        return str(int(value))
    if isinstance(value, int | float):
        return repr(value)
    text = str(value).replace("\\", "\\\\").replace("'", "\\'")
    return f"'{text}'"


class ChdbReader(ClickHouseReader):
    """The product's ClickHouse reader with a chdb session in place of clickhouse-driver."""

    def __init__(self, session: Any, database: str = DATABASE) -> None:
        super(ClickHouseReader, self).__init__()
        self.url = StoreURL("clickhouse", host="chdb", port=0, database=database)
        self.schema = database
        self.session = session

    def _execute(self, sql: str, params: Any) -> list[tuple[Any, ...]]:
        if params:
            sql = sql % {k: _literal(v) for k, v in params.items()}
        table = self.session.query(sql, "ArrowTable")
        columns = [c.to_pylist() for c in table.columns]
        return list(zip(*columns, strict=True)) if columns else []

    def close(self) -> None:
        pass


def _timestamp(value: datetime) -> str:
    return f"toDateTime64('{value.strftime('%Y-%m-%d %H:%M:%S')}', 3, 'UTC')"


class ChdbBackend:
    name = "chdb"

    def __init__(self, root: Path, stack: contextlib.ExitStack) -> None:
        self.session = chdb_session.Session(str(root / "chdb"))
        stack.callback(self.session.close)
        row = self._rows(FEATURES_SQL)[0]
        self.features = Features.from_row(row)

    def _rows(self, sql: str) -> list[tuple[Any, ...]]:
        table = self.session.query(sql, "ArrowTable")
        return list(zip(*(c.to_pylist() for c in table.columns), strict=True))

    def version(self) -> str:
        return f"clickhouse {self.features.version} (chdb {chdb.__version__}, in-process)"

    def load(self, generator: Generator) -> None:
        q = self.session.query
        q(f"DROP DATABASE IF EXISTS {DATABASE}")
        q(f"CREATE DATABASE {DATABASE}")
        for table in (REPLIES, CAMPAIGNS):
            q(clickhouse_create(table, DATABASE, self.features))
        names = ", ".join(COLUMN_NAMES)
        for chunk in generator.chunks():
            # chdb's Python() table function reads the Arrow table from this frame.
            q(f"INSERT INTO {DATABASE}.{TABLE} ({names}) SELECT {names} FROM Python(chunk)")
            del chunk
        for c in campaigns(generator.rows):
            recipient = "NULL" if c.recipient is None else _literal(c.recipient)
            q(
                f"INSERT INTO {DATABASE}.{CAMPAIGNS_TABLE} (name, channel, recipient, start_at, "
                f"end_at, delivered, created_at) VALUES ({_literal(c.name)}, "
                f"{_literal(c.channel)}, {recipient}, {_timestamp(c.start)}, "
                f"{_timestamp(c.end)}, {c.delivered}, {_timestamp(c.start)})"
            )
        q(f"OPTIMIZE TABLE {DATABASE}.{TABLE} FINAL")

    def size_bytes(self) -> int | None:
        rows = self._rows(
            "SELECT sum(bytes_on_disk) FROM system.parts WHERE active "
            f"AND database = '{DATABASE}' AND table = '{TABLE}'"
        )
        return int(rows[0][0])

    def server_rss_bytes(self) -> int | None:
        return None  # in-process: the child's peak RSS holds the engine

    def url(self) -> StoreURL:
        return StoreURL("clickhouse", host="chdb", port=0, database=DATABASE)

    @contextlib.contextmanager
    def reader(self) -> Iterator[Reader]:
        """A reader per question, as the CLI and the API open one per call."""
        reader = ChdbReader(self.session)
        try:
            yield reader
        finally:
            reader.close()
