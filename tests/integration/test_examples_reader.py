"""The learner's reader of the examples topic, on the real broker: every record once, in
order, from the learner's offset; a replay stops where the topic ended when it began; an
offset retention has removed starts at what is left."""

from __future__ import annotations

import asyncio
import uuid
from collections.abc import AsyncIterator, Iterator
from contextlib import contextmanager

import pytest
from aiokafka import AIOKafkaProducer, TopicPartition
from aiokafka.admin import AIOKafkaAdminClient, RecordsToDelete

from engine.harness import KAFKA_BOOTSTRAP, create_topics, delete_topics
from streams.examples_reader import ExamplesReader

pytestmark = pytest.mark.integration

RECORDS = 10


@pytest.fixture
async def topic() -> AsyncIterator[str]:
    """A topic of its own holding RECORDS records, example-0 to example-9; deleted after."""
    name = f"examples-reader-{uuid.uuid4().hex[:8]}"
    await create_topics(KAFKA_BOOTSTRAP, [name])
    producer = AIOKafkaProducer(bootstrap_servers=KAFKA_BOOTSTRAP)
    await producer.start()
    try:
        for i in range(RECORDS):
            await producer.send(name, f"example-{i}".encode(), partition=0)
        await producer.flush()
    finally:
        await producer.stop()
    yield name
    await delete_topics(KAFKA_BOOTSTRAP, [name])


@contextmanager
def reader_of(topic: str, offset: int, max_records: int = 100) -> Iterator[ExamplesReader]:
    reader = ExamplesReader(KAFKA_BOOTSTRAP, topic, offset, max_records)
    try:
        yield reader
    finally:
        reader.close()


async def _read_all(reader: ExamplesReader, before: int | None = None) -> list[tuple[list[bytes], int]]:
    fetches = []
    while True:
        values, after = await reader.fetch(timeout=2.0, before=before)
        if not values:
            return fetches
        fetches.append((values, after))


def _values(numbers: range) -> list[bytes]:
    return [f"example-{i}".encode() for i in numbers]


def _read(fetches: list[tuple[list[bytes], int]]) -> list[bytes]:
    return [value for values, _ in fetches for value in values]


async def test_reads_every_record_once_in_order_from_the_offset_a_fetch_at_a_time(topic):
    with reader_of(topic, offset=3, max_records=4) as reader:
        assert await asyncio.to_thread(reader.bounds) == (0, RECORDS)
        fetches = await _read_all(reader)
    assert _read(fetches) == _values(range(3, RECORDS))
    assert all(len(values) <= 4 for values, _ in fetches)
    assert fetches[-1][1] == RECORDS  # the offset to resume from: after the last record read


async def test_a_replay_stops_before_the_end_it_was_given(topic):
    with reader_of(topic, offset=0) as reader:
        fetches = await _read_all(reader, before=6)
    assert _read(fetches) == _values(range(6))
    assert fetches[-1][1] == 6


async def test_an_offset_retention_removed_starts_at_the_oldest_record_left(topic):
    admin = AIOKafkaAdminClient(bootstrap_servers=KAFKA_BOOTSTRAP)
    await admin.start()
    try:
        await admin.delete_records({TopicPartition(topic, 0): RecordsToDelete(before_offset=7)}, timeout_ms=10_000)
    finally:
        await admin.close()
    with reader_of(topic, offset=2) as reader:
        assert await asyncio.to_thread(reader.bounds) == (7, RECORDS)
        fetches = await _read_all(reader)
    assert _read(fetches) == _values(range(7, RECORDS))


async def test_a_fetch_hands_over_what_has_arrived_without_waiting_for_a_whole_batch(topic):
    # A learner keeping up with the stream finds a few records a fetch: it must not wait out
    # the timeout for a batch that is not coming (librdkafka's consume would).
    timeout = 30.0
    with reader_of(topic, offset=0, max_records=1000) as reader:
        started = asyncio.get_running_loop().time()
        values, after = await reader.fetch(timeout=timeout)
        waited = asyncio.get_running_loop().time() - started
    assert values and values == _values(range(len(values)))
    assert after == len(values)
    assert waited < timeout / 2
