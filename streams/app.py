"""The Faust app: topics, changelogged tables and the two agents.

Thin glue around `StreamProcessor`: it hands over raw bytes, sends rejects to the
dead-letter topics with the reason in headers (the Kafka Connect convention), and keeps
the model's Prometheus gauges current.
"""

from __future__ import annotations

import asyncio
import logging
import time
from dataclasses import dataclass
from typing import Any

import faust
import river

from engine import metrics
from engine.settings import Settings
from models.drift import DriftMonitor
from models.online import OnlineModel
from models.registry import ModelRegistry
from models.snapshots import Snapshot, SnapshotStore
from models.training_log import TrainingLog
from streams.features import FeatureRegistry
from streams.gap_filler import read_range
from streams.offline_store import OfflineFeatureLog
from streams.processor import StreamProcessor
from streams.records import InvalidMessage
from streams.write_behind import WriteBehind

log = logging.getLogger(__name__)

EXPIRY_INTERVAL_SECONDS = 1.0
PENDING_EXPIRY_INTERVAL_SECONDS = 10.0
# The API shares the event loop: a whole batch at once would hold /predict up for its duration.
YIELD_EVERY = 32


@dataclass
class StreamApp:
    app: faust.App
    processor: StreamProcessor
    entities: Any
    pending: Any
    offline_log: OfflineFeatureLog
    lock: asyncio.Lock
    write_snapshot: Any

    def is_ready(self) -> bool:
        """Partitions assigned and tables recovered from their changelogs."""
        app = self.app
        if not app.consumer_generation_id or app.rebalancing:
            return False
        recovery = app.tables.recovery
        return recovery.completed.is_set() and not recovery.in_recovery


def dlq_headers(reason: str, detail: str, message: Any) -> list[tuple[str, bytes]]:
    return [
        ("dlq.reason", reason.encode()),
        ("dlq.detail", detail[:1000].encode()),
        ("dlq.source.topic", str(message.topic).encode()),
        ("dlq.source.partition", str(message.partition).encode()),
        ("dlq.source.offset", str(message.offset).encode()),
    ]


