"""The producer's partitioner picks the partition the Java client and kafka-python pick."""

from __future__ import annotations

import random
import uuid

import pytest
from kafka.partitioner.default import DefaultPartitioner
from kafka.partitioner.default import murmur2 as kafka_murmur2

from producers.partitioner import KeyHashPartitioner, murmur2

pytestmark = pytest.mark.timeout(60)


class Cluster:
    """The two reads a partitioner makes of kafka-python's ClusterMetadata."""

    def __init__(self, partitions, available=None):
        self._all = set(partitions)
        self._available = set(self._all if available is None else available)

    def topics(self):
        return {"t"}

    def partitions_for_topic(self, topic):
        return set(self._all) if topic == "t" else None

    def available_partitions_for_topic(self, topic):
        return set(self._available) if topic == "t" else None


def test_murmur2_equals_kafka_pythons_for_keys_of_every_length():
    rng = random.Random(7)
    keys = [bytes(rng.randrange(256) for _ in range(n)) for n in range(0, 70) for _ in range(20)]
    keys += [str(uuid.uuid4()).encode() for _ in range(500)] + [b"\xff" * 37, b"\x00" * 5]
    assert [murmur2(k) for k in keys] == [kafka_murmur2(k) for k in keys]


def test_known_java_values():
    # org.apache.kafka.common.utils.UtilsTest#testMurmur2 (signed ints there)
    cases = {b"21": -973932308, b"foobar": -790332482, b"a-little-bit-long-string": -985981536,
             b"a-little-bit-longer-string": -1486304829,
             b"lkjh234lh9fiuh90y23oiuhsafujhadof229phr9h19h89h8": -58897971,
             b"abc": 479470107}
    for key, java in cases.items():
        assert murmur2(key) == java & 0xFFFFFFFF, key


@pytest.mark.parametrize("n", [1, 3, 4, 12])
def test_a_keyed_record_goes_where_the_default_partitioner_sends_it(n):
    cluster = Cluster(range(n))
    ours, theirs = KeyHashPartitioner(), DefaultPartitioner()
    for _ in range(300):
        key = str(uuid.uuid4()).encode()
        assert ours.partition("t", None, key, None, None, cluster) == \
            theirs.partition("t", None, key, None, None, cluster)


def test_a_record_without_key_goes_to_an_available_partition_and_an_unknown_topic_fails():
    cluster = Cluster(range(4), available=[2, 3])
    picks = {KeyHashPartitioner().partition("t", None, None, None, None, cluster)
             for _ in range(200)}
    assert picks == {2, 3}
    with pytest.raises(ValueError, match="not found"):
        KeyHashPartitioner().partition("other", None, b"k", None, None, cluster)
