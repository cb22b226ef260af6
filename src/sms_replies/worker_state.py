"""The worker's local table files, read and written offline (no Faust, no broker).

Faust keeps each partition of the ``pending`` table in its own RocksDB
database, ``<data_dir>/worker/<i>/v1/tables/pending-<p>.db`` (worker process
``i``: its active partitions and its standby copies), with the changelog offset
it last applied under :data:`OFFSET_KEY`. Writes go through RocksDB's
write-ahead log, so what the worker wrote survives a SIGKILL of the worker (not
a crash of the machine's kernel, which may lose the last unsynced writes).

:mod:`sms_replies.broker.reseed` uses this to rebuild a fresh embedded broker's
changelog from these files.
"""

from __future__ import annotations

import contextlib
import re
from collections.abc import Iterable, Iterator, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import cast

import rocksdict

from sms_replies.errors import StateRecoveryError

#: The reassembly table (streams.app) and where Faust keeps its partitions.
TABLE = "pending"
#: Faust's RocksDB store keeps the last applied changelog offset under this key.
OFFSET_KEY = b"__faust\0offset__"

_PARTITION_DB = re.compile(rf"^{TABLE}-(\d+)\.db$")


def tables_dir(worker_dir: Path) -> Path:
    """Faust's ``tabledir`` for a worker whose ``datadir`` is ``worker_dir``."""
    return worker_dir / "v1" / "tables"


def partition_path(worker_dir: Path, partition: int) -> Path:
    return tables_dir(worker_dir) / f"{TABLE}-{partition}.db"


def changelog_topic(worker_id: str) -> str:
    """The table's changelog topic, as Faust names it (``<app id>-<table>-changelog``)."""
    return f"{worker_id}-{TABLE}-changelog"


@dataclass(frozen=True, slots=True)
class TableCopy:
    """One worker's copy of one table partition (its active one, or a standby)."""

    path: Path
    partition: int
    offset: int | None  # last changelog offset applied; None: never persisted


def best_copies(copies: Iterable[TableCopy]) -> dict[int, TableCopy]:
    """Per partition, the copy that applied the most of the changelog.

    Offsets of one broker's changelog are comparable across copies; a standby
    may lag its active. On a tie the first copy wins.
    """
    best: dict[int, TableCopy] = {}
    for copy in copies:
        held = best.get(copy.partition)
        if held is None or _rank(copy) > _rank(held):
            best[copy.partition] = copy
    return best


def _rank(copy: TableCopy) -> int:
    return -1 if copy.offset is None else copy.offset


def _options() -> rocksdict.Options:
    # raw_mode: keys and values are plain bytes, as Faust's store writes them.
    options = rocksdict.Options(raw_mode=True)
    options.create_if_missing(True)
    return options


@contextlib.contextmanager
def _open(path: Path, *, read_only: bool) -> Iterator[rocksdict.Rdict]:
    access = rocksdict.AccessType.read_only() if read_only else rocksdict.AccessType.read_write()
    try:
        db = rocksdict.Rdict(str(path), options=_options(), access_type=access)
    except Exception as exc:  # rocksdict raises plain Exceptions (IO error, corruption)
        raise StateRecoveryError(f"cannot open the worker's state {path}: {exc}") from None
    try:
        yield db
    finally:
        db.close()


def find_copies(worker_root: Path) -> list[TableCopy]:
    """Every copy of every table partition under ``<data_dir>/worker``, in a stable order."""
    copies: list[TableCopy] = []
    for worker_dir in sorted(p for p in worker_root.glob("*") if p.is_dir()):
        tables = tables_dir(worker_dir)
        for path in sorted(tables.glob(f"{TABLE}-*.db")) if tables.is_dir() else ():
            match = _PARTITION_DB.match(path.name)
            if match is not None:
                copies.append(TableCopy(path, int(match.group(1)), read_offset(path)))
    return copies


def read_offset(path: Path) -> int | None:
    with _open(path, read_only=True) as db:
        value = db.get(OFFSET_KEY)
    return None if value is None else int(value)


def read_items(path: Path) -> list[tuple[bytes, bytes]]:
    """The table entries of one copy (the offset bookkeeping left out)."""
    with _open(path, read_only=True) as db:
        # raw_mode: every key and value is bytes (the stubs type any picklable value)
        return [(cast(bytes, k), v) for k, v in db.items() if k != OFFSET_KEY]


def write_partition(path: Path, items: Mapping[bytes, bytes], offset: int) -> None:
    """A new copy holding ``items``, as having applied the changelog up to ``offset``.

    Synced to disk before it returns.
    """
    path.parent.mkdir(parents=True, exist_ok=True)
    with _open(path, read_only=False) as db:
        batch = rocksdict.WriteBatch(raw_mode=True)
        for key, value in items.items():
            batch.put(key, value)
        batch.put(OFFSET_KEY, str(offset).encode())
        db.write(batch)
        db.flush(True)
        db.flush_wal(True)
