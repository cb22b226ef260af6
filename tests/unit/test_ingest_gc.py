"""An ingress process collects garbage less often (ingest.server.tune_gc)."""

from __future__ import annotations

import gc
from collections.abc import Iterator

import pytest

from sms_replies.ingest.server import GC_THRESHOLD, tune_gc


@pytest.fixture
def restored_gc() -> Iterator[None]:
    threshold = gc.get_threshold()
    yield
    gc.unfreeze()
    gc.set_threshold(*threshold)


@pytest.mark.usefixtures("restored_gc")
def test_start_up_objects_are_frozen_and_the_young_generation_waits_longer() -> None:
    _, middle, old = gc.get_threshold()
    tune_gc()
    assert gc.get_threshold() == (GC_THRESHOLD, middle, old)  # the older ones as they were
    assert gc.get_freeze_count() > 0


@pytest.mark.usefixtures("restored_gc")
def test_cycles_are_still_collected() -> None:
    tune_gc()

    class Node:
        other: object = None

    first, second = Node(), Node()
    first.other, second.other = second, first
    del first, second
    assert gc.collect() >= 2
