"""The sink guarantees: what every sink may rely on and must honour.

Delivery semantics:

* **At least once, flushed before commit.** The runner hands a batch to
  :meth:`Sink.write` and commits the consumer offsets of that batch only after
  ``write`` returned. A crash between the two delivers the batch again.
* **Idempotent by ``reply_id``.** Because of the above (and because the
  provider itself delivers at least once), ``write`` may see a reply it already
  stored; it must leave exactly one row per ``reply_id`` (for example an
  upsert, ``ON CONFLICT DO NOTHING``, or a deduplicating table engine). The
  first stored version wins.
* **Errors.** Raise :class:`~sms_replies.errors.SinkWriteError` with
  ``retriable=True`` for outages (connection refused, timeout, lock): the runner
  retries the same batch with exponential backoff, forever, without committing.
  Raise it with ``retriable=False`` when the store rejects the data itself: the
  runner splits the batch to isolate the offending replies, sends them to the
  dead-letter topic with the error, and writes the rest. Convert driver errors
  at this boundary; anything else escaping ``write`` is treated as retriable.
* **Lifecycle.** ``setup()`` (create or migrate tables) runs once before the
  first batch, ``close()`` once at the end; ``close`` must be idempotent. Use the
  sink as ``async with sink:`` to get both.
"""

from __future__ import annotations

import abc
from collections.abc import Sequence
from pathlib import Path
from types import TracebackType
from typing import ClassVar, Protocol, Self

from pydantic import SecretStr

from sms_replies.records import Reply


class SinkContext(Protocol):
    """What a sink may read of the process configuration in ``from_settings``.

    The process passes its ``Settings`` (which has these and more); a sink reads
    only these, and its own settings (its own pydantic-settings class and
    ``SMS_REPLIES_<SINK>_`` prefix) for the rest.
    """

    @property
    def data_dir(self) -> Path:
        """Local state directory: default home of a file-based store."""
        ...

    @property
    def duckdb_path(self) -> Path:
        """The DuckDB store (``<data_dir>/replies.duckdb``)."""
        ...

    @property
    def postgres_dsn(self) -> SecretStr | None:
        """The PostgreSQL DSN of the process settings (the postgres sink's fallback)."""
        ...

    @property
    def resubscribe_keywords(self) -> Sequence[str]:
        """Keywords that take a sender off the opt-out list (the stores' ``optouts`` table)."""
        ...


class Sink(abc.ABC):
    """Base class of every sink; implement :meth:`write`, optionally ``setup``/``close``."""

    #: Name used in ``SMS_REPLIES_SINKS`` and in the consumer group id.
    name: ClassVar[str]

    @classmethod
    @abc.abstractmethod
    def from_settings(cls, settings: SinkContext) -> Self:
        """Build the sink from what it needs of the process settings (and its own settings)."""

    async def setup(self) -> None:  # noqa: B027 - optional hook
        """Create or migrate the destination tables. Called once before ``write``."""

    @abc.abstractmethod
    async def write(self, batch: Sequence[Reply]) -> None:
        """Store every reply of ``batch`` exactly once (idempotent by ``reply_id``)."""

    async def close(self) -> None:  # noqa: B027 - optional hook
        """Release connections. Idempotent."""

    async def __aenter__(self) -> Self:
        await self.setup()
        return self

    async def __aexit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        await self.close()
