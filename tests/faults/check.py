"""What the store holds, against what the provider's callbacks say it must hold."""

from __future__ import annotations

import time
from collections import Counter
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from sms_replies.analytics.store import StoreError, open_reader
from tests.faults.traffic import Expected

Key = tuple[str, tuple[str, ...], str]

_SQL = (
    "SELECT reply_id, sender, provider_message_ids, text, complete, parts_expected, "
    "parts_received, late FROM replies"
)


@dataclass(frozen=True, slots=True)
class Row:
    reply_id: str
    sender: str
    ids: tuple[str, ...]
    text: str
    complete: bool
    parts_expected: int
    parts_received: int
    late: bool | None

    @property
    def key(self) -> Key:
        return (self.sender, self.ids, self.text)


def read_store(path: Path, timeout: float = 30.0) -> list[Row] | None:
    """Every row, read-only, retrying while a writer holds the lock; None: no table yet."""
    deadline = time.monotonic() + timeout
    while True:
        if not path.exists():
            return None
        try:
            # Through the DuckDB sink while it owns the store, else the file itself.
            with open_reader(path, timeout=1.0) as con:
                rows = con.execute(_SQL).fetchall()
        except StoreError:
            if time.monotonic() > deadline:
                raise
            time.sleep(0.05)
            continue
        return [_row(r) for r in rows]


def _row(r: tuple[Any, ...]) -> Row:
    return Row(
        reply_id=r[0],
        sender=r[1],
        ids=tuple(r[2]),
        text=r[3],
        complete=bool(r[4]),
        parts_expected=int(r[5]),
        parts_received=int(r[6]),
        late=r[7],
    )


@dataclass
class Verdict:
    expected: int
    rows: int
    missing: list[Expected] = field(default_factory=list)
    doubled: list[tuple[Key, int]] = field(default_factory=list)
    extra: list[Row] = field(default_factory=list)
    malformed: list[Row] = field(default_factory=list)  # right key, wrong flags

    @property
    def ok(self) -> bool:
        return not (self.missing or self.doubled or self.extra or self.malformed)

    def summary(self, sample: int = 5) -> dict[str, Any]:
        return {
            "expected": self.expected,
            "rows": self.rows,
            "missing": len(self.missing),
            "doubled": len(self.doubled),
            "extra": len(self.extra),
            "malformed": len(self.malformed),
            "missing_sample": [repr(e) for e in self.missing[:sample]],
            "doubled_sample": [repr(d) for d in self.doubled[:sample]],
            "extra_sample": [repr(r) for r in self.extra[:sample]],
            "malformed_sample": [repr(r) for r in self.malformed[:sample]],
        }


def compare(expected: list[Expected], rows: list[Row]) -> Verdict:
    """Exactly one complete row per expected reply, nothing else."""
    wanted = {e.key: e for e in expected}
    assert len(wanted) == len(expected), "the workload holds two identical replies"
    counts = Counter(r.key for r in rows)
    verdict = Verdict(expected=len(expected), rows=len(rows))
    verdict.missing = [e for e in expected if counts[e.key] == 0]
    verdict.doubled = [(k, n) for k, n in counts.items() if n > 1 and k in wanted]
    for row in rows:
        target = wanted.get(row.key)
        if target is None:
            verdict.extra.append(row)
        elif not (
            row.complete
            and row.parts_expected == target.parts
            and row.parts_received == target.parts
            and not row.late
        ):
            verdict.malformed.append(row)
    return verdict
