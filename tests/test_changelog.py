"""Records sent as whole record batches (streams/changelog.py's send_records): in order, each
batch full before the next, each record whole, headers and all."""

from __future__ import annotations

import asyncio

from aiokafka.producer.message_accumulator import BatchBuilder
from aiokafka.record.memory_records import MemoryRecords

from streams.changelog import send_records


class SmallBatchesProducer:
    """Builds aiokafka's own batches, of at most `batch_size` bytes, and keeps what is sent."""

    def __init__(self, batch_size: int) -> None:
        self.batch_size = batch_size
        self.sent: list[BatchBuilder] = []

    def create_batch(self) -> BatchBuilder:
        return BatchBuilder(self.batch_size, 0)

    async def send_batch(self, batch: BatchBuilder, topic: str, *, partition: int) -> asyncio.Future:
        self.sent.append(batch)
        future = asyncio.get_running_loop().create_future()
        future.set_result(None)
        return future


def read_back(batch: BatchBuilder) -> list[tuple]:
    records = MemoryRecords(bytes(batch._build())).next_batch()
    return [(r.key, r.value, list(r.headers)) for r in records]


async def test_records_fill_each_batch_in_order_and_arrive_whole():
    producer = SmallBatchesProducer(batch_size=300)
    records = [(f"k{i}".encode(), bytes([i]) * 60) for i in range(12)]
    records.insert(3, (b"h", b"v", [("reason", b"x")]))
    sent = await send_records(producer, "topic", 0, records)

    assert len(producer.sent) > 1  # did not fit one batch
    assert [count for _, count in sent] == [batch.record_count() for batch in producer.sent]
    assert sum(count for _, count in sent) == len(records)
    got = [record for batch in producer.sent for record in read_back(batch)]
    assert got == [(key, value, list(rest[0]) if rest else []) for key, value, *rest in records]
    assert all(batch.closed() for batch in producer.sent[:-1])  # a full batch takes nothing more


async def test_a_record_larger_than_a_batch_goes_alone_in_one():
    producer = SmallBatchesProducer(batch_size=100)
    sent = await send_records(producer, "topic", 0, [(b"a", b"x" * 50), (b"b", b"y" * 500), (b"c", b"z")])
    assert [count for _, count in sent] == [1, 1, 1]
    assert [read_back(batch)[0][1] for batch in producer.sent] == [b"x" * 50, b"y" * 500, b"z"]
