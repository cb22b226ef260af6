"""Which store the analytics read: one URL, from ``--store`` or ``SMS_REPLIES_ANALYTICS_STORE``.

- a DuckDB file: a path, or ``duckdb:///abs/path`` / ``duckdb:rel/path`` (unset: the
  settings' ``<data dir>/replies.duckdb``, as before);
- PostgreSQL: ``postgresql://user[:password]@host[:port]/db?schema=NAME`` (port 5432;
  schema: ``SMS_REPLIES_POSTGRES_SCHEMA_NAME``, the sink's, default ``public``;
  other query parameters, such as ``sslmode``, go to libpq as they are);
- ClickHouse: ``clickhouse://[user[:password]@]host[:port]/db`` (the native protocol,
  port 9000; db default ``default``; ``?secure=true`` for TLS).

Pure parsing, no I/O. A :class:`StoreURL` never shows its password: its ``repr``
and :meth:`StoreURL.redacted` put ``***`` in its place.
"""

from __future__ import annotations

import re
from dataclasses import dataclass, field
from pathlib import Path
from typing import Final, Literal
from urllib.parse import parse_qsl, quote, unquote, urlencode, urlsplit

from pydantic import Field, SecretStr
from pydantic_settings import BaseSettings, SettingsConfigDict

from sms_replies.errors import ConfigError

Backend = Literal["duckdb", "postgresql", "clickhouse"]

SETTING: Final = "SMS_REPLIES_ANALYTICS_STORE"
POSTGRES_PORT: Final = 5432
CLICKHOUSE_PORT: Final = 9000
_IDENTIFIER = re.compile(r"^[A-Za-z_][A-Za-z0-9_]*$")
_SCHEMES: Final[dict[str, Backend]] = {
    "duckdb": "duckdb",
    "postgresql": "postgresql",
    "postgres": "postgresql",
    "clickhouse": "clickhouse",
}


class _PostgresSchema(BaseSettings):
    """The PostgreSQL sink's schema setting (the default schema of a postgresql:// URL)."""

    model_config = SettingsConfigDict(env_prefix="SMS_REPLIES_POSTGRES_", extra="ignore")

    schema_name: str = Field("public", min_length=1)


def default_postgres_schema() -> str:
    """``SMS_REPLIES_POSTGRES_SCHEMA_NAME`` (read now, not at import), default ``public``."""
    return _PostgresSchema().schema_name


@dataclass(frozen=True, slots=True)
class StoreURL:
    """A parsed store URL; ``path`` for DuckDB, the server fields for the others."""

    backend: Backend
    path: Path | None = None
    host: str | None = None
    port: int | None = None
    database: str | None = None
    user: str | None = None
    password: SecretStr | None = field(default=None, repr=False)
    schema: str | None = None
    options: tuple[tuple[str, str], ...] = ()

    def redacted(self) -> str:
        """The URL to show (logs, errors, banners): the password as ``***``."""
        if self.backend == "duckdb":
            absolute = self.path is not None and self.path.is_absolute()
            return f"duckdb://{self.path}" if absolute else f"duckdb:{self.path}"
        auth = ""
        if self.user is not None:
            auth = quote(self.user, safe="")
            if self.password is not None:
                auth += ":***"
            auth += "@"
        host = f"[{self.host}]" if self.host and ":" in self.host else self.host
        query = list(self.options)
        if self.schema is not None:
            query = [("schema", self.schema), *query]
        tail = f"?{urlencode(query)}" if query else ""
        return f"{self.backend}://{auth}{host}:{self.port}/{self.database}{tail}"

    def __str__(self) -> str:
        return self.redacted()

    def postgres_conninfo(self) -> dict[str, str]:
        """Keyword arguments of a libpq connection (the password included)."""
        if self.backend != "postgresql":
            raise ValueError("not a PostgreSQL URL")
        info = {"host": self.host or "127.0.0.1", "port": str(self.port), "dbname": self.database}
        if self.user is not None:
            info["user"] = self.user
        if self.password is not None:
            info["password"] = self.password.get_secret_value()
        info.update(self.options)
        return {k: v for k, v in info.items() if v is not None}

    @property
    def secure(self) -> bool:
        return dict(self.options).get("secure", "false").lower() in ("1", "true", "yes")


def parse_store_url(
    text: str | None,
    *,
    default_duckdb: Path,
    default_schema: str | None = None,
    setting: str = SETTING,
) -> StoreURL:
    """The store named by ``text`` (None or empty: the DuckDB file ``default_duckdb``).

    :class:`ConfigError` naming ``setting`` when the URL cannot be used.
    ``default_schema``: the schema of a postgresql:// URL without ``?schema=``
    (None: :func:`default_postgres_schema`).
    """
    raw = (text or "").strip()
    if not raw:
        return StoreURL("duckdb", path=default_duckdb)
    scheme, sep, _ = raw.partition(":")
    if not sep or scheme.lower() not in _SCHEMES or len(scheme) < 2:
        if re.match(r"^[A-Za-z][A-Za-z0-9+.-]*://", raw):
            raise _error(
                setting,
                f"unknown store scheme {scheme!r}: use a DuckDB path, duckdb:///path, "
                "postgresql://user@host:port/db or clickhouse://host:port/db",
            )
        return StoreURL("duckdb", path=Path(raw).expanduser())
    backend = _SCHEMES[scheme.lower()]
    if backend == "duckdb":
        rest = raw[len(scheme) + 1 :]
        if rest.startswith("//"):
            rest = rest[2:]  # duckdb:///abs -> /abs (no host part)
        path = unquote(rest)
        if not path:
            raise _error(setting, "duckdb: URL without a path (duckdb:///path/to/replies.duckdb)")
        return StoreURL("duckdb", path=Path(path).expanduser())
    try:
        parts = urlsplit(raw)
        port = parts.port
    except ValueError as exc:
        raise _error(setting, f"not a valid URL ({exc})") from None
    if not parts.hostname:
        raise _error(setting, f"{backend}:// URL without a host ({backend}://host:port/db)")
    database = unquote(parts.path.lstrip("/"))
    user = unquote(parts.username) if parts.username is not None else None
    password = SecretStr(unquote(parts.password)) if parts.password is not None else None
    query = parse_qsl(parts.query, keep_blank_values=True)
    if backend == "postgresql":
        if not database:
            raise _error(setting, "postgresql:// URL without a database (…/db)")
        schemas = [v for k, v in query if k == "schema"]
        if len(schemas) > 1 or (schemas and not schemas[0]):
            raise _error(setting, "give ?schema= once, with a name")
        schema = schemas[0] if schemas else (default_schema or default_postgres_schema())
        options = tuple((k, v) for k, v in query if k != "schema")
        return StoreURL(
            "postgresql",
            host=parts.hostname,
            port=port or POSTGRES_PORT,
            database=database,
            user=user,
            password=password,
            schema=schema,
            options=options,
        )
    database = database or "default"
    if not _IDENTIFIER.match(database):
        raise _error(setting, f"ClickHouse database {database!r}: letters, digits and _ only")
    unknown = sorted({k for k, _ in query} - {"secure"})
    if unknown:
        raise _error(setting, f"unknown clickhouse:// parameter(s): {', '.join(unknown)}")
    return StoreURL(
        "clickhouse",
        host=parts.hostname,
        port=port or CLICKHOUSE_PORT,
        database=database,
        user=user,
        password=password,
        options=tuple(query),
    )


def _error(setting: str, message: str) -> ConfigError:
    return ConfigError(f"{setting} / --store: {message}")
