"""`python -m engine worker`: a stream worker, and in the embedded default also the learner.

A worker owns a share of the partitions of the events, labels and predictions topics (one
consumer group; Faust assigns them, co-partitioned with the feature and join tables). Per
fetched batch of a partition it updates the entities' features, predicts, and sends in
this order, each step acknowledged before the next:

1. prediction records (for the join with labels that come later), dead letters and
   labelled examples, to each model's examples topic (one partition: its learner's one
   order), all at once: a replay sends again whichever of them were lost, so they need no
   order among themselves, and one wait for their acknowledgments instead of two is one
   broker round trip less per batch;
2. the changelogs of the feature and join tables (one record per changed key);

then the batch's offsets are acknowledged for Faust to commit. A crash anywhere replays the
batch; an entity row remembers the offset it last applied, an example is learned once, and
a prediction already joined or waiting is not replaced: replays change nothing.
"""

from __future__ import annotations

import asyncio
import dataclasses
import hashlib
import logging
import time
from collections.abc import AsyncIterator, Sequence
from contextlib import AsyncExitStack, asynccontextmanager
from typing import Any, cast

import orjson
from aiokafka import AIOKafkaConsumer, AIOKafkaProducer, TopicPartition
from faust.tables.manager import TableManager
from faust.types import TP, TopicT
from mode.types.signals import SignalHandlerT

from engine import metrics
from engine.dead_letter_sink import DeadLetterSink, refused_letter
from engine.settings import Settings
from engine.worker_modes import WorkerMode
from engine.worker_status import Progress, StatusReporter
from models.drift import DriftMonitor
from models.examples import encode_examples
from models.guard import Refusal
from models.learner import BatchOutcome
from models.named import NamedModel
from streams import table_store
from streams.batch_consumer import BatchApp, BatchConsumer, Record
from streams.changelog import PersistentTableWriter, TableWriter, send_by_event_id, send_records
from streams.events import DeadLetter, EventOutcome, EventProcessor, ModelLane
from streams.features import FeatureRegistry
from streams.join import Join, JoinOutcome
from streams.model_topic import MAX_MODEL_BYTES
from streams.offline_store import OfflineFeatureLog
from streams.records import Contract, label_rule

log = logging.getLogger(__name__)

EXPIRY_SECONDS = 10.0
GAUGE_SECONDS = 1.0
# Room per record in a partition's fetch: a batch of events up to this size fits in one.
FETCH_BYTES_PER_RECORD = 512


def contract_for(settings: Settings, features: FeatureRegistry) -> Contract:
    return Contract(
        settings.max_message_bytes,
        features.ranges,
        settings.max_feature_magnitude,
        settings.max_id_length,
        settings.max_features_per_event,
        settings.max_event_time_ahead_seconds,
        label_rule(settings.models),
    )


def store_identity(settings: Settings, features: FeatureRegistry) -> bytes:
    """Who writes the feature table's local store: the app, the table, the declared features."""
    declared = orjson.dumps([dataclasses.asdict(d) for d in features.definitions], option=orjson.OPT_SORT_KEYS)
    return f"{settings.app_id}/{settings.entity_table}/features-{hashlib.sha256(declared).hexdigest()[:16]}".encode()


