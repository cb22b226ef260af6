"""Fixtures shared by every test layer."""

from __future__ import annotations

import itertools
from collections.abc import Callable

import pytest
from hypothesis import HealthCheck, settings

from sms_replies.records import Concat, RawPart

# One profile for every property test: no per-example deadline (CI machines
# are slow and shared; speed is measured in benchmarks, not in tests). Loading
# hypothesis here, before Faust, also avoids a CPython 3.11.7 parser bug
# ("AST constructor recursion depth mismatch") when its plugin imports it late.
settings.register_profile(
    "sms-replies", deadline=None, suppress_health_check=[HealthCheck.too_slow]
)
settings.load_profile("sms-replies")

_ids = itertools.count(1)


@pytest.fixture
def make_part() -> Callable[..., RawPart]:
    """Build RawPart records: make_part(part=1, total=2, ref=7) or make_part() for a single."""

    def build(
        *,
        part: int | None = None,
        total: int = 2,
        ref: int = 171,
        text: str | None = None,
        sender: str = "+33612345678",
        recipient: str = "+33756781234",
        message_id: str | None = None,
        received_at_ms: int = 1_700_000_000_000,
    ) -> RawPart:
        number = next(_ids)
        return RawPart(
            channel="long_number",
            sender=sender,
            recipient=recipient,
            text=text if text is not None else f"<{part or 0}>",
            provider_message_id=message_id or f"0200000{number:010d}",
            message_type="text",
            received_at_ms=received_at_ms,
            concat=Concat(ref=ref, total=total, part=part) if part is not None else None,
        )

    return build
