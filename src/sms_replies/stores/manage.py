"""Data management in every store: retention and erasure, so that the bytes are gone.

Library API (``sms-replies retention`` / ``erase`` are the thin CLI over it,
:mod:`sms_replies.analytics.privacy_cli`):

- :class:`Selection` (:mod:`.selection`): the replies to delete: by sender(s),
  received before a time, or of senders inactive since a time.
- :class:`Stores`: which stores to reach.
- one function per store (:mod:`.deletes`): :func:`delete_duckdb`,
  :func:`delete_postgres`, :func:`delete_clickhouse`, :func:`delete_parquet`
  (count with ``dry_run``);
  :func:`delete_everywhere`, :func:`apply_retention`, :func:`apply_policy`,
  :func:`erase_sender` over the configured ones; :func:`kept_optouts` counts the
  opt-outs an erasure keeps.

How each store gets rid of the bytes:

- DuckDB: DELETE, then the database is copied into a fresh file that replaces
  it (DuckDB keeps freed blocks, and CHECKPOINT does not clear them). A running
  DuckDB sink lends the file meanwhile (:func:`~sms_replies.stores.duckdb_endpoint.borrowed`).
- PostgreSQL: DELETE, then ``VACUUM FULL`` (a plain VACUUM only marks the space
  reusable).
- ClickHouse: ``ALTER TABLE … DELETE``, a mutation that rewrites the parts
  holding the rows; waited for. The server removes the replaced parts after its
  ``old_parts_lifetime`` (8 min by default).
- Parquet: each part holding selected rows is rewritten without them
  (atomically, under the same name) or removed.

**The opt-out list.** The ``optouts`` rows of the selection go with the
replies when they say ``opted_in``; ``opted_out`` rows stay (the stop-list:
the legal duty to honour an objection outlives the replies; see
``docs/analytics.md``, privacy), unless the selection says ``forget_optouts``. For a
time selection, an ``opted_in`` row goes when the reply that decided it is
older than the cutoff (retention ``--days``), or with its sender (``--policy cnil``).
"""

from __future__ import annotations

import asyncio
from datetime import UTC, datetime, timedelta
from functools import partial
from typing import Final

from sms_replies.privacy import sender_forms
from sms_replies.stores.deletes import (
    clickhouse_opted_out,
    delete_clickhouse,
    delete_duckdb,
    delete_parquet,
    delete_postgres,
    duckdb_opted_out,
    postgres_opted_out,
)
from sms_replies.stores.selection import DEFAULT_TIMEOUT, PrivacyStoreError, Selection, Stores

__all__ = [
    "CNIL_YEARS",
    "DEFAULT_TIMEOUT",
    "POLICIES",
    "PrivacyStoreError",
    "Selection",
    "Stores",
    "apply_policy",
    "apply_retention",
    "delete_clickhouse",
    "delete_duckdb",
    "delete_everywhere",
    "delete_parquet",
    "delete_postgres",
    "erase_sender",
    "kept_optouts",
    "retention_cutoff",
    "years_before",
]

#: The CNIL's rule: a prospect's data is kept 3 years after the last contact.
CNIL_YEARS: Final = 3
POLICIES: Final = ("cnil",)


# -- every configured store -----------------------------------------------------------


async def delete_everywhere(
    stores: Stores, selection: Selection, *, dry_run: bool = False
) -> dict[str, int | None]:
    """Replies deleted per store name (``None``: that store has no file yet)."""
    counts: dict[str, int | None] = {}
    if stores.duckdb_path is not None:
        counts["duckdb"] = await asyncio.to_thread(
            delete_duckdb, stores.duckdb_path, selection, timeout=stores.timeout, dry_run=dry_run
        )
    if stores.postgres_dsn is not None:
        counts["postgres"] = await delete_postgres(
            stores.postgres_dsn,
            stores.postgres_schema,
            selection,
            command_timeout=stores.timeout,
            dry_run=dry_run,
        )
    if stores.reaches_clickhouse:
        counts["clickhouse"] = await asyncio.to_thread(
            partial(
                delete_clickhouse,
                selection,
                settings=stores.clickhouse_settings,
                timeout=stores.timeout,
                dry_run=dry_run,
            )
        )
    if stores.parquet_dir is not None:
        counts["parquet"] = await asyncio.to_thread(
            delete_parquet, stores.parquet_dir, selection, dry_run=dry_run
        )
    return counts


def retention_cutoff(days: int, now: datetime | None = None) -> datetime:
    if days < 1:
        raise ValueError("days must be at least 1")
    return (now or datetime.now(UTC)) - timedelta(days=days)


def years_before(now: datetime, years: int) -> datetime:
    """The same date ``years`` earlier (29 February: the 28th)."""
    try:
        return now.replace(year=now.year - years)
    except ValueError:
        return now.replace(year=now.year - years, day=28)


async def apply_retention(
    stores: Stores, days: int, *, now: datetime | None = None, dry_run: bool = False
) -> dict[str, int | None]:
    """Delete the replies received more than ``days`` days before ``now`` (default: now)."""
    selection = Selection(before=retention_cutoff(days, now))
    return await delete_everywhere(stores, selection, dry_run=dry_run)


async def apply_policy(
    stores: Stores, policy: str, *, now: datetime | None = None, dry_run: bool = False
) -> dict[str, int | None]:
    """``cnil``: every reply of the numbers whose last reply is more than 3 years old."""
    if policy != "cnil":
        raise ValueError(f"unknown retention policy {policy!r}")
    cutoff = years_before(now or datetime.now(UTC), CNIL_YEARS)
    return await delete_everywhere(stores, Selection(inactive_before=cutoff), dry_run=dry_run)


async def erase_sender(
    stores: Stores,
    number: str,
    *,
    key: bytes | None = None,
    dry_run: bool = False,
    forget_optouts: bool = False,
) -> dict[str, int | None]:
    """Delete every reply of ``number`` (E.164), in clear and pseudonymised under ``key``.

    Its ``opted_out`` rows stay unless ``forget_optouts`` (see module docstring).
    """
    selection = Selection(senders=sender_forms(number, key), forget_optouts=forget_optouts)
    return await delete_everywhere(stores, selection, dry_run=dry_run)


# -- the opt-outs an erasure keeps ------------------------------------------------------


async def kept_optouts(stores: Stores, number: str, *, key: bytes | None = None) -> list[str]:
    """The database stores holding an ``opted_out`` row of ``number`` (clear or pseudonym)."""
    senders = list(sender_forms(number, key))
    path = stores.duckdb_path
    found = {
        "duckdb": path is not None
        and path.exists()
        and await asyncio.to_thread(duckdb_opted_out, path, senders, stores.timeout),
        "postgres": stores.postgres_dsn is not None
        and await postgres_opted_out(
            stores.postgres_dsn, stores.postgres_schema, senders, command_timeout=stores.timeout
        ),
        "clickhouse": stores.reaches_clickhouse
        and await asyncio.to_thread(clickhouse_opted_out, senders, stores.clickhouse_settings),
    }
    return [store for store, kept in found.items() if kept]
