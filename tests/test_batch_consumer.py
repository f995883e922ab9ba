"""The batch consumer's delivery: the next fetch is taken while a batch is handled, and
records fetched in a generation that has ended are never handled."""

from __future__ import annotations

import asyncio
from collections import defaultdict
from types import SimpleNamespace
from typing import Any

from faust.types import TP

from streams.batch_consumer import BatchConsumer

EVENTS = TP("events", 0)


def record(offset: int) -> SimpleNamespace:
    return SimpleNamespace(topic=EVENTS.topic, partition=EVENTS.partition, offset=offset, key=None, value=b"{}")


class ScriptedConsumer(BatchConsumer):
    """A BatchConsumer whose fetches come from a script, with the Faust state it reads."""

    def __init__(self, fetches: list[dict[Any, list[Any]]]) -> None:
        self.fetches = fetches
        self.fetches_started = 0
        self.handled: list[tuple[list[int], int]] = []  # offsets of each batch, fetches started by then
        self.app = SimpleNamespace(consumer_generation_id=1, should_stop=False)
        self.flow_active = True
        self._stopped = asyncio.Event()
        self._crashed = asyncio.Event()
        self._buffered_partitions: set = set()
        self._read_offset: defaultdict = defaultdict(lambda: None)
        self._committed_offset: defaultdict = defaultdict(lambda: None)
        self._acked: defaultdict = defaultdict(list)
        self._acked_index: defaultdict = defaultdict(set)
        self._n_acked = 0
        self._batch_idle = asyncio.Event()
        self._batch_idle.set()
        self._next_fetch = None
        self.batch_handlers = {EVENTS.topic: self.handle}

    async def _wait_next_records(self, timeout: float) -> tuple[Any, Any]:
        self.fetches_started += 1
        await asyncio.sleep(0)
        return (self.fetches.pop(0) if self.fetches else {}), None

    async def handle(self, topic: str, partition: int, records: list[Any]) -> None:
        await asyncio.sleep(0.01)  # a batch's sends: the next fetch goes on meanwhile
        self.handled.append(([r.offset for r in records], self.fetches_started))


async def test_the_next_fetch_is_taken_while_a_batch_is_handled():
    consumer = ScriptedConsumer([{EVENTS: [record(0), record(1)]}, {EVENTS: [record(2)]}])
    await consumer._drain_one_fetch()
    assert consumer.handled == [([0, 1], 2)]  # the second fetch had started before the first batch ended
    await consumer._drain_one_fetch()
    assert [offsets for offsets, _ in consumer.handled] == [[0, 1], [2]]
    assert consumer._acked[EVENTS] == [0, 1, 2]


async def test_records_fetched_before_a_rebalance_are_not_handled():
    # The rebalance moves the position back to the committed offset: offset 1 comes again.
    consumer = ScriptedConsumer([{EVENTS: [record(0)]}, {EVENTS: [record(1)]}, {EVENTS: [record(1), record(2)]}])

    async def handle_then_rebalance(topic: str, partition: int, records: list[Any]) -> None:
        await asyncio.sleep(0.01)  # the next fetch (offset 1) arrives meanwhile, in generation 1
        consumer.handled.append(([r.offset for r in records], consumer.fetches_started))
        consumer.app.consumer_generation_id = 2  # a rebalance ends generation 1

    consumer.batch_handlers[EVENTS.topic] = handle_then_rebalance
    await consumer._drain_one_fetch()
    consumer.batch_handlers[EVENTS.topic] = consumer.handle
    await consumer._drain_one_fetch()  # offset 1, fetched in generation 1: dropped
    await consumer._drain_one_fetch()  # offsets 1 and 2, fetched in generation 2
    assert [offsets for offsets, _ in consumer.handled] == [[0], [1, 2]]
    assert consumer._acked[EVENTS] == [0, 1, 2]


async def test_a_fetch_taken_ahead_is_cancelled_when_the_consumer_stops():
    consumer = ScriptedConsumer([{EVENTS: [record(0)]}])
    fetcher = SimpleNamespace(_stopped=asyncio.Event())
    consumer.consumer_stopped_errors = ()

    async def handle_then_stop(topic: str, partition: int, records: list[Any]) -> None:
        consumer.handled.append(([r.offset for r in records], consumer.fetches_started))
        fetcher._stopped.set()

    consumer.batch_handlers[EVENTS.topic] = handle_then_stop
    await consumer._drain_messages(fetcher)
    assert consumer.handled == [([0], 2)]
    assert consumer._next_fetch is None
