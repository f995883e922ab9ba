"""Whole-fetch delivery for Faust: a partition's records at once, without per-message machinery.

Faust's consumer wraps every record in a Message, an Event and a stream step and acks it
one by one: about 45-125 µs a message before any work of ours. For the topics registered
here (events, labels, predictions) this consumer hands each partition's fetched record
list to one coroutine and marks the whole batch acknowledged when it returns, so Faust's
commit loop commits it. Faust keeps everything else: group membership, partition
assignment (co-partitioned tables), changelog recovery (changelog records still take
Faust's normal path), standbys and offset commits.

This relies on private parts of faust-streaming 0.15.3's `faust.transport.consumer`
(`_drain_messages`, `_wait_next_records`, `_read_offset`, `_acked`, `_acked_index`,
`_committed_offset`, `_add_gap`, `perform_seek`, `pause_partitions`, and the consumer
thread's `_consumer` and `thread_loop`): the version is pinned in pyproject.toml and
`tests/test_batch_consumer_contract.py` fails if they change.
"""

from __future__ import annotations

import asyncio
import itertools
import logging
from collections.abc import Awaitable, Callable, Iterable, Mapping, Sequence
from typing import Any, NamedTuple

import faust
from aiokafka import TopicPartition
from faust.transport.drivers import aiokafka as faust_aiokafka
from faust.types import TP

log = logging.getLogger(__name__)

FAUST_VERSION = "0.15.3"


class Record(NamedTuple):
    """One Kafka record, as batch handlers see it: aiokafka's ConsumerRecord has the same
    attributes and is handed over as it is; this type builds records elsewhere (tests,
    dead letters of records read back)."""

    topic: str
    partition: int
    offset: int
    key: bytes | None
    value: bytes | None
    headers: Sequence[tuple[str, bytes]]
    timestamp: int | None


BatchHandler = Callable[[str, int, list[Record]], Awaitable[None]]


class Fetched(NamedTuple):
    records: Mapping[Any, list[Any]] | None
    active: set[Any] | None  # the partitions fetched for (None: all)
    generation: int


# Faust asks the broker to hold a fetch up to 1.5 s when there is nothing new. A fetch
# covers every partition without buffered records, so while it waits on idle topics
# (labels, predictions) the busy one (events) cannot be fetched again once drained: under
# load that held ingestion still for up to 1.5 s every few batches.
FETCH_MAX_WAIT_MS = 10

# A fetch this large means records are waiting: the next one is taken while it is handled.
# Not for smaller ones: a fetch taken ahead holds what arrived as the batch began, so the
# records that arrive while it is handled would wait one batch more (a worker keeping up
# with the stream gets small fetches, and its latency is what counts).
FETCH_AHEAD_RECORDS = 1000


class BatchConsumerThread(faust_aiokafka.AIOKafkaConsumerThread):
    def _create_worker_consumer(self, transport: Any) -> Any:
        consumer = super()._create_worker_consumer(transport)
        consumer._fetch_max_wait_ms = FETCH_MAX_WAIT_MS  # read by the fetcher it builds at start
        return consumer


