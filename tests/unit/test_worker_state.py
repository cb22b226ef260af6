"""Offline access to the worker's table files, and the swap of a re-seeded state."""

from __future__ import annotations

import signal
import subprocess
import sys
from pathlib import Path

import pytest

from sms_replies.broker.reseed import _finish_swap, _replace_local_state, _swap_paths
from sms_replies.errors import StateRecoveryError
from sms_replies.settings import Settings
from sms_replies.streams.app import create_app
from sms_replies.worker_state import (
    TableCopy,
    best_copies,
    changelog_topic,
    find_copies,
    partition_path,
    read_items,
    read_offset,
    write_partition,
)


def test_paths_and_topic_are_the_ones_faust_uses(tmp_path: Path) -> None:
    settings = Settings.load(kafka_bootstrap="127.0.0.1:1", data_dir=tmp_path, worker_index=1)
    table = create_app(settings).tables["pending"]
    assert partition_path(settings.worker_state_dir, 5) == table.data.partition_path(5)
    assert changelog_topic(settings.worker_id) == table.changelog_topic.get_topic_name()


def test_the_copy_that_applied_most_of_the_changelog_wins(tmp_path: Path) -> None:
    stale = TableCopy(tmp_path / "a", 0, 10)
    fresh = TableCopy(tmp_path / "b", 0, 12)
    never = TableCopy(tmp_path / "c", 1, None)
    other = TableCopy(tmp_path / "d", 1, 0)
    assert best_copies([stale, fresh, never, other]) == {0: fresh, 1: other}
    assert best_copies([fresh, TableCopy(tmp_path / "e", 0, 12)]) == {0: fresh}


def test_copies_are_written_and_read_back(tmp_path: Path) -> None:
    root = tmp_path / "worker"
    write_partition(partition_path(root / "0", 3), {b"k1": b"v1", b"k2": b"v2"}, offset=7)
    write_partition(partition_path(root / "1", 3), {b"k1": b"old"}, offset=4)
    write_partition(partition_path(root / "1", 0), {}, offset=2)
    copies = find_copies(root)
    assert [(c.path.parent.parent.parent.name, c.partition, c.offset) for c in copies] == [
        ("0", 3, 7),
        ("1", 0, 2),
        ("1", 3, 4),
    ]
    best = best_copies(copies)[3]
    assert read_offset(best.path) == 7
    assert sorted(read_items(best.path)) == [(b"k1", b"v1"), (b"k2", b"v2")]


def test_local_state_is_replaced_whole(tmp_path: Path) -> None:
    root = tmp_path / "worker"
    write_partition(partition_path(root / "1", 2), {b"old": b"x"}, offset=900)
    _replace_local_state(root, {2: {b"k": b"v"}, 3: {b"j": b"w"}}, {2: 0, 3: 5}, 2)
    copies = find_copies(root)
    assert [(c.path.parent.parent.parent.name, c.partition, c.offset) for c in copies] == [
        ("0", 2, 0),
        ("1", 3, 5),
    ]
    assert not any(p.exists() for p in _swap_paths(root))


@pytest.mark.parametrize("cut", ["building", "between renames"])
def test_an_interrupted_swap_is_finished_or_undone(tmp_path: Path, cut: str) -> None:
    root = tmp_path / "worker"
    staged, replaced = _swap_paths(root)
    write_partition(partition_path(root / "0", 0), {b"old": b"x"}, offset=9)
    write_partition(partition_path(staged / "0", 0), {b"new": b"y"}, offset=0)
    if cut == "between renames":
        root.rename(replaced)
    _finish_swap(root)
    (copy,) = find_copies(root)
    want = [(b"old", b"x")] if cut == "building" else [(b"new", b"y")]
    assert read_items(copy.path) == want
    assert not staged.exists()
    assert not replaced.exists()


_WRITE_THEN_DIE = """
import os, signal, sys
from faust.stores.rocksdb import RocksDBOptions
db = RocksDBOptions().open(sys.argv[1])  # as Faust's store opens a table partition
for i in range(100):
    db.put(b"k%d" % i, b"v%d" % i)  # as Faust's store and streams.batch write
os.kill(os.getpid(), signal.SIGKILL)
"""


def test_what_the_worker_wrote_survives_its_sigkill(tmp_path: Path) -> None:
    # RocksDB's write-ahead log is on (Faust does not turn it off): no close, no flush needed.
    path = partition_path(tmp_path / "worker" / "0", 1)
    path.parent.mkdir(parents=True)
    died = subprocess.run([sys.executable, "-c", _WRITE_THEN_DIE, str(path)], check=False)
    assert died.returncode == -signal.SIGKILL
    assert len(read_items(path)) == 100
    assert dict(read_items(path))[b"k99"] == b"v99"


def test_an_unreadable_copy_is_a_clear_error(tmp_path: Path) -> None:
    path = partition_path(tmp_path / "worker" / "0", 0)
    write_partition(path, {b"k": b"v"}, offset=1)
    (path / "CURRENT").write_text("MANIFEST-999999\n")  # points at a manifest that is gone
    with pytest.raises(StateRecoveryError, match="cannot open the worker's state"):
        read_offset(path)
