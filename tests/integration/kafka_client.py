"""Plain aiokafka helpers, the way any user's client talks to the engine's topics."""

from __future__ import annotations

import asyncio
from typing import Any

import orjson
from aiokafka import AIOKafkaConsumer, AIOKafkaProducer


async def produce(bootstrap: str, topic: str, messages: list[tuple[bytes | None, bytes]]) -> None:
    producer = AIOKafkaProducer(bootstrap_servers=bootstrap, acks="all", linger_ms=5)
    await producer.start()
    try:
        for key, value in messages:
            await producer.send(topic, value, key=key)
        await producer.flush()
    finally:
        await producer.stop()


def event(event_id: str, entity_id: str, features: dict[str, Any], ts: float = 1_700_000_000.0, **extra: Any) -> bytes:
    return orjson.dumps({"event_id": event_id, "entity_id": entity_id, "ts": ts, "features": features, **extra})


async def consume_all(bootstrap: str, topic: str, expected: int, timeout: float = 30.0) -> list[Any]:
    """Reads a topic from the start until `expected` messages came (or the timeout)."""
    consumer = AIOKafkaConsumer(topic, bootstrap_servers=bootstrap, auto_offset_reset="earliest", enable_auto_commit=False)
    await consumer.start()
    records: list[Any] = []
    try:
        deadline = asyncio.get_running_loop().time() + timeout
        while len(records) < expected and asyncio.get_running_loop().time() < deadline:
            batch = await consumer.getmany(timeout_ms=500)
            for messages in batch.values():
                records.extend(messages)
    finally:
        await consumer.stop()
    return records


async def end_offset(bootstrap: str, topic: str, partition: int = 0) -> int:
    """How many records a partition holds (its end offset); 0 while the topic does not exist."""
    from aiokafka import TopicPartition

    consumer = AIOKafkaConsumer(bootstrap_servers=bootstrap, enable_auto_commit=False, group_id=None)
    await consumer.start()
    try:
        tp = TopicPartition(topic, partition)
        if consumer.partitions_for_topic(topic) is None:
            await consumer._client.force_metadata_update()
        if not consumer.partitions_for_topic(topic):
            return 0
        return (await consumer.end_offsets([tp]))[tp]
    finally:
        await consumer.stop()


def examples_learned(bootstrap: str, settings) -> int:
    """Examples the learner has logged (one per label learned), from outside any process."""
    return asyncio.run(end_offset(bootstrap, settings.examples_topic))
