"""Re-seeding a fresh broker from the worker's files, against the real embedded broker."""

from __future__ import annotations

import pytest

from sms_replies.broker.partitioner import partition_of
from sms_replies.broker.reseed import reseed_worker_state
from sms_replies.errors import StateRecoveryError
from sms_replies.settings import Settings
from sms_replies.worker_state import (
    best_copies,
    changelog_topic,
    find_copies,
    partition_path,
    read_items,
    write_partition,
)
from tests.integration.conftest import consume

pytestmark = pytest.mark.integration


def keys_of(partition: int, count: int, partitions: int) -> list[bytes]:
    """``count`` keys the ingress would put on ``partition``."""
    keys: list[bytes] = []
    n = 0
    while len(keys) < count:
        key = f"33756781234|3361{n:07d}|7|2".encode()
        if partition_of(key, partitions) == partition:
            keys.append(key)
        n += 1
    return keys


async def test_the_freshest_copies_are_reseeded_and_replace_the_local_state(
    settings: Settings,
) -> None:
    n = settings.topic_partitions
    root = settings.data_dir / "worker"
    fresh = {k: b"state-" + k for k in keys_of(1, 300, n)}
    stale = dict(list(fresh.items())[:10])
    other = {k: b"other-" + k for k in keys_of(2, 5, n)}
    write_partition(partition_path(root / "0", 1), stale, offset=40)  # a lagging standby
    write_partition(partition_path(root / "1", 1), fresh, offset=900)
    write_partition(partition_path(root / "1", 2), other, offset=7)
    write_partition(partition_path(root / "0", 3), {}, offset=55)  # nothing left in it

    reseeded = await reseed_worker_state(settings)

    assert reseeded.keys == len(fresh) + len(other)
    topic = changelog_topic(settings.worker_id)
    records = await consume(settings.bootstrap, topic, len(fresh) + len(other))
    assert sorted(records) == sorted([*fresh.values(), *other.values()])
    copies = best_copies(find_copies(root))
    assert sorted(copies) == [1, 2]
    # Marked as having applied the new changelog: offsets 0..len-1 of each partition.
    assert (copies[1].offset, copies[2].offset) == (len(fresh) - 1, len(other) - 1)
    assert dict(read_items(copies[1].path)) == fresh
    assert dict(read_items(copies[2].path)) == other


async def test_a_broker_that_is_not_fresh_is_refused_and_the_files_kept(
    settings: Settings,
) -> None:
    root = settings.data_dir / "worker"
    entries = {k: b"v" for k in keys_of(0, 3, settings.topic_partitions)}
    write_partition(partition_path(root / "0", 0), entries, offset=12)
    await reseed_worker_state(settings)
    before = [(c.path, c.offset) for c in find_copies(root)]
    with pytest.raises(StateRecoveryError, match="not fresh"):
        await reseed_worker_state(settings)
    assert [(c.path, c.offset) for c in find_copies(root)] == before
