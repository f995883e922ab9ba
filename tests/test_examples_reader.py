"""The examples reader's offsets request, which librdkafka does not retry: asked again while
the broker cannot answer (a topic just created has no leader for a moment)."""

from __future__ import annotations

import confluent_kafka
import pytest

from streams import examples_reader
from streams.examples_reader import ExamplesReader


class FlakyConsumer:
    def __init__(self, failures: int) -> None:
        self.failures = failures
        self.asked = 0

    def get_watermark_offsets(self, partition: confluent_kafka.TopicPartition, timeout: float) -> tuple[int, int]:
        self.asked += 1
        if self.asked <= self.failures:
            not_leader = confluent_kafka.KafkaError(confluent_kafka.KafkaError.NOT_LEADER_FOR_PARTITION)
            raise confluent_kafka.KafkaException(not_leader)
        return 3, 10


def reader_over(consumer: FlakyConsumer) -> ExamplesReader:
    reader = ExamplesReader.__new__(ExamplesReader)
    reader.topic = "examples"
    reader._consumer = consumer  # type: ignore[assignment]
    return reader


def test_the_offsets_are_asked_again_until_the_partition_has_a_leader(monkeypatch):
    monkeypatch.setattr(examples_reader, "BOUNDS_RETRY_SECONDS", 0.001)
    consumer = FlakyConsumer(failures=3)
    assert reader_over(consumer).bounds(timeout=5) == (3, 10)
    assert consumer.asked == 4


def test_past_the_timeout_the_error_is_raised(monkeypatch):
    monkeypatch.setattr(examples_reader, "BOUNDS_RETRY_SECONDS", 0.001)
    with pytest.raises(confluent_kafka.KafkaException, match="NOT_LEADER_FOR_PARTITION"):
        reader_over(FlakyConsumer(failures=10**9)).bounds(timeout=0.05)
