"""Reads a range of offsets straight from Kafka, outside the consumer group.

After a restore the engine must process every message from the snapshot's offsets on,
exactly once. Faust resumes from the group's committed offsets, which may lie past the
snapshot; the messages in between are read here and processed before the stream goes on.
"""

from __future__ import annotations

from typing import Any

from aiokafka import AIOKafkaConsumer, TopicPartition


async def read_range(bootstrap: str, topic: str, partition: int, start: int, end: int) -> list[Any]:
    """Records with start <= offset < end, in offset order."""
    if end <= start:
        return []
    tp = TopicPartition(topic, partition)
    consumer = AIOKafkaConsumer(bootstrap_servers=bootstrap, enable_auto_commit=False, group_id=None)
    await consumer.start()
    try:
        consumer.assign([tp])
        consumer.seek(tp, start)
        records: list[Any] = []
        while not records or records[-1].offset < end - 1:
            batch = await consumer.getmany(tp, timeout_ms=1000)
            fetched = batch.get(tp, [])
            if not fetched:
                raise RuntimeError(f"{topic}[{partition}] offsets {start}..{end - 1} could not be read")
            records.extend(r for r in fetched if r.offset < end)
        return records
    finally:
        await consumer.stop()
