"""The PostgreSQL reader (psycopg 3)."""

from __future__ import annotations

from typing import Any, cast

from sms_replies.stores.errors import StoreBusyError, StoreError, StoreUnavailableError
from sms_replies.stores.readers._base import DEFAULT_TIMEOUT, QUERY_TIMEOUT, _BaseReader, _driver
from sms_replies.stores.url import Backend, StoreURL


class PostgresReader(_BaseReader):
    backend: Backend = "postgresql"

    def __init__(self, url: StoreURL, *, timeout: float = DEFAULT_TIMEOUT, write: bool = False):
        super().__init__()
        psycopg = _driver("psycopg", "postgres")
        self._psycopg = psycopg
        self.url = url
        self.schema = url.schema
        conninfo = url.postgres_conninfo()
        conninfo.setdefault("connect_timeout", str(max(1, round(timeout))))
        conninfo.setdefault("application_name", "sms-replies-analytics")
        try:
            self._con = psycopg.connect(**cast(dict[str, Any], conninfo), autocommit=write)
            if not write:
                self._con.read_only = True
            with self._con.cursor() as cur:
                cur.execute(f"SET statement_timeout = {int(QUERY_TIMEOUT * 1000)}")
        except psycopg.OperationalError as exc:
            raise StoreUnavailableError(
                f"cannot reach PostgreSQL at {url}: {_pg_message(exc)}"
            ) from None
        except psycopg.Error as exc:
            raise StoreError(f"PostgreSQL {url} refused the connection: {exc}") from None

    def _load_catalog(self) -> dict[str, frozenset[str]]:
        rows = self._execute(
            "SELECT table_name, column_name FROM information_schema.columns "
            "WHERE table_schema = %(schema)s",
            {"schema": self.schema},
        )
        catalog: dict[str, set[str]] = {}
        for name, col in rows:
            catalog.setdefault(str(name), set()).add(str(col))
        return {k: frozenset(v) for k, v in catalog.items()}

    def _execute(self, sql: str, params: Any) -> list[tuple[Any, ...]]:
        psycopg = self._psycopg
        try:
            with self._con.cursor() as cur:
                cur.execute(sql, params)
                self.rowcount = cur.rowcount
                return list(cur.fetchall()) if cur.description else []
        except psycopg.errors.LockNotAvailable as exc:
            raise StoreBusyError(f"PostgreSQL {self.url}: {exc}") from None
        except psycopg.OperationalError as exc:
            raise StoreUnavailableError(f"PostgreSQL {self.url}: {_pg_message(exc)}") from None
        except psycopg.Error as exc:
            raise StoreError(f"PostgreSQL {self.url} failed: {exc}") from None

    def _run(self, sql: str, params: Any) -> list[tuple[Any, ...]]:
        return self._execute(sql, params)

    def _run_write(self, sql: str, params: Any) -> int:
        self._execute(sql, params)
        return int(self.rowcount)

    def close(self) -> None:
        self._con.close()


def _pg_message(exc: Exception) -> str:
    return str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__
