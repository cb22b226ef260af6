"""The fault-injection suite, short form: never lose, never double, whatever fails.

The full form is ``python -m tests.faults --callbacks 5000`` (docs/faults.md).
"""

from __future__ import annotations

from pathlib import Path

import pytest

from tests.faults.__main__ import report
from tests.faults.harness import FAULT_KINDS, run

pytestmark = [pytest.mark.integration, pytest.mark.faults]


@pytest.mark.timeout(300)
def test_store_exact_under_kills_broker_cuts_and_store_lock(tmp_path: Path) -> None:
    figures = run(
        1000,
        seed=20250310,
        rate=40.0,
        fault_gap=(0.5, 2.0),
        quiescence_timeout=150.0,
        work_dir=tmp_path,
    )
    assert figures["ok"], report(figures)
    assert all(figures["faults"][kind] >= 1 for kind in FAULT_KINDS), figures["faults"]
    assert figures["store"]["rows"] == figures["replies_expected"]