class StreamWorker:
    """`modes`: each named model with what predicts and learns for it, the default first."""

    def __init__(
        self, settings: Settings, features: FeatureRegistry, modes: Sequence[tuple[NamedModel, WorkerMode]]
    ) -> None:
        self.settings = settings
        self.features = features
        self.modes = [mode for _, mode in modes]
        self.model_names = [named.name for named, _ in modes]
        self.examples_topics = [settings.for_model(named).examples_topic for named, _ in modes]
        lanes = [ModelLane(named, mode) for named, mode in modes]
        self.app = self._build_app()
        self.producer: AIOKafkaProducer | None = None  # from start(), with the dead-letter sink
        # The learners' model publications go on a connection of their own: aiokafka keeps one
        # request in flight per broker connection, so on the batches' one a publication (every
        # 50 ms) held the next batch's sends until it was acknowledged.
        self.models_producer: AIOKafkaProducer | None = None
        self.dead_letters: DeadLetterSink | None = None
        self.drift = DriftMonitor()
        self.offline_log = OfflineFeatureLog(settings.state_path / "offline-features")
        contract = contract_for(settings, features)
        self.rows: TableWriter | PersistentTableWriter = (
            PersistentTableWriter(self.entities) if settings.table_store == "rocksdb" else TableWriter(self.entities)
        )
        self.pending = TableWriter(self.join_table)
        self.events = EventProcessor(
            contract,
            features,
            self.rows,
            lanes,
            dedupe_window=settings.dedupe_window,
            drift=self.drift,
            on_row=self.offline_log.append,
            fresh_predictions=all(mode.fresh_predictions for mode in self.modes),
        )
        self.join = Join(
            contract,
            self.pending,
            lanes,
            pending_ttl_seconds=settings.pending_ttl_seconds,
            pending_max=settings.pending_max,
            early_label_grace_seconds=settings.early_label_grace_seconds,
        )
        self._processed_offsets: dict[tuple[str, int], int] = {}
        self._lag: int | None = None
        self.status = StatusReporter(settings.worker_id, settings.workers_topic, self.progress)
        self._null_series: set[str] = set()

    # -- the Faust app ----------------------------------------------------------------------

    def _build_app(self) -> BatchApp:
        s = self.settings
        app = BatchApp(
            s.app_id,
            broker=f"kafka://{s.kafka_bootstrap}",
            store="memory://",
            topic_partitions=s.topic_partitions,
            topic_replication_factor=1,
            web_enabled=False,
            datadir=str(s.state_path / "faust"),
            tabledir=str(s.table_path),
            consumer_auto_offset_reset="earliest",
            stream_wait_empty=False,
            broker_max_poll_records=s.stream_batch_size,
            # A partition's fetch must hold a whole batch: Kafka's 1 MiB default held about
            # 3,200 events of 330 bytes, whatever the batch size asked for.
            consumer_max_fetch_size=max(1 << 20, s.stream_batch_size * FETCH_BYTES_PER_RECORD),
            broker_session_timeout=s.kafka_session_timeout_seconds,
            broker_heartbeat_interval=max(1.0, s.kafka_session_timeout_seconds / 4),
            # Static membership: a restarted worker with the same id gets its partitions back
            # at once, without waiting for its old session to time out.
            consumer_group_instance_id=f"{s.app_id}-worker-{s.worker_id}",
            table_standby_replicas=s.standby_replicas,
        )
        partitions = s.topic_partitions

        def raw_topic(name: str) -> TopicT:
            return app.topic(
                name,
                partitions=partitions,
                key_type=bytes,
                value_type=bytes,
                key_serializer="raw",
                value_serializer="raw",
            )

        self.events_topic = raw_topic(s.events_topic)
        self.labels_topic = raw_topic(s.labels_topic)
        self.predictions_topic = raw_topic(s.predictions_topic)
        on_disk: dict[str, Any] = {}
        if s.table_store == "rocksdb":
            on_disk = {
                "store": table_store.store_url(s.entity_table),
                "options": {
                    table_store.IDENTITY_OPTION: store_identity(s, self.features),
                    table_store.CACHE_ROWS_OPTION: s.table_cache_rows,
                },
            }
        self.entities = app.Table(s.entity_table, default=None, partitions=partitions, key_type=str, **on_disk)
        self.join_table = app.Table("join", default=None, partitions=partitions, key_type=str)
        app.batch_handler(self.events_topic, self._on_events)
        app.batch_handler(self.labels_topic, self._on_labels)
        app.batch_handler(self.predictions_topic, self._on_predictions)
        # Faust sends the assigned set as one positional argument; mode's SignalHandlerT only
        # describes handlers that take any *args.
        app.on_partitions_assigned.connect(cast("SignalHandlerT[Any]", self._on_assigned))
        app.timer(EXPIRY_SECONDS, on_leader=False)(self._expire)
        app.timer(GAUGE_SECONDS, on_leader=False)(self._publish_gauges)
        app.timer(s.offline_flush_seconds, on_leader=False)(self._flush_offline_log)
        return app

    async def _on_assigned(self, sender: Any, assigned: set[TP], **kwargs: Any) -> None:
        events = sorted(tp.partition for tp in assigned if tp.topic == self.settings.events_topic)
        log.warning("worker %s owns partitions %s of %s", self.settings.worker_id, events, self.settings.events_topic)

    # -- batches ----------------------------------------------------------------------------

    async def _on_events(self, topic: str, partition: int, records: list[Record]) -> None:
        started = time.perf_counter()
        async with self._turn():
            outcome = self.events.process(partition, records)
            await self._flush(outcome.predictions, outcome.dead_letters, records)
        self._processed_offsets[(topic, partition)] = records[-1].offset + 1
        self._record_events(outcome, time.perf_counter() - started)

    async def _on_labels(self, topic: str, partition: int, records: list[Record]) -> None:
        async with self._turn():
            outcome = self.join.on_labels(partition, records)
            await self._flush([], outcome.dead_letters, records)
        self._processed_offsets[(topic, partition)] = records[-1].offset + 1
        self._record_join(outcome)

    async def _on_predictions(self, topic: str, partition: int, records: list[Record]) -> None:
        async with self._turn():
            outcome = self.join.on_predictions(partition, records)
            await self._flush([], outcome.dead_letters)
        self._processed_offsets[(topic, partition)] = records[-1].offset + 1
        self._record_join(outcome)

    @asynccontextmanager
    async def _turn(self) -> AsyncIterator[None]:
        """Every model's learner between its timers and admin commands."""
        if len(self.modes) == 1:
            async with self.modes[0].turn():
                yield
            return
        async with AsyncExitStack() as stack:
            for mode in self.modes:
                await stack.enter_async_context(mode.turn())
            yield

    async def _flush(
        self, predictions: list[tuple[str, dict]], dead_letters: list[DeadLetter], records: Sequence[Record] = ()
    ) -> None:
        """Sends a batch's output in the order that makes a replay harmless (see the module doc)."""
        assert self.producer is not None and self.dead_letters is not None
        outcomes = [mode.end_batch() for mode in self.modes]
        refused = self._refusals(outcomes)
        if refused:
            dead_letters = sorted(
                dead_letters + [_refused_in_batch(r, records) for r in refused],
                key=lambda letter: (letter.record.topic, letter.record.partition, letter.record.offset),
            )
        encoded = encode_examples([outcome.learned for outcome in outcomes])
        sent = await self._send_predictions(predictions) + await self.dead_letters.send(dead_letters)
        examples = await self._send_examples(outcomes, encoded)
        await self._wait(sent + [future for chunks in examples for future, _ in chunks])
        # Per model, the examples-topic offset after its last example (None when it had none).
        ends = [chunks[-1][0].result().offset + chunks[-1][1] if chunks else None for chunks in examples]
        await self._wait(await self.rows.flush(self.producer) + await self.pending.flush(self.producer))
        self.rows.written()
        self.pending.written()
        for mode, outcome, end, values in zip(self.modes, outcomes, ends, encoded):
            await mode.batch_sent(outcome, end, values)

    def _refusals(self, outcomes: list[BatchOutcome]) -> list[Refusal]:
        """The examples the models' learners refused, one per record: with several models the
        detail names the model (the others learned it: only this model left it out)."""
        if len(outcomes) == 1:
            return outcomes[0].refused
        by_source: dict[tuple[str, int, int], Refusal] = {}
        for named, outcome in zip(self.model_names, outcomes):
            for refusal in outcome.refused:
                detail = f"model {named}: {refusal.detail}"
                first = by_source.get(refusal.example.source)
                if first is not None:
                    detail = f"{first.detail}; {detail}"
                by_source[refusal.example.source] = Refusal(refusal.example, refusal.reason, detail)
        return list(by_source.values())

    @staticmethod
    async def _wait(futures: list[asyncio.Future]) -> None:
        if futures:
            await asyncio.gather(*futures)

    async def _send_predictions(self, predictions: list[tuple[str, dict]]) -> list[asyncio.Future]:
        if not predictions:
            return []
        assert self.producer is not None
        encoded = ((event_id, orjson.dumps(record)) for event_id, record in predictions)
        return await send_by_event_id(
            self.producer, self.settings.predictions_topic, self.settings.topic_partitions, encoded
        )

    async def _send_examples(
        self, outcomes: list[BatchOutcome], encoded: list[list[bytes]]
    ) -> list[list[tuple[asyncio.Future, int]]]:
        """Sends each model's examples (already encoded) to its topic; returns per model the
        delivery future of each record batch sent, with its record count."""
        assert self.producer is not None
        sent = []
        for topic, outcome, values in zip(self.examples_topics, outcomes, encoded):
            if outcome.learned:
                records = [(ex.event_id.encode(), value) for ex, value in zip(outcome.learned, values)]
                sent.append(await send_records(self.producer, topic, 0, records))
            else:
                sent.append([])
        return sent

    # -- metrics, once per batch --------------------------------------------------------------

    def _record_events(self, outcome: EventOutcome, seconds: float) -> None:
        metrics.STREAM_BATCH_SECONDS.observe(seconds)
        metrics.EVENTS_PROCESSED.inc(outcome.processed)
        if outcome.replayed:
            metrics.REPLAYED_EVENTS.inc(outcome.replayed)
        for feature, count in outcome.nulls.items():
            if feature not in self._null_series:
                if len(self._null_series) >= metrics.NULL_SERIES_MAX:
                    feature = "other"
                else:
                    self._null_series.add(feature)
            metrics.FEATURE_NULLS.labels(feature).inc(count)
        if outcome.processed:
            metrics.EVENT_TIME_LAG.observe(max(0.0, outcome.max_event_lag))
        _record_missing_targets(outcome.missing_targets)

    def _record_join(self, outcome: JoinOutcome) -> None:
        for delay in outcome.label_delays:
            metrics.LABEL_DELAY.observe(delay)
        _record_missing_targets(outcome.missing_targets)

    # -- timers -------------------------------------------------------------------------------

    async def _expire(self) -> None:
        if not self._tables_ready():
            return
        async with self._turn():
            expiry = self.join.expire()
            await self._flush([], expiry.dead_letters)
        metrics.PENDING_EXPIRED.labels("ttl").inc(expiry.predictions)
        metrics.PENDING_EXPIRED.labels("bound").inc(expiry.evicted)

    async def _publish_gauges(self) -> None:
        metrics.PENDING_SIZE.set(self.join.pending_predictions())
        per_feature, prediction = self.drift.next_statistics()
        for name, ks in per_feature.items():
            metrics.FEATURE_DRIFT_KS.labels(name).set(ks)
        if prediction is not None:
            metrics.PREDICTION_DRIFT_KS.set(prediction)
        self._lag = self._publish_consumer_lag()

    def _publish_consumer_lag(self) -> int | None:
        """Sets the lag gauges; returns the records behind, over every partition with a batch
        processed (None before the first)."""
        try:
            assignment = self.app.consumer.assignment()
        except Exception:  # noqa: BLE001 - before the first assignment there is no consumer to ask
            return None
        total = None
        for tp in assignment:
            next_offset = self._processed_offsets.get((tp.topic, tp.partition))
            if next_offset is None:
                continue
            highwater = self.app.consumer.highwater(tp)
            if highwater is not None:
                lag = max(0, highwater - next_offset)
                metrics.CONSUMER_LAG.labels(tp.topic, str(tp.partition)).set(lag)
                total = (total or 0) + lag
        return total

    def progress(self) -> Progress:
        """Recovering (and how many changelog records remain), or how far behind."""
        recovery = cast(TableManager, self.app.tables).recovery
        if not self._tables_ready():
            return Progress(True, recovery.active_remaining_total(), None)
        return Progress(False, 0, self._lag)  # as the gauges last measured it (every GAUGE_SECONDS)

    async def _flush_offline_log(self) -> None:
        updates = self.offline_log.take()
        for outcome in await asyncio.to_thread(self.offline_log.write, updates):
            # Policy: a failed merge leaves the small files as they were (queries stay right,
            # only slower); it is counted, logged and tried again at the next flush.
            if outcome.merge_error is not None:
                metrics.OFFLINE_LOG_MERGE_ERRORS.inc()
                log.warning("merging offline feature log files failed (will retry): %s", outcome.merge_error)

    def _tables_ready(self) -> bool:
        # `recovery` is on Faust's TableManager, which the app builds, not on TableManagerT.
        recovery = cast(TableManager, self.app.tables).recovery
        return recovery.completed.is_set() and not recovery.in_recovery

    # -- life -----------------------------------------------------------------------------------

    async def start(self) -> None:
        self.producer = await self._started_producer()
        self.models_producer = await self._started_producer()
        if self.settings.table_store == "rocksdb":
            ends = await changelog_ends(self.settings.kafka_bootstrap, self.settings.entity_changelog_topic)
            for line in table_store.remove_stores_ahead_of(self.settings.table_path, self.settings.entity_table, ends):
                log.warning(line)
        self.dead_letters = DeadLetterSink(self.producer, self.settings)
        self.status.start(self.producer)
        for mode in self.modes:
            await mode.start(self.models_producer)

    async def _started_producer(self) -> AIOKafkaProducer:
        producer = AIOKafkaProducer(
            bootstrap_servers=self.settings.kafka_bootstrap,
            acks="all",
            linger_ms=0,
            max_batch_size=1 << 20,
            max_request_size=MAX_MODEL_BYTES,
        )
        await producer.start()
        return producer

    async def stop(self) -> None:
        """Lets the batch in hand finish, then a last snapshot; Faust commits after this."""
        consumer = cast(BatchConsumer, self.app.consumer)  # BatchApp's transport builds it
        consumer.stop_flow()
        await consumer._batch_idle.wait()
        for mode in self.modes:
            await mode.stop()
        await asyncio.to_thread(self.offline_log.write, self.offline_log.take())
        if self.producer is not None:
            await self.status.stop(self.producer)
            await self.producer.stop()
        if self.models_producer is not None:
            await self.models_producer.stop()


async def changelog_ends(bootstrap: str, topic: str) -> dict[int, int]:
    """The end offset of each partition of a changelog ({} while it does not exist)."""
    consumer = AIOKafkaConsumer(bootstrap_servers=bootstrap, enable_auto_commit=False, group_id=None)
    await consumer.start()
    try:
        await consumer._client.force_metadata_update()
        partitions = consumer.partitions_for_topic(topic) or set()
        ends = await consumer.end_offsets([TopicPartition(topic, p) for p in partitions]) if partitions else {}
        return {tp.partition: offset for tp, offset in ends.items()}
    finally:
        await consumer.stop()


def _record_missing_targets(missing: dict[str, int]) -> None:
    for name, count in missing.items():
        metrics.LABELS_MISSING_TARGET.labels(name).inc(count)


def _refused_in_batch(refusal: Refusal, records: Sequence[Record]) -> DeadLetter:
    """A refused example's dead letter; the original message's bytes when it came in this batch
    (as for every other reason), else the example itself."""
    letter = refused_letter(refusal)
    topic, partition, offset = refusal.example.source
    for record in records:
        if (record.topic, record.partition, record.offset) == (topic, partition, offset):
            return DeadLetter(record, letter.reason, letter.detail)
    return letter
