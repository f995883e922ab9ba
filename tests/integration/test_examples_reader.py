"""The learner's reader of the examples topic, on the real broker: every record once, in
order, from the learner's offset; a replay stops where the topic ended when it began; an
offset retention has removed starts at what is left."""

from __future__ import annotations

import asyncio
import uuid

import pytest
from aiokafka import AIOKafkaProducer, TopicPartition
from aiokafka.admin import AIOKafkaAdminClient, NewTopic, RecordsToDelete

from engine.harness import KAFKA_BOOTSTRAP, delete_topics
from streams.examples_reader import ExamplesReader

pytestmark = pytest.mark.integration


async def _topic_with(records: int) -> str:
    topic = f"examples-reader-{uuid.uuid4().hex[:8]}"
    admin = AIOKafkaAdminClient(bootstrap_servers=KAFKA_BOOTSTRAP)
    await admin.start()
    try:
        await admin.create_topics([NewTopic(topic, 1, 1)])
    finally:
        await admin.close()
    producer = AIOKafkaProducer(bootstrap_servers=KAFKA_BOOTSTRAP)
    await producer.start()
    try:
        for i in range(records):
            await producer.send(topic, f"example-{i}".encode(), partition=0)
        await producer.flush()
    finally:
        await producer.stop()
    return topic


async def _read_all(reader: ExamplesReader, before: int | None = None) -> list[tuple[list[bytes], int]]:
    fetches = []
    while True:
        values, after = await reader.fetch(timeout=2.0, before=before)
        if not values:
            return fetches
        fetches.append((values, after))


def _values(numbers: range) -> list[bytes]:
    return [f"example-{i}".encode() for i in numbers]


async def test_reads_every_record_once_in_order_from_the_offset_a_fetch_at_a_time():
    topic = await _topic_with(10)
    reader = ExamplesReader(KAFKA_BOOTSTRAP, topic, offset=3, max_records=4)
    try:
        assert await asyncio.to_thread(reader.bounds) == (0, 10)
        fetches = await _read_all(reader)
    finally:
        reader.close()
        await delete_topics(KAFKA_BOOTSTRAP, [topic])
    assert [values for values, _ in fetches for values in values] == _values(range(3, 10))
    assert all(len(values) <= 4 for values, _ in fetches)
    assert fetches[-1][1] == 10  # the offset to resume from: after the last record read


async def test_a_replay_stops_before_the_end_it_was_given():
    topic = await _topic_with(10)
    reader = ExamplesReader(KAFKA_BOOTSTRAP, topic, offset=0, max_records=100)
    try:
        fetches = await _read_all(reader, before=6)
    finally:
        reader.close()
        await delete_topics(KAFKA_BOOTSTRAP, [topic])
    assert [value for values, _ in fetches for value in values] == _values(range(6))
    assert fetches[-1][1] == 6


async def test_an_offset_retention_removed_starts_at_the_oldest_record_left():
    topic = await _topic_with(10)
    admin = AIOKafkaAdminClient(bootstrap_servers=KAFKA_BOOTSTRAP)
    await admin.start()
    try:
        await admin.delete_records({TopicPartition(topic, 0): RecordsToDelete(before_offset=7)}, timeout_ms=10_000)
    finally:
        await admin.close()
    reader = ExamplesReader(KAFKA_BOOTSTRAP, topic, offset=2, max_records=100)
    try:
        assert await asyncio.to_thread(reader.bounds) == (7, 10)
        fetches = await _read_all(reader)
    finally:
        reader.close()
        await delete_topics(KAFKA_BOOTSTRAP, [topic])
    assert [value for values, _ in fetches for value in values] == _values(range(7, 10))
