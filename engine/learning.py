"""The learner's life around the Learner: restore, replay, snapshots, publication, admin commands.

One model has one learner. It runs inside the stream worker in the embedded default (the
worker hands it each batch's examples as it goes, so predictions are made by the live
model: exact against River), or as `python -m engine learn`, consuming the examples topic.
Either way every example it learns is on the examples topic (one partition: one order)
before the batch that produced it is committed, and a snapshot records the examples-topic
offset its model covers: after a crash the learner restores the snapshot and relearns the
examples after it, so each is learned once and the model is the one that never crashed.
"""

from __future__ import annotations

import asyncio
import logging
import pickle
import time
import uuid
from collections.abc import Awaitable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import orjson
import river
from aiokafka import AIOKafkaConsumer, AIOKafkaProducer, TopicPartition

from engine import metrics
from engine.settings import Settings
from models.errors import EngineError
from models.examples import INLINE, Example
from models.learner import BatchOutcome, Learner
from models.offload import OFFLOAD_ABOVE_SECONDS, Child
from models.online import OnlineModel
from models.registry import ModelRegistry, RegistryError
from models.rollout import Rollout
from models.snapshots import Snapshot, SnapshotStore
from models.training_log import TrainingLog
from streams.features import FeatureRegistry
from streams.model_topic import (
    CHALLENGER,
    CHAMPION,
    HEARTBEAT,
    REGISTRY,
    ModelVersion,
    encode_version,
    heartbeat_value,
    publish,
)

log = logging.getLogger(__name__)

HEARTBEAT_SECONDS = 2.0
APPLIED_KEPT = 50


@dataclass
class Cadence:
    """When something is due: after `every_labels` examples, or `every_seconds` if any."""

    every_labels: int
    every_seconds: float
    samples: int = 0
    at: float = field(default_factory=time.monotonic)

    def due(self, samples: int, now: float | None = None) -> bool:
        now = time.monotonic() if now is None else now
        learned = samples - self.samples
        return learned >= self.every_labels or (learned > 0 and now - self.at >= self.every_seconds)

    def done(self, samples: int) -> None:
        self.samples, self.at = samples, time.monotonic()

    def retry(self) -> None:
        """Due again at the next check (the last one failed)."""
        self.samples, self.at = -1, float("-inf")


class SnapshotRefused(EngineError):
    pass


def check_snapshot(snapshot: Snapshot, settings: Settings, features: FeatureRegistry) -> None:
    """Raises SnapshotRefused with the reason when this engine must not resume from it."""
    meta = snapshot.meta
    expected = {
        "app_id": settings.app_id,
        "examples_topic": settings.examples_topic,
        "model_name": settings.model_name,
        "river_version": river.__version__,
        "feature_definitions": [vars(d) for d in features.definitions],
    }
    for key, value in expected.items():
        if meta.get(key) != value:
            raise SnapshotRefused(f"its {key} is {meta.get(key)!r}, this engine's is {value!r}")


