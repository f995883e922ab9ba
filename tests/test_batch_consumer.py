"""The batch consumer's delivery: behind the stream, the next fetch is taken while a batch
is handled; records fetched in a generation that has ended are never handled."""

from __future__ import annotations

import asyncio
from collections import defaultdict
from types import SimpleNamespace
from typing import Any

from faust.types import TP

from streams.batch_consumer import FETCH_AHEAD_RECORDS, BatchConsumer

EVENTS = TP("events", 0)


def records(first: int, count: int) -> list[SimpleNamespace]:
    return [
        SimpleNamespace(topic=EVENTS.topic, partition=EVENTS.partition, offset=o, key=None, value=b"{}")
        for o in range(first, first + count)
    ]


class ScriptedConsumer(BatchConsumer):
    """A BatchConsumer whose fetches come from a script, with the Faust state it reads."""

    def __init__(self, fetches: list[dict[Any, list[Any]]]) -> None:
        self.fetches = fetches
        self.fetches_started = 0
        self.handled: list[tuple[int, int, int]] = []  # first offset, count, fetches started by then
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

    async def handle(self, topic: str, partition: int, batch: list[Any]) -> None:
        await asyncio.sleep(0.01)  # a batch's sends: a fetch taken ahead goes on meanwhile
        self.handled.append((batch[0].offset, len(batch), self.fetches_started))


BIG = FETCH_AHEAD_RECORDS


async def test_behind_the_stream_the_next_fetch_is_taken_while_a_batch_is_handled():
    consumer = ScriptedConsumer([{EVENTS: records(0, BIG)}, {EVENTS: records(BIG, 3)}])
    await consumer._drain_one_fetch()
    assert consumer.handled == [(0, BIG, 2)]  # the second fetch began before the first batch ended
    await consumer._drain_one_fetch()
    assert consumer.handled[1][:2] == (BIG, 3)
    assert consumer._acked[EVENTS] == list(range(BIG + 3))


async def test_keeping_up_with_the_stream_the_next_fetch_waits_for_the_batch():
    # A fetch taken ahead would hold only what arrived as the batch began: what arrives
    # while it is handled would wait one batch more.
    consumer = ScriptedConsumer([{EVENTS: records(0, 5)}, {EVENTS: records(5, 5)}])
    await consumer._drain_one_fetch()
    assert consumer.handled == [(0, 5, 1)]
    await consumer._drain_one_fetch()
    assert consumer.handled[1] == (5, 5, 2)


async def test_records_fetched_before_a_rebalance_are_not_handled():
    # The rebalance moves the position back to the committed offset: the records come again.
    consumer = ScriptedConsumer([{EVENTS: records(0, BIG)}, {EVENTS: records(BIG, 1)}, {EVENTS: records(BIG, 2)}])

    async def handle_then_rebalance(topic: str, partition: int, batch: list[Any]) -> None:
        await asyncio.sleep(0.01)  # the fetch taken ahead arrives meanwhile, in generation 1
        consumer.handled.append((batch[0].offset, len(batch), consumer.fetches_started))
        consumer.app.consumer_generation_id = 2  # a rebalance ends generation 1

    consumer.batch_handlers[EVENTS.topic] = handle_then_rebalance
    await consumer._drain_one_fetch()
    consumer.batch_handlers[EVENTS.topic] = consumer.handle
    await consumer._drain_one_fetch()  # fetched in generation 1: dropped
    await consumer._drain_one_fetch()  # the same offset and one more, fetched in generation 2
    assert [(first, count) for first, count, _ in consumer.handled] == [(0, BIG), (BIG, 2)]
    assert consumer._acked[EVENTS] == list(range(BIG + 2))


async def test_records_already_handled_are_not_handled_again():
    # A seek back (to a committed offset behind what was handled) fetches some records again.
    consumer = ScriptedConsumer([{EVENTS: records(0, 5)}, {EVENTS: records(3, 4)}, {EVENTS: records(7, 2)}])
    for _ in range(3):
        await consumer._drain_one_fetch()
    assert [(first, count) for first, count, _ in consumer.handled] == [(0, 5), (5, 2), (7, 2)]
    assert consumer._acked[EVENTS] == list(range(9))


async def test_a_fetch_taken_ahead_is_cancelled_when_the_consumer_stops():
    consumer = ScriptedConsumer([{EVENTS: records(0, BIG)}])
    fetcher = SimpleNamespace(_stopped=asyncio.Event())
    consumer.consumer_stopped_errors = ()

    async def handle_then_stop(topic: str, partition: int, batch: list[Any]) -> None:
        consumer.handled.append((batch[0].offset, len(batch), consumer.fetches_started))
        fetcher._stopped.set()

    consumer.batch_handlers[EVENTS.topic] = handle_then_stop
    await consumer._drain_messages(fetcher)
    assert consumer.handled == [(0, BIG, 2)]
    assert consumer._next_fetch is None