def build_stream_app(
    settings: Settings,
    model: OnlineModel,
    registry: FeatureRegistry,
    snapshots: SnapshotStore | None = None,
    restored: Snapshot | None = None,
    model_registry: ModelRegistry | None = None,
    on_model_change: Any = None,
) -> StreamApp:
    app = faust.App(
        settings.app_id,
        broker=f"kafka://{settings.kafka_bootstrap}",
        store="memory://",
        topic_partitions=settings.topic_partitions,
        topic_replication_factor=1,
        web_enabled=False,
        datadir=str(settings.state_path / "faust"),
        consumer_auto_offset_reset="earliest",
        producer_linger_ms=1,
        stream_wait_empty=False,
        # A killed engine's group membership must lapse quickly for its restart to get the partitions.
        broker_session_timeout=settings.kafka_session_timeout_seconds,
        broker_heartbeat_interval=max(1.0, settings.kafka_session_timeout_seconds / 4),
    )
    raw = {"key_type": bytes, "value_type": bytes, "key_serializer": "raw", "value_serializer": "raw"}
    events_topic = app.topic(settings.events_topic, partitions=settings.topic_partitions, **raw)
    labels_topic = app.topic(settings.labels_topic, partitions=settings.topic_partitions, **raw)
    events_dlq = app.topic(settings.dlq_events_topic, partitions=1, **raw)
    labels_dlq = app.topic(settings.dlq_labels_topic, partitions=1, **raw)

    # use_partitioner: the changelog partition follows the key's hash (as the producers' keys do),
    # so tables can be written from timers and batches, not only inside per-event iteration.
    table_options = {"default": None, "partitions": settings.topic_partitions, "use_partitioner": True,
                     "key_type": str}
    entities = app.Table("entity-features", **table_options)
    pending = app.Table("pending-predictions", **table_options)
    entity_writes, pending_writes = WriteBehind(entities), WriteBehind(pending)
    offline_log = OfflineFeatureLog(settings.state_path / "offline-features")
    training_log = TrainingLog(settings.training_log_path)
    processor = StreamProcessor(
        model,
        registry,
        entity_writes,
        pending_writes,
        max_message_bytes=settings.max_message_bytes,
        dedupe_window=settings.dedupe_window,
        pending_ttl_seconds=settings.pending_ttl_seconds,
        pending_max=settings.pending_max,
        early_label_grace_seconds=settings.early_label_grace_seconds,
        offline_log=offline_log,
        training_log=training_log,
    )

    async def dead_letter(topic: Any, message: Any, error: InvalidMessage) -> None:
        metrics.DLQ_MESSAGES.labels(str(topic.get_topic_name()), error.reason).inc()
        await topic.send(
            key=message.key, value=message.value, headers=dlq_headers(error.reason, error.detail, message)
        )

    # Snapshots: one lock makes a consistent cut between the two agents' batches. The
    # offsets a snapshot records are the next ones to process, per (topic, partition).
    lock = asyncio.Lock()
    next_offsets: dict[tuple[str, int], int] = dict(restored.meta["offsets"]) if restored else {}
    tables_to_restore = [restored.state["processor"]] if restored else []
    if restored:
        processor.restore(restored.state["processor"])
    last_snapshot = {"samples": model.samples_learned, "at": time.monotonic()}
    # processor.model, not `model`: promote and rollback replace the live model.

    def flush_tables() -> None:
        entity_writes.flush()
        pending_writes.flush()

    def restore_tables_once() -> None:
        # The tables came back from their changelogs as they were at the crash, later than
        # the snapshot; replayed events must meet the state they met the first time.
        if tables_to_restore:
            processor.restore_tables(tables_to_restore.pop())
            flush_tables()

    async def in_order(message: Any) -> list[Any]:
        """The messages to process now, in offset order: none for a message the snapshot
        covers or this process handled already (Faust may deliver one twice around a
        restore), the skipped ones first when Faust resumed past the snapshot's offsets."""
        key = (message.topic, message.partition)
        expected = next_offsets.get(key)
        if expected is not None and message.offset < expected:
            return []
        if expected is not None and message.offset > expected:
            log.info("reading offsets %d..%d of %s that the stream skipped", expected, message.offset - 1, key)
            missing = await read_range(settings.kafka_bootstrap, message.topic, message.partition, expected, message.offset)
            return [*missing, message]
        return [message]

    async def handle(message: Any, handler: Any, dlq: Any) -> None:
        # The state change and the offset mark happen with no await in between, so a
        # snapshot (or a cancellation) sees either both or neither.
        try:
            handler(message.value or b"")
            error = None
        except InvalidMessage as exc:
            error = exc
        next_offsets[(message.topic, message.partition)] = message.offset + 1
        if error is not None:
            await dead_letter(dlq, message, error)

    def snapshot_if_due() -> None:
        if snapshots is None:
            return
        learned = processor.model.samples_learned - last_snapshot["samples"]
        overdue = time.monotonic() - last_snapshot["at"] >= settings.snapshot_every_seconds
        if learned >= settings.snapshot_every_labels or (overdue and learned > 0):
            write_snapshot()

    def write_snapshot() -> None:
        offline_log.flush()
        training_log.flush()
        model = processor.model
        meta = {
            "app_id": settings.app_id,
            "topics": [settings.events_topic, settings.labels_topic],
            "model_name": model.name,
            "model_version": model.version,
            "samples_learned": model.samples_learned,
            "offsets": dict(next_offsets),
            "feature_definitions": [vars(d) for d in registry.definitions],
            "river_version": river.__version__,
            "created_at": time.time(),
            "metrics": model.metric_values(),
        }
        path, size, seconds = snapshots.write(meta, {"model": model, "processor": processor.checkpoint()})
        last_snapshot.update(samples=model.samples_learned, at=time.monotonic())
        metrics.SNAPSHOT_BYTES.set(size)
        metrics.SNAPSHOT_SECONDS.observe(seconds)
        log.info("snapshot %s: %d samples, %d bytes in %.3f s", path.name, model.samples_learned, size, seconds)

    def snapshot_on_stop() -> None:
        # A graceful stop lets Faust commit offsets past the last periodic snapshot.
        if snapshots is not None and processor.model.samples_learned != last_snapshot["samples"]:
            write_snapshot()

    def decide_rollout() -> None:
        rollout = processor.rollout
        verdict = rollout.decision() if rollout is not None else None
        if verdict is None:
            return
        processor.rollout = None
        challenger = rollout.challenger
        log.warning("rollout of version %s: %s (%s)", challenger.version, verdict, rollout.status())
        if model_registry is not None:
            if verdict == "promote":
                model_registry.promote(challenger.version, processor.model)
            model_registry.annotate(challenger.version, rollout_result=verdict, rollout=rollout.status())
        if verdict == "promote":
            # The challenger itself, which went on learning during the rollout, takes over.
            processor.model = challenger
            if on_model_change is not None:
                on_model_change(challenger)
        metrics.ROLLOUT_DECISIONS.labels(verdict).inc()
        if snapshots is not None:
            write_snapshot()

    async def process_batch(batch: list[Any], handler: Any, dlq: Any) -> None:
        # Features must meet the tables as recovered from their changelogs, never an empty
        # table that recovery then overwrites.
        recovery = app.tables.recovery
        if not recovery.completed.is_set():
            await recovery.completed.wait()
        async with lock:
            restore_tables_once()
            for position, event in enumerate(batch, 1):
                for message in await in_order(event.message):
                    await handle(message, handler, dlq)
                if position % YIELD_EVERY == 0:
                    await asyncio.sleep(0)  # let waiting HTTP requests in between
            flush_tables()  # before take_events acknowledges the batch's offsets
            decide_rollout()
            snapshot_if_due()

    @app.agent(events_topic, name="consume-events")
    async def consume_events(stream: Any) -> None:
        try:
            async for batch in stream.take_events(settings.stream_batch_size, within=settings.stream_batch_seconds):
                started = time.perf_counter()
                await process_batch(batch, processor.handle_event, events_dlq)
                metrics.STREAM_BATCH_SECONDS.observe(time.perf_counter() - started)
        finally:
            snapshot_on_stop()

    @app.agent(labels_topic, name="consume-labels")
    async def consume_labels(stream: Any) -> None:
        try:
            async for batch in stream.take_events(settings.stream_batch_size, within=settings.stream_batch_seconds):
                await process_batch(batch, processor.handle_label, labels_dlq)
        finally:
            snapshot_on_stop()

    @app.timer(PENDING_EXPIRY_INTERVAL_SECONDS, on_leader=False)
    async def expire_pending_predictions() -> None:
        # A scan of the whole pending store: every few seconds, not every second.
        if not tables_to_restore:  # expiring before the snapshot's tables are back would be undone
            async with lock:
                processor.expire_pending()
                flush_tables()

    @app.timer(EXPIRY_INTERVAL_SECONDS, on_leader=False)
    async def expire_and_publish_gauges() -> None:
        for raw_label in processor.expire_early_labels():
            metrics.DLQ_MESSAGES.labels(settings.dlq_labels_topic, "unknown_event").inc()
            await labels_dlq.send(
                value=raw_label,
                headers=[("dlq.reason", b"unknown_event"), ("dlq.detail", b"no event with this event_id arrived")],
            )
        publish_model_gauges(processor.model)
        publish_drift_gauges(processor.drift)
        publish_consumer_lag(app, next_offsets)

    @app.timer(settings.offline_flush_seconds, on_leader=False)
    async def flush_offline_log() -> None:
        # The training log is flushed only with a snapshot, so on disk it always holds exactly
        # the examples a snapshot covers: a replay after a crash cannot add an example twice.
        offline_log.flush()

    return StreamApp(app, processor, entity_writes, pending_writes, offline_log, lock, write_snapshot)