class BatchConsumer(faust_aiokafka.Consumer):
    """A Faust aiokafka consumer that delivers registered topics a fetch at a time."""

    batch_handlers: dict[str, BatchHandler]

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self.batch_handlers = getattr(self.app, "batch_handlers", {})
        # Cleared while a batch is being handled: a revoke waits for it, so the offsets the
        # batch acks are committed by this member and not replayed by the next owner.
        self._batch_idle = asyncio.Event()
        self._batch_idle.set()
        self._next_fetch: asyncio.Future[Fetched] | None = None

    def _new_consumer_thread(self) -> BatchConsumerThread:
        return BatchConsumerThread(self, loop=self.loop, beacon=self.beacon)

    # Faust pauses a partition in its own bookkeeping only: aiokafka's fetcher goes on
    # fetching it. A table's changelog, paused once its recovery is done, then fills the
    # fetcher's buffer with records nobody takes, and each time such records arrive
    # aiokafka holds back every fetch from that broker for its prefetch backoff (100 ms):
    # after each assignment the first events waited 100-250 ms. Changelog partitions are
    # paused and resumed in aiokafka as well, on the consumer's thread, in call order.

    def pause_partitions(self, tps: Iterable[TP]) -> None:
        tps = set(tps)
        super().pause_partitions(tps)
        self._changelog_fetching(tps, fetch=False)

    def resume_partitions(self, tps: Iterable[TP]) -> None:
        tps = set(tps)
        super().resume_partitions(tps)
        self._changelog_fetching(tps, fetch=True)

    def _changelog_fetching(self, tps: set[TP], fetch: bool) -> None:
        changelogs = [TopicPartition(tp.topic, tp.partition) for tp in tps if self._is_changelog_tp(tp)]
        thread = self._thread
        consumer = thread._consumer
        if not changelogs or consumer is None or thread.thread_loop.is_closed():
            return

        def apply() -> None:
            assigned = consumer.assignment()
            mine = [tp for tp in changelogs if tp in assigned]
            if fetch:
                consumer.resume(*mine)
            else:
                consumer.pause(*mine)

        thread.thread_loop.call_soon_threadsafe(apply)

    async def _drain_messages(self, fetcher: Any) -> None:
        consumer_should_stop = self._stopped.is_set
        fetcher_should_stop = fetcher._stopped.is_set
        try:
            while not (consumer_should_stop() or fetcher_should_stop()):
                await self._drain_one_fetch()
        except self.consumer_stopped_errors:
            if self.transport.app.should_stop:
                return
            raise
        except asyncio.CancelledError:
            if self.transport.app.should_stop:
                return
            raise
        finally:
            # Records a cancelled fetch took are not handled, so not acknowledged: replayed.
            if self._next_fetch is not None:
                self._next_fetch.cancel()
                self._next_fetch = None

    async def _fetch(self) -> Fetched:
        records, active = await self._wait_next_records(1.0)
        # The generation the records were fetched in, read as they arrive (as Faust's getmany
        # does): records of an older one are dropped, and the rebalance that ended it has
        # already moved the positions back to the committed offsets.
        return Fetched(records, active, self.app.consumer_generation_id)

    async def _drain_one_fetch(self) -> None:
        fetch, self._next_fetch = self._next_fetch, None
        records, active, generation = await (fetch if fetch is not None else self._fetch())
        await asyncio.sleep(0)
        if not records or self.should_stop:
            return
        if not self.flow_active:
            # Faust's own getmany does this: a fetch that arrives while a rebalance stopped
            # the flow is dropped, and the partitions go back to their committed offsets.
            try:
                await self.perform_seek()
            except Exception as exc:  # noqa: BLE001 - a rebalance can fail the seek; the next one redoes it
                log.warning("seek to committed offsets after a stopped flow failed: %r", exc)
            return
        if sum(len(tp_records) for tp_records in records.values()) >= FETCH_AHEAD_RECORDS:
            # Behind the stream: the next fetch is taken while this one is handled. Taken
            # after it, the worker waited for it: Faust's consumer thread builds a record
            # object per record (about 1 µs each, 4-14 ms a batch of 3,000) and fetches
            # again only once the last fetch was taken.
            self._next_fetch = asyncio.ensure_future(self._fetch())
        for tp, tp_records in records.items():
            if not self.flow_active or self.app.consumer_generation_id != generation:
                return
            if active is not None and tp not in active and tp not in self._buffered_partitions:
                continue
            handler = self.batch_handlers.get(tp.topic)
            fresh = self._unread(tp, tp_records)
            if not fresh:
                continue
            if handler is None:
                await self._deliver_one_by_one(tp, fresh)
            else:
                await self._deliver_batch(tp, fresh, handler)

    def _unread(self, tp: Any, tp_records: list[Any]) -> list[Any]:
        """Records not handled yet: a seek back can fetch records already handled.

        For batched topics the read offset is the next offset to handle, which is also what
        a seek to the committed offset sets (Faust's own path keeps the last one delivered)."""
        read_offset = self._read_offset[tp]
        if read_offset is None or not tp_records or tp_records[0].offset >= read_offset:
            return tp_records  # a fetch's records come in offset order: all unread
        return [r for r in tp_records if r.offset >= read_offset]

    async def _deliver_one_by_one(self, tp: Any, tp_records: list[Any]) -> None:
        """Faust's path, for changelogs and any topic without a batch handler."""
        for record in tp_records:
            read_offset = self._read_offset[tp]
            if read_offset and record.offset - read_offset > 1 and self.app.topics.acks_enabled_for(tp.topic):
                await self._add_gap(tp, read_offset + 1, record.offset)
            message = self._to_message(tp, record)
            await self.wait_first(self.callback(message), self.suspend_flow.wait())
            self._read_offset[tp] = record.offset

    async def _deliver_batch(self, tp: Any, tp_records: list[Any], handler: BatchHandler) -> None:
        # aiokafka's records are handed over as they are: they have the attributes of Record.
        self._batch_idle.clear()
        try:
            # Shielded: a stop must not cancel a batch between its sends and its acks.
            await asyncio.shield(self._handle_and_ack(tp, tp_records, handler))
        finally:
            self._batch_idle.set()

    async def _handle_and_ack(self, tp: Any, tp_records: list[Record], handler: BatchHandler) -> None:
        await handler(tp.topic, tp.partition, tp_records)
        offsets = [r.offset for r in tp_records]
        expected = self._read_offset[tp]
        if expected is not None and offsets[0] > expected:
            await self._add_gap(tp, expected, offsets[0] - 1)
        for previous, current in itertools.pairwise(offsets):
            if current - previous > 1:  # transaction markers or compaction leave holes
                await self._add_gap(tp, previous + 1, current - 1)
        self._ack_offsets(tp, offsets)
        self._read_offset[tp] = offsets[-1] + 1

    def _ack_offsets(self, tp: Any, offsets: list[int]) -> None:
        committed = self._committed_offset[tp]
        acked_index = self._acked_index[tp]
        fresh = [o for o in offsets if (committed is None or o >= committed) and o not in acked_index]
        acked_index.update(fresh)
        self._acked[tp].extend(fresh)
        self._n_acked += len(fresh)

    async def on_partitions_revoked(self, revoked: set[Any]) -> None:
        await self._batch_idle.wait()
        try:
            await self.commit()
        except Exception as exc:  # noqa: BLE001 - uncommitted offsets are replayed, and replays are idempotent
            log.warning("commit before revoking %s failed: %r", sorted(map(str, revoked)), exc)
        await super().on_partitions_revoked(revoked)


class BatchTransport(faust_aiokafka.Transport):
    Consumer = BatchConsumer


class BatchApp(faust.App):
    """A Faust app whose consumer hands registered topics to batch handlers."""

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        self.batch_handlers: dict[str, BatchHandler] = {}
        super().__init__(*args, **kwargs)

    def batch_handler(self, topic: Any, handler: BatchHandler) -> None:
        """Subscribes the app to `topic` and sends its fetched records to `handler`."""
        name = topic.get_topic_name()
        self.batch_handlers[name] = handler
        self.topics.add(topic)

    def _new_transport(self) -> Any:
        return BatchTransport(self.conf.broker_consumer, self)
