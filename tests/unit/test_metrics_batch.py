"""observe_many adds to a histogram what observe would, one call per amount (metrics)."""

from __future__ import annotations

from hypothesis import given
from hypothesis import strategies as st
from prometheus_client import CollectorRegistry, Histogram

from sms_replies.metrics import observe_many

BUCKETS = (0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5)


def samples(histogram: Histogram) -> dict[str, float]:
    ((metric,),) = [list(histogram.collect())]
    return {
        f"{s.name}{sorted(s.labels.items())}": s.value
        for s in metric.samples
        if "created" not in s.name
    }


@given(
    st.lists(
        st.one_of(
            st.floats(min_value=0, max_value=10, allow_nan=False),
            st.sampled_from(BUCKETS),  # on a bound: that bucket, as observe
        ),
        max_size=40,
    )
)
def test_observe_many_is_observe_for_each_amount(amounts: list[float]) -> None:
    one_by_one = Histogram("h", "h", buckets=BUCKETS, registry=CollectorRegistry())
    batched = Histogram("h", "h", buckets=BUCKETS, registry=CollectorRegistry())
    for amount in amounts:
        one_by_one.observe(amount)
    observe_many(batched, amounts)
    expected, got = samples(one_by_one), samples(batched)
    assert got.keys() == expected.keys()
    for name, value in expected.items():
        assert abs(got[name] - value) <= 1e-9 * max(1.0, abs(value)), name
