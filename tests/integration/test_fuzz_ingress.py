"""A short fuzz run (2,000 hostile requests) against a real ingress process.

The full run is ``python -m benchmarks.fuzz_ingress --requests 100000``.
"""

from __future__ import annotations

import time

import pytest
from benchmarks.fuzz_ingress import run

from sms_replies.broker.embedded import EmbeddedBroker

pytestmark = pytest.mark.integration


@pytest.mark.timeout(90)
def test_two_thousand_hostile_requests_never_break_the_ingress(broker: EmbeddedBroker) -> None:
    started = time.monotonic()
    figures = run(2_000, seed=11, concurrency=32, bootstrap=broker.bootstrap)
    assert figures["requests"] == 2_000
    assert figures["failures"] == []
    assert figures["ingress_alive"]
    assert figures["valid_after"] == 200
    assert not [s for s in figures["statuses"] if s.startswith("5") and s != "503"]
    assert figures["leaks"] == 0
    # Every callback answered 200 is on the raw topic (grouped or not), with the
    # valid callback sent after the run; of the "path" kind, some 200s are other pages.
    answered = {kind: counts.get("200", 0) for kind, counts in figures["by_kind"].items()}
    callbacks = sum(n for kind, n in answered.items() if kind != "path") + 1
    assert callbacks <= figures["accepted_on_raw_topic"] <= callbacks + answered.get("path", 0)
    # Every JSON refusal the clients saw is in the rejects topic, but 404/405
    # beyond the audit rate (burst 20, then 1/s), which are only counted.
    assert figures["app_rejects_answered"] > 1_000
    assert 0 < figures["rate_limited"] <= figures["router_rejects_answered"]
    assert figures["audited"] + figures["rate_limited"] >= figures["app_rejects_answered"]
    assert time.monotonic() - started < 60
