"""The murmur2 partitioner of the ingress and the worker's producer puts every key where
aiokafka's (and Java's) does."""

from __future__ import annotations

from aiokafka.partitioner import DefaultPartitioner
from aiokafka.partitioner import murmur2 as aiokafka_murmur2
from hypothesis import given, settings
from hypothesis import strategies as st

from sms_replies.broker.partitioner import default_partitioner, murmur2, partition_of
from sms_replies.settings import Settings
from sms_replies.streams.app import faust_settings


@settings(max_examples=2000)
@given(st.binary(max_size=300))
def test_murmur2_is_aiokafka_s(key: bytes) -> None:
    assert murmur2(key) == aiokafka_murmur2(key)


@given(st.binary(max_size=64), st.integers(1, 64))
def test_same_partition_as_the_default_partitioner(key: bytes, count: int) -> None:
    partitions = list(range(count))
    assert default_partitioner(key, partitions, partitions) == DefaultPartitioner()(
        key, partitions, partitions
    )


# Kafka's own UtilsTest.testMurmur2 (signed 32-bit values of the Java client).
JAVA = {
    b"21": -973932308,
    b"foobar": -790332482,
    b"a-little-bit-long-string": -985981536,
    b"a-little-bit-longer-string": -1486304829,
    b"lkjh234lh9fiuh90y23oiuhsafujhadof229phr9h19h89h8": -58897971,
    b"abc": 479470107,
}


def test_the_java_client_s_values() -> None:
    for key, signed in JAVA.items():
        assert murmur2(key) == signed & 0xFFFFFFFF


def test_no_key_picks_an_available_partition() -> None:
    assert default_partitioner(None, [0, 1, 2], [2]) == 2
    assert default_partitioner(None, [0, 1, 2], []) in (0, 1, 2)


def test_the_worker_s_producer_partitions_with_it() -> None:
    """Replies keyed by reply_id land where aiokafka's default partitioner put them."""
    assert (
        faust_settings(Settings.load(kafka_bootstrap="localhost:9092"))["producer_partitioner"]
        is default_partitioner
    )


@given(st.binary(max_size=64), st.integers(1, 64))
def test_the_worker_s_partition_of_a_key_is_aiokafka_s(key: bytes, count: int) -> None:
    assert partition_of(key, count) == (aiokafka_murmur2(key) & 0x7FFFFFFF) % count
