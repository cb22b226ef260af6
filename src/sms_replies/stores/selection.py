"""What retention and erasure delete (:class:`Selection`), and where (:class:`Stores`).

See :mod:`sms_replies.stores.manage` for the operations.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime
from pathlib import Path
from typing import TYPE_CHECKING, Any, Final

from sms_replies.stores.ddl import REPLIES
from sms_replies.stores.errors import StoreError

if TYPE_CHECKING:
    from sms_replies.stores.clickhouse import ClickHouseSettings

DEFAULT_TIMEOUT: Final = 30.0


class PrivacyStoreError(StoreError):
    """A store could not be reached or refused the deletion (nothing is half-deleted)."""

    retriable = True


@dataclass(frozen=True, slots=True)
class Stores:
    """The stores to delete from; ``None`` / False leaves one out."""

    duckdb_path: Path | None = None
    postgres_dsn: str | None = None
    postgres_schema: str = "public"
    clickhouse: bool = False  # settings from SMS_REPLIES_CLICKHOUSE_*
    clickhouse_settings: ClickHouseSettings | None = None  # given: this server, not the env's
    parquet_dir: Path | None = None
    timeout: float = DEFAULT_TIMEOUT

    @property
    def reaches_clickhouse(self) -> bool:
        return self.clickhouse or self.clickhouse_settings is not None


@dataclass(frozen=True, slots=True)
class Selection:
    """The rows to delete: sent by one of ``senders``, received before ``before``, or
    sent by a number whose last reply came before ``inactive_before``.

    ``forget_optouts``: the senders' ``opted_out`` rows go too (only for an erasure).
    """

    senders: tuple[str, ...] = ()
    before: datetime | None = None
    inactive_before: datetime | None = None
    forget_optouts: bool = False

    def __post_init__(self) -> None:
        given = [bool(self.senders), self.before is not None, self.inactive_before is not None]
        if sum(given) != 1:
            raise ValueError("give one of senders, before or inactive_before")
        for value in (self.before, self.inactive_before):
            if value is not None and value.tzinfo is None:
                raise ValueError("times must be timezone-aware")
        if self.forget_optouts and not self.senders:
            raise ValueError("forget_optouts is for an erasure by sender")

    @property
    def cutoff(self) -> datetime | None:
        return self.before or self.inactive_before

    def _time_where(self, table: str, mark: str) -> tuple[str, list[Any]] | None:
        """The condition of a time-based selection, ``mark`` its parameter; None: by sender."""
        if self.before is not None:
            return f"received_at < {mark}", [self.before]
        if self.inactive_before is not None:
            return (
                f"sender IN (SELECT sender FROM {table} GROUP BY sender "
                f"HAVING max(received_at) < {mark})",
                [self.inactive_before],
            )
        return None

    def duckdb_where(self) -> tuple[str, list[Any]]:
        return self._time_where(REPLIES.name, "?") or (
            f"sender IN ({', '.join('?' for _ in self.senders)})",
            list(self.senders),
        )

    def postgres_where(self, table: str) -> tuple[str, list[Any]]:
        return self._time_where(table, "$1") or ("sender = ANY($1::text[])", [list(self.senders)])

    def optouts_where(self, where: str) -> str:
        """The optouts rows that go with the replies of ``where`` (same parameters)."""
        kept = "" if self.forget_optouts else "status = 'opted_in' AND "
        if self.before is not None:
            return f"{kept}{where.replace('received_at', 'since')}"
        return f"{kept}{where}"
