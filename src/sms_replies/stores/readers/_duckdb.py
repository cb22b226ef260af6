"""The DuckDB reader."""

from __future__ import annotations

from typing import Any

import duckdb

from sms_replies.stores.errors import StoreError
from sms_replies.stores.readers._base import DEFAULT_TIMEOUT, _BaseReader
from sms_replies.stores.readers._duckdb_access import connect_duckdb
from sms_replies.stores.url import Backend, StoreURL


class DuckDBReader(_BaseReader):
    backend: Backend = "duckdb"

    def __init__(
        self, url: StoreURL, *, timeout: float = DEFAULT_TIMEOUT, write: bool = False
    ) -> None:
        super().__init__()
        self.url = url
        assert url.path is not None
        self.path = url.path
        self._exists = self.path.exists()
        if write:
            self.path.parent.mkdir(parents=True, exist_ok=True)
            self._con = connect_duckdb(self.path, read_only=False, timeout=timeout)
            self._exists = True
        elif self._exists:
            self._con = connect_duckdb(self.path, read_only=True, timeout=timeout)
        else:
            self._con = duckdb.connect(":memory:")

    @property
    def exists(self) -> bool:
        return self._exists

    def _load_catalog(self) -> dict[str, frozenset[str]]:
        rows = self._execute(
            "SELECT table_name, column_name FROM duckdb_columns() "
            "WHERE database_name = current_database() AND schema_name = 'main'",
            [],
        )
        catalog: dict[str, set[str]] = {}
        for name, col in rows:
            catalog.setdefault(str(name), set()).add(str(col))
        return {k: frozenset(v) for k, v in catalog.items()}

    def _execute(self, sql: str, params: Any) -> list[tuple[Any, ...]]:
        try:
            result = self._con.execute(sql, params)
            return result.fetchall() if result.description else []
        except duckdb.Error as exc:
            raise StoreError(f"reading the store {self.path} failed: {exc}") from None

    def _run(self, sql: str, params: Any) -> list[tuple[Any, ...]]:
        return self._execute(sql, params)

    def _run_write(self, sql: str, params: Any) -> int:
        rows = self._execute(sql, params)
        return len(rows)

    def refresh(self) -> None:
        """Read the catalog again (after creating a table)."""
        self._catalog = None

    def raw(self) -> duckdb.DuckDBPyConnection:
        """The DuckDB connection (or the sink endpoint's stand-in), for DDL."""
        return self._con

    def close(self) -> None:
        self._con.close()
