"""Coalesced writes to a Faust table: the store at once, the changelog once per batch.

Within a batch a key may change many times; only its last value is sent, one record per
changed key, to the changelog partition of the batch's source partition (so a key's
rows live where its events do, whatever its hash). Records are sent as whole Kafka
record batches, in the table's own serialization (JSON key and value, Faust's default),
so Faust's recovery reads them back as if Faust had written them.
"""

from __future__ import annotations

import asyncio
from collections.abc import Iterable
from typing import Any

import orjson
from aiokafka import AIOKafkaProducer
from aiokafka.partitioner import DefaultPartitioner

TOMBSTONE = None


def encode_value(value: Any) -> bytes | None:
    return None if value is TOMBSTONE else orjson.dumps(value)


Headers = Iterable[tuple[str, bytes]]


async def send_records(
    producer: AIOKafkaProducer,
    topic: str,
    partition: int,
    records: Iterable[tuple[bytes | None, bytes | None]] | Iterable[tuple[bytes | None, bytes | None, Headers]],
) -> list[tuple[asyncio.Future, int]]:
    """Sends (key, value[, headers]) records to one partition as whole record batches, in
    order; returns each batch's delivery future with its record count.

    Records go straight into the batch's record builder (aiokafka's C one), as
    BatchBuilder.append puts them there for a producer without serializers, less its Python
    layer: 0.14 against 0.31 µs a record, one record for every event learned."""
    sent = []
    batch = producer.create_batch()
    assert batch._key_serializer is None and batch._value_serializer is None  # bytes as they are
    append, count = batch._builder.append, 0
    for record in records:
        key, value = record[0], record[1]
        headers = list(record[2]) if len(record) > 2 else []
        if append(count, None, key=key, value=value, headers=headers) is None:  # the batch is full
            batch._relative_offset = count  # what record_count() and the producer read
            batch.close()  # as BatchBuilder.append closes a full batch: nothing else goes in
            sent.append((await producer.send_batch(batch, topic, partition=partition), count))
            batch = producer.create_batch()
            append, count = batch._builder.append, 0
            if append(count, None, key=key, value=value, headers=headers) is None:
                raise ValueError(f"a record for {topic} is larger than the producer's max_batch_size")
        count += 1
    if count:
        batch._relative_offset = count
        sent.append((await producer.send_batch(batch, topic, partition=partition), count))
    return sent


_PARTITIONER = DefaultPartitioner()


async def send_by_event_id(
    producer: AIOKafkaProducer, topic: str, partitions: int, records: Iterable[tuple[str, bytes]]
) -> list[asyncio.Future]:
    """Sends (event id, value) records keyed by event id, each to the partition the producers'
    default partitioner (murmur2, as Java's) gives its key: the label keyed by the same id
    lands in the same partition, so a prediction and its label meet in one worker's join.
    Returns the delivery futures of the record batches."""
    every = list(range(partitions))
    by_partition: dict[int, list[tuple[bytes, bytes]]] = {}
    for event_id, value in records:
        key = event_id.encode()
        # murmur2 in Python costs microseconds a key: with one partition there is no choice to make.
        partition = _PARTITIONER(key, every, every) if partitions > 1 else 0
        by_partition.setdefault(partition, []).append((key, value))
    futures: list[asyncio.Future] = []
    for partition, keyed in by_partition.items():
        futures.extend(future for future, _ in await send_records(producer, topic, partition, keyed))
    return futures


Sent = list[tuple[int, list[tuple[bytes, bytes | None]], list[tuple[asyncio.Future, int]]]]


async def send_changelog(producer: AIOKafkaProducer, table: Any, staged: dict[int, dict[str, Any]]) -> Sent:
    """Sends one record per staged key (the table's serialization: JSON key and value) to the
    changelog partition of its source partition; returns, per partition, the records and
    the delivery future of each record batch with its record count."""
    topic = table.changelog_topic.get_topic_name()
    sent: Sent = []
    for partition, values in staged.items():
        records = [(orjson.dumps(key), encode_value(value)) for key, value in values.items()]
        sent.append((partition, records, await send_records(producer, topic, partition, records)))
    return sent