class LearningService:
    def __init__(
        self, settings: Settings, learner: Learner, features: FeatureRegistry, examples_offset: int = 0
    ) -> None:
        self.settings = settings
        self.learner = learner
        self.features = features
        self.examples_offset = examples_offset  # the next examples-topic offset the model has not learned
        self.snapshots = SnapshotStore(settings.snapshot_path, settings.snapshot_retention)
        self.registry = ModelRegistry(settings.registry_path)
        self.training_log = TrainingLog(settings.training_log_path)
        self.lock = asyncio.Lock()  # batches, commands and timers take turns
        self.producer: AIOKafkaProducer | None = None
        self.revision = 0
        self.applied: list[dict[str, Any]] = []
        self._snapshot_cadence = Cadence(settings.snapshot_every_labels, settings.snapshot_every_seconds)
        self._publish_cadence = Cadence(settings.model_publish_every_labels, settings.model_publish_every_seconds)
        self._tasks: list[asyncio.Task] = []
        self._lags: list[int] = []  # since the last publication
        self._snapshotting: asyncio.Future | None = None
        self._publishing: asyncio.Future | None = None
        self._control: AIOKafkaConsumer | None = None

    # -- start ----------------------------------------------------------------------------

    @classmethod
    def restore(cls, settings: Settings, features: FeatureRegistry) -> LearningService:
        """From the newest snapshot this engine may resume from, or a fresh model."""
        store = SnapshotStore(settings.snapshot_path, settings.snapshot_retention)
        for snapshot in store.valid():
            try:
                check_snapshot(snapshot, settings, features)
            except SnapshotRefused as refused:
                log.warning("not resuming from snapshot %s: %s", snapshot.path.name, refused)
                break
            model = snapshot.state["model"]
            # The limit in force is the setting's; names the model already knows stay known.
            model.max_features = settings.max_model_features
            learner = Learner(model, dedupe_window=settings.dedupe_window)
            learner.restore_state(snapshot.state["learner"])
            log.warning(
                "resuming from snapshot %s: %d samples learned, examples from offset %d",
                snapshot.path.name,
                snapshot.meta["samples_learned"],
                snapshot.meta["examples_offset"],
            )
            service = cls(settings, learner, features, snapshot.meta["examples_offset"])
            service._snapshot_cadence.done(learner.model.samples_learned)
            return service
        model = OnlineModel(
            settings.model_name, fallback_name=settings.fallback_model, max_features=settings.max_model_features
        )
        service = cls(settings, Learner(model, dedupe_window=settings.dedupe_window), features)
        service.registry.ensure_serving(model)
        return service

    async def start(self, producer: AIOKafkaProducer, *, follow_control: bool = True) -> None:
        self.producer = producer
        started = time.perf_counter()
        replayed = await self.replay()
        if replayed:
            seconds = time.perf_counter() - started
            log.warning(
                "relearned %d examples logged after the snapshot in %.2f s (%.0f examples/s)",
                replayed,
                seconds,
                replayed / seconds,
            )
        await self.publish_all()
        self._tasks.append(asyncio.create_task(self._tick_forever()))
        if follow_control:
            self._tasks.append(asyncio.create_task(self._follow_control()))

    async def replay(self) -> int:
        """Learns the examples on the examples topic from the snapshot's offset to its end."""
        tp = TopicPartition(self.settings.examples_topic, 0)
        consumer = AIOKafkaConsumer(
            bootstrap_servers=self.settings.kafka_bootstrap,
            enable_auto_commit=False,
            group_id=None,
            max_poll_records=5000,
        )
        await consumer.start()
        learned = 0
        try:
            consumer.assign([tp])
            start, end = (await consumer.beginning_offsets([tp]))[tp], (await consumer.end_offsets([tp]))[tp]
            if start > self.examples_offset:
                log.error(
                    "examples %d..%d are gone from %s (retention): the model misses them",
                    self.examples_offset,
                    start - 1,
                    tp.topic,
                )
                self.examples_offset = start
            if self.examples_offset >= end:
                return 0
            consumer.seek(tp, self.examples_offset)
            while self.examples_offset < end:
                batch = (await consumer.getmany(tp, timeout_ms=1000)).get(tp, [])
                raw: dict[int, bytes] = {}
                for record in batch:
                    if record.offset >= end:
                        break
                    example = Example.from_record(orjson.loads(record.value))
                    raw[id(example)] = record.value
                    learned += self.learner.learn(example)
                    self.examples_offset = record.offset + 1
                outcome = self.learner.end_batch()
                for example in outcome.learned:
                    self.training_log.append(example.ts, raw[id(example)])
        finally:
            await consumer.stop()
        return learned

    # -- batches --------------------------------------------------------------------------

    async def batch_done(self, outcome: BatchOutcome, examples_offset: int, records: list[bytes]) -> None:
        """After a batch's examples are on the examples topic up to `examples_offset`;
        `records` are those examples as the topic holds them, in the same order."""
        self.examples_offset = examples_offset
        for example, record in zip(outcome.learned, records):
            self.training_log.append(example.ts, record)
        inline = sum(1 for example in outcome.learned if example.label_source == INLINE)
        if inline:
            metrics.LABELS_LEARNED.labels("inline").inc(inline)
        if len(outcome.learned) > inline:
            metrics.LABELS_LEARNED.labels("labels_topic").inc(len(outcome.learned) - inline)
        if outcome.model_lags:
            self._lags.extend(outcome.model_lags)
            metrics.MODEL_VERSION_LAG.observe(sum(outcome.model_lags) / len(outcome.model_lags))
        await self._decide_rollout()
        await self._maybe_publish_and_snapshot()

    async def _maybe_publish_and_snapshot(self) -> None:
        samples = self.learner.model.samples_learned
        if self._publish_cadence.due(samples):
            if self.learner.pickle_seconds <= OFFLOAD_ABOVE_SECONDS:
                await self.publish_all()
            elif self._publishing is None or self._publishing.done():
                # A large model: encoded in a child while batches go on; one publication at a time.
                self._publishing = asyncio.ensure_future(self.publish_all())
        if self._snapshot_cadence.due(samples):
            self.snapshot()

    async def _tick_forever(self) -> None:
        last_beat = 0.0
        while True:
            await asyncio.sleep(min(0.5, self.settings.model_publish_every_seconds))
            try:
                async with self.lock:
                    await self._maybe_publish_and_snapshot()
                    if time.monotonic() - last_beat >= HEARTBEAT_SECONDS:
                        await publish(
                            self.producer, self.settings.models_topic, HEARTBEAT, heartbeat_value(self.revision)
                        )
                        last_beat = time.monotonic()
            except Exception as exc:  # noqa: BLE001 - policy: a failed publication or snapshot is retried next tick
                metrics.LEARNER_ERRORS.labels(type(exc).__name__).inc()
                log.warning("publishing or snapshotting failed, retrying: %r", exc)

    # -- snapshots and publication --------------------------------------------------------

    def snapshot(self) -> None:
        """Takes a snapshot of the verified model as it is now (a consistent cut) and writes it:
        a large model in a forked child (models/offload.py), so that the stream does not wait
        on pickling or fsync. Policy: a failed write (an OSError, a failed child) is logged
        and counted, and the next snapshot is tried at the next due time; the stream goes on
        (a crash then relearns more of the examples topic, nothing is lost)."""
        if self._snapshotting is not None and not self._snapshotting.done():
            return  # one at a time: the next due time comes soon enough
        if not self.learner.verified():
            log.error("not snapshotting: the model stays unhealthy after healing")
            return
        model = self.learner.model
        meta = {
            "app_id": self.settings.app_id,
            "examples_topic": self.settings.examples_topic,
            "examples_offset": self.examples_offset,
            "model_name": model.name,
            "model_version": model.version,
            "samples_learned": model.samples_learned,
            "feature_definitions": [vars(d) for d in self.features.definitions],
            "river_version": river.__version__,
            "created_at": time.time(),
            "metrics": model.metric_values(),
        }
        state = {"model": model, "learner": self.learner.state()}
        self._snapshot_cadence.done(model.samples_learned)
        try:
            self.training_log.flush()
            if self.learner.pickle_seconds > OFFLOAD_ABOVE_SECONDS:
                child = Child(lambda: pickle.dumps(self.snapshots.write(meta, state)))
                self._snapshotting = asyncio.ensure_future(self._snapshot_written(child.result(), meta))
                return
            self._record_snapshot(*self.snapshots.write(meta, state), meta)
        except OSError as exc:
            self._snapshot_failed(exc)

    async def _snapshot_written(self, result: Awaitable[bytes], meta: dict[str, Any]) -> None:
        try:
            path, size, seconds = pickle.loads(await result)
            self._record_snapshot(path, size, seconds, meta)
        except (OSError, RuntimeError) as exc:
            self._snapshot_failed(exc)

    def _record_snapshot(self, path: Path, size: int, seconds: float, meta: dict[str, Any]) -> None:
        metrics.SNAPSHOT_BYTES.set(size)
        metrics.SNAPSHOT_SECONDS.observe(seconds)
        log.info("snapshot %s: %d samples, %d bytes in %.3f s", path.name, meta["samples_learned"], size, seconds)

    def _snapshot_failed(self, exc: BaseException) -> None:
        metrics.LEARNER_ERRORS.labels("snapshot_" + type(exc).__name__).inc()
        log.error("snapshot failed (will retry): %r", exc)
        self._snapshot_cadence.retry()

    async def publish_all(self) -> None:
        """Publishes the champion, the challenger (or its absence) and the registry. The model
        is encoded as it is now; a large one in a forked child, while the stream goes on."""
        assert self.producer is not None
        if not self.learner.verified():
            log.error("not publishing: the model stays unhealthy after healing")
            return
        self.revision += 1
        model = self.learner.model
        rollout = self.learner.rollout
        lags, self._lags = self._lags, []
        info = {
            "name": model.name,
            "task": model.task.value,
            "metrics": model.metric_values(),
            "concept_drifts": model.drifts_detected,
            "rollout": rollout.status() if rollout else None,
            "prediction_model_lag": {
                "mean_samples": sum(lags) / len(lags),
                "max_samples": max(lags),
                "examples": len(lags),
            }
            if lags
            else None,
        }
        versions = [ModelVersion(model, model.version, self.revision, model.samples_learned, time.time(), info)]
        if rollout is not None:
            challenger = rollout.challenger
            challenger_info = {"name": challenger.name, "mode": rollout.mode, "share": rollout.share}
            versions.append(
                ModelVersion(
                    challenger,
                    challenger.version,
                    self.revision,
                    challenger.samples_learned,
                    time.time(),
                    challenger_info,
                )
            )
        self._publish_cadence.done(model.samples_learned)
        publish_model_gauges(model)
        if self.learner.pickle_seconds > OFFLOAD_ABOVE_SECONDS:
            encoded = pickle.loads(await Child(lambda: pickle.dumps([encode_version(v) for v in versions])).result())
        else:
            encoded = [encode_version(v) for v in versions]
        topic = self.settings.models_topic
        await publish(self.producer, topic, CHAMPION, encoded[0])
        await publish(self.producer, topic, CHALLENGER, encoded[1] if len(encoded) > 1 else None)
        await self.publish_registry()

    async def publish_registry(self) -> None:
        assert self.producer is not None
        record = {"versions": self.registry.versions(), "serving": self.registry.serving, "applied": self.applied}
        await publish(self.producer, self.settings.models_topic, REGISTRY, orjson.dumps(record, default=str))

    # -- rollouts and admin commands ------------------------------------------------------

    async def _decide_rollout(self) -> None:
        rollout = self.learner.rollout
        if rollout is None:
            return
        verdict = rollout.decision()
        if verdict is None:
            return
        challenger = rollout.challenger
        log.warning("rollout of version %s: %s (%s)", challenger.version, verdict, rollout.status())
        try:
            if verdict == "promote":
                self.registry.promote(challenger.version, self.learner.model)
            self.registry.annotate(challenger.version, rollout_result=verdict, rollout=rollout.status())
        except (OSError, RegistryError) as exc:
            # Policy: the decision is not carried out without its record; the rollout goes on
            # and the decision is taken again after the next batch.
            metrics.LEARNER_ERRORS.labels("registry_" + type(exc).__name__).inc()
            log.error("recording the rollout decision failed (will retry): %r", exc)
            return
        self.learner.rollout = None
        if verdict == "promote":
            self.learner.replace_model(challenger)  # it went on learning during the rollout
        metrics.ROLLOUT_DECISIONS.labels(verdict).inc()
        await self.publish_all()
        self.snapshot()

    def apply(self, command: dict[str, Any]) -> dict[str, Any]:
        """Carries out one admin command; returns {"ok", "status", ...} for the caller."""
        action, name = command.get("action"), command.get("model")
        model = self.learner.model
        if name != model.name:
            return {"ok": False, "status": 404, "error": f"the serving model is {model.name!r}, not {name!r}"}
        try:
            if action == "promote":
                self.learner.replace_model(self.registry.promote(int(command["version"]), model))
            elif action == "rollback":
                self.learner.replace_model(self.registry.rollback(model))
            elif action == "rollout":
                challenger = self.registry.load(int(command["version"]))
                if challenger.task is not model.task:
                    return {
                        "ok": False,
                        "status": 422,
                        "error": f"version {command['version']} is a {challenger.task.value} model",
                    }
                self.learner.rollout = Rollout(
                    challenger,
                    mode=command["mode"],
                    share=command["share"],
                    min_labels=command["min_labels"],
                    margin=command["margin"],
                )
                return {"ok": True, "status": 200, "rollout": self.learner.rollout.status()}
            elif action == "rollout_stop":
                rollout = self.learner.rollout
                if rollout is None:
                    return {"ok": False, "status": 409, "error": "no rollout is running"}
                self.learner.rollout = None
                self.registry.annotate(rollout.challenger.version, rollout_result="stopped", rollout=rollout.status())
                return {"ok": True, "status": 200, "stopped": rollout.status()}
            else:
                return {"ok": False, "status": 422, "error": f"unknown action {action!r}"}
        except RegistryError as exc:
            return {"ok": False, "status": 409, "error": str(exc)}
        except OSError as exc:  # the registry could not be written: nothing changed, try again
            metrics.LEARNER_ERRORS.labels("registry_" + type(exc).__name__).inc()
            return {"ok": False, "status": 503, "error": f"the model registry could not be written: {exc}"}
        except (ValueError, KeyError, TypeError) as exc:
            return {"ok": False, "status": 422, "error": str(exc)}
        served = self.learner.model
        return {
            "ok": True,
            "status": 200,
            "serving": {"name": served.name, "version": served.version, "samples_learned": served.samples_learned},
        }

    async def _follow_control(self) -> None:
        """Commands from every serving process, applied one at a time, between batches.
        A command's result is published in the registry record under its id."""
        consumer = AIOKafkaConsumer(
            self.settings.control_topic,
            bootstrap_servers=self.settings.kafka_bootstrap,
            group_id=f"{self.settings.app_id}-control",
            enable_auto_commit=False,
            auto_offset_reset="latest",
        )
        self._control = consumer
        await consumer.start()
        try:
            while True:
                batch = await consumer.getmany(timeout_ms=1000)
                for records in batch.values():
                    for record in records:
                        await self._run_command(record.value)
                if batch:
                    await consumer.commit()
        finally:
            await consumer.stop()

    async def _run_command(self, raw: bytes) -> None:
        try:
            command = orjson.loads(raw)
        except orjson.JSONDecodeError:
            log.warning("ignoring an unreadable control command: %r", raw[:200])
            return
        if any(done.get("id") == command.get("id") for done in self.applied):
            return  # redelivered after a restart: already carried out
        async with self.lock:
            result = self.apply(command)
            self.applied = [*self.applied[-(APPLIED_KEPT - 1) :], {"id": command.get("id"), **result}]
            await self.publish_all()
            if result["ok"]:
                self.snapshot()
        log.warning("admin command %s: %s", command, result)

    # -- stop -----------------------------------------------------------------------------

    async def stop(self) -> None:
        """A last snapshot and publication, so that a restart relearns nothing."""
        for task in self._tasks:
            task.cancel()
        await asyncio.gather(*self._tasks, return_exceptions=True)
        async with self.lock:
            for pending in (self._snapshotting, self._publishing):
                if pending is not None:
                    await asyncio.gather(pending, return_exceptions=True)
            if self.learner.model.samples_learned != self._snapshot_cadence.samples:
                self.snapshot()
            if self._snapshotting is not None:
                await asyncio.gather(self._snapshotting, return_exceptions=True)
            if self.producer is not None and self.learner.model.samples_learned != self._publish_cadence.samples:
                try:
                    await asyncio.wait_for(self.publish_all(), 5.0)
                except Exception as exc:  # noqa: BLE001 - stopping; the snapshot already holds everything
                    log.warning("last publication failed: %r", exc)


def new_command(action: str, model: str, **args: Any) -> dict[str, Any]:
    return {"id": uuid.uuid4().hex, "action": action, "model": model, **args}


_info_labels: list[tuple[str, str, str]] = []


def publish_model_gauges(model: OnlineModel) -> None:
    for name, value in model.metric_values().items():
        metrics.MODEL_METRIC.labels(model.name, name).set(value)
    if model.served_samples:
        for name, value in model.served_metric_values().items():
            metrics.SERVED_METRIC.labels(model.name, name).set(value)
    metrics.MODEL_SAMPLES.labels(model.name).set(model.samples_learned)
    metrics.MODEL_DRIFTS.labels(model.name).set(model.drifts_detected)
    metrics.MODELS_PUBLISHED.inc()
    # Series cannot be removed across processes: the one a model replaced goes to 0.
    labels = (model.name, str(model.version), model.task.value)
    for old in _info_labels:
        if old != labels:
            metrics.MODEL_INFO.labels(*old).set(0)
    metrics.MODEL_INFO.labels(*labels).set(1)
    _info_labels[:] = [labels]
