"""The examples reader over stand-ins for librdkafka's consumer: its offsets request, which
librdkafka does not retry, asked again while the broker cannot answer (a topic just created
has no leader for a moment); its fetch, which waits for the first record only."""

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


def reader_over(consumer: object, max_records: int = 1000) -> ExamplesReader:
    reader = ExamplesReader.__new__(ExamplesReader)
    reader.topic = "examples"
    reader.max_records = max_records
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


class QueuedConsumer:
    """librdkafka's consume as it behaves: up to `num_messages` of what is queued, waiting
    for more until `timeout` when fewer are there (recorded, not waited here)."""

    def __init__(self, queued: int) -> None:
        self.queued = [Message(offset) for offset in range(queued)]
        self.calls: list[tuple[int, float]] = []

    def consume(self, num_messages: int, timeout: float) -> list[Message]:
        self.calls.append((num_messages, timeout))
        taken, self.queued = self.queued[:num_messages], self.queued[num_messages:]
        return taken


class Message:
    def __init__(self, offset: int) -> None:
        self._offset = offset

    def error(self) -> None:
        return None

    def offset(self) -> int:
        return self._offset

    def value(self) -> bytes:
        return f"example-{self._offset}".encode()


async def test_a_fetch_waits_for_the_first_record_only_then_takes_what_is_queued():
    consumer = QueuedConsumer(queued=5)
    reader = reader_over(consumer, max_records=1000)
    values, after = await reader.fetch(timeout=0.2)
    assert values == [f"example-{i}".encode() for i in range(5)]
    assert after == 5
    assert consumer.calls == [(1, 0.2), (999, 0)]


async def test_an_empty_fetch_asks_once():
    consumer = QueuedConsumer(queued=0)
    reader = reader_over(consumer, max_records=1000)
    assert await reader.fetch(timeout=0.2) == ([], -1)
    assert consumer.calls == [(1, 0.2)]