def _futures(sent: Sent) -> list[asyncio.Future]:
    return [future for _, _, batches in sent for future, _ in batches]


class TableWriter:
    """Writes to one Faust table's in-memory store and stages its changelog records."""

    def __init__(self, table: Any) -> None:
        self.table = table
        self._staged: dict[int, dict[str, Any]] = {}

    @property
    def store(self) -> Any:
        return self.table.data  # faust.stores.memory.Store: .data is the dict

    def get(self, key: str, partition: int | None = None) -> Any:
        return self.store.data.get(key)

    def set(self, partition: int, key: str, value: Any) -> None:
        store = self.store
        store.data[key] = value
        # The memory store drops keys of revoked partitions by this map.
        store._key_partition[key] = partition
        self._staged.setdefault(partition, {})[key] = value

    def delete(self, partition: int, key: str) -> None:
        store = self.store
        store.data.pop(key, None)
        store._key_partition.pop(key, None)
        self._staged.setdefault(partition, {})[key] = TOMBSTONE

    def items(self) -> Iterable[tuple[str, Any]]:
        return list(self.store.data.items())

    def __len__(self) -> int:
        return len(self.store.data)

    async def flush(self, producer: AIOKafkaProducer) -> list[asyncio.Future]:
        """Sends the changelog records of the rows changed since the last flush; returns
        their delivery futures, to be awaited before `written`."""
        staged, self._staged = self._staged, {}
        return _futures(await send_changelog(producer, self.table, staged))

    def written(self) -> None:
        """After the flushed changelog records were acknowledged: the memory store already
        holds the rows."""


class PersistentTableWriter:
    """Writes to a table kept in RocksDB (streams/table_store.py): rows are held in memory
    as they are set, sent to the changelog once per batch, and written to disk only once
    Kafka acknowledged them, with the changelog offset they reach (`written`)."""

    def __init__(self, table: Any) -> None:
        self.table = table
        self._staged: dict[int, dict[str, Any]] = {}
        self._sent: list[tuple[Sent, dict[int, dict[str, Any]]]] = []  # sent, not yet on disk: with what was staged
        self._store: Any = None

    @property
    def store(self) -> Any:
        # streams.table_store.RowStore: the table makes it once, the first time it is asked
        # for it, and keeps it; asked once here, not through Faust's property each event
        # (and never tested for truth: a store's len() counts its rows on disk).
        if self._store is None:
            self._store = self.table.data
        return self._store

    def get(self, key: str, partition: int | None = None) -> Any:
        return self.store.row(key, partition)

    def set(self, partition: int, key: str, value: Any) -> None:
        self.store.keep(partition, key, value)
        staged = self._staged.get(partition)
        if staged is None:
            staged = self._staged[partition] = {}
        staged[key] = value

    def delete(self, partition: int, key: str) -> None:
        self.store.keep(partition, key, None)
        self._staged.setdefault(partition, {})[key] = TOMBSTONE

    async def flush(self, producer: AIOKafkaProducer) -> list[asyncio.Future]:
        staged, self._staged = self._staged, {}
        sent = await send_changelog(producer, self.table, staged)
        self._sent.append((sent, staged))
        return _futures(sent)

    def written(self) -> None:
        """Writes the flushed rows to disk, once their changelog records are acknowledged.

        Rows whose records Kafka did not acknowledge (a batch that failed before reaching
        here) never go to disk: what is on disk stays the changelog up to the offset it names."""
        flushed, self._sent = self._sent, []
        for sent, staged in flushed:
            for partition, records, batches in sent:
                futures = [future for future, _ in batches]
                if not all(f.done() and not f.cancelled() and f.exception() is None for f in futures):
                    continue
                future, count = batches[-1]
                self.store.write(partition, records, future.result().offset + count - 1, staged[partition])