def publish_model_gauges(model: OnlineModel) -> None:
    for name, value in model.metric_values().items():
        metrics.MODEL_METRIC.labels(model.name, name).set(value)
    metrics.MODEL_SAMPLES.labels(model.name).set(model.samples_learned)
    metrics.MODEL_DRIFTS.labels(model.name).set(model.drifts_detected)
    metrics.MODEL_INFO.clear()  # one serving model: drop the series of the one it replaced
    metrics.MODEL_INFO.labels(model.name, str(model.version), model.task.value).set(1)


def publish_drift_gauges(drift: DriftMonitor) -> None:
    per_feature, prediction = drift.next_statistics()
    for name, ks in per_feature.items():
        metrics.FEATURE_DRIFT_KS.labels(name).set(ks)
    if prediction is not None:
        metrics.PREDICTION_DRIFT_KS.set(prediction)


def publish_consumer_lag(app: faust.App, next_offsets: dict[tuple[str, int], int]) -> None:
    """Messages in the log not yet processed, per topic partition we consume."""
    try:
        assignment = app.consumer.assignment()
    except Exception:  # noqa: BLE001 - before the first assignment there is no consumer to ask
        return
    for tp in assignment:
        next_offset = next_offsets.get((tp.topic, tp.partition))
        highwater = app.consumer.highwater(tp) if next_offset is not None else None
        if highwater is not None:
            metrics.CONSUMER_LAG.labels(tp.topic, str(tp.partition)).set(max(0, highwater - next_offset))
