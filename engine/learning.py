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
from collections.abc import Awaitable, Iterable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import river
from aiokafka import AIOKafkaProducer

from engine import metrics
from engine.admin_commands import APPLIED_KEPT, ControlFollower, apply
from engine.publisher import ModelPublisher
from engine.settings import Settings
from models.errors import EngineError
from models.examples import INLINE, Example
from models.learner import BatchOutcome, Learner
from models.offload import OFFLOAD_ABOVE_SECONDS, Child
from models.online import OnlineModel
from models.parquet_log import PendingFile
from models.pickling import Pickled
from models.registry import ModelRegistry, RegistryError
from models.snapshots import Snapshot, SnapshotStore, pickled_snapshot, sealed
from models.training_log import TrainingLog
from streams.examples_reader import ExamplesReader
from streams.features import FeatureRegistry

log = logging.getLogger(__name__)

HEARTBEAT_SECONDS = 2.0
REPLAY_FETCH_RECORDS = 5000
CONTROL_JOIN_SECONDS = 15.0
PUBLISH_COST_FACTOR = 20  # publish no more often than 20x the pickling time: at most 5% of the time


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


def snapshot_identity(settings: Settings, features: FeatureRegistry) -> dict[str, Any]:
    """What a snapshot must have been taken by for this engine to resume from it."""
    identity = {
        "app_id": settings.app_id,
        "examples_topic": settings.examples_topic,
        "model_name": settings.model_name,
        "river_version": river.__version__,
        "feature_definitions": [vars(d) for d in features.definitions],
    }
    if settings.model.scoped:  # a named model's, with the target it learns
        identity["named_model"] = settings.model.describe()
    return identity


def check_snapshot(snapshot: Snapshot, settings: Settings, features: FeatureRegistry) -> None:
    """Raises SnapshotRefused with the reason when this engine must not resume from it."""
    meta = snapshot.meta
    for key, value in snapshot_identity(settings, features).items():
        if meta.get(key) != value:
            raise SnapshotRefused(f"its {key} is {meta.get(key)!r}, this engine's is {value!r}")


def learn_records(learner: Learner, records: Sequence[bytes]) -> tuple[BatchOutcome, list[bytes]]:
    """Learns examples-topic records (their values) in order and ends the batch: the outcome, and the
    bytes of each example learned as the examples topic holds it (encoded again when healing
    made its prediction again). The one loop of the embedded learner's replay and of
    `engine learn`.

    An example the learner predicted itself (`learner_predicts`) is logged as the topic
    holds it, unpredicted: the training log keeps features and labels, and encoding each
    one again would cost the learner, the slower process of the two, about a tenth of its time."""
    taken: list[Example] = []
    taken_records: list[bytes] = []
    for record in records:
        example = Example.decode(record)
        if learner.learn(example):
            taken.append(example)
            taken_records.append(record)
    outcome = learner.end_batch()
    learned = outcome.learned
    if len(learned) == len(taken):
        # What was learned is what `learn` took, in order: a heal keeps the order and only
        # takes examples out (the culprits), so with none taken out the two are one list.
        # (Pairing by source through a dict cost the learner apart 0.8 µs an example, 3-4 %
        # of its time; in step, 0.3.)
        originals: Iterable[tuple[Example | None, bytes]] = zip(taken, taken_records)
    else:
        # A heal left culprits out: the others are paired by source.
        read = {example.source: (example, record) for example, record in zip(taken, taken_records)}
        originals = (read.get(example.source, (None, b"")) for example in learned)
    # Logged as read: the record's own example, or one the learner predicted itself after
    # admitting every name it came with (inline: a call per example is a tenth of a µs).
    return outcome, [
        value
        if original is example
        or (
            original is not None
            and original.learner_predicts
            and (example.features is original.features or example.features == original.features)
        )
        else example.encode()
        for example, (original, value) in zip(learned, originals)
    ]


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
        self.publisher: ModelPublisher | None = None  # from start(), with the producer
        self.applied: list[dict[str, Any]] = []  # the latest admin commands' outcomes, by id
        self._verify_seconds = 0.0
        self._dropped_counted = learner.model.features_dropped
        self._snapshot_cadence = Cadence(settings.snapshot_every_labels, settings.snapshot_every_seconds)
        self._publish_cadence = Cadence(settings.model_publish_every_labels, settings.model_publish_every_seconds)
        self._tasks: list[asyncio.Task] = []
        self._snapshotting: asyncio.Future | None = None
        self._publishing: asyncio.Future | None = None

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
        s = self.settings
        self.publisher = ModelPublisher(
            producer, s.models_topic, s.model_key_prefix, s.model.name if s.model.scoped else ""
        )
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
        if follow_control:
            follower = ControlFollower(self.settings, self.run_command)
            self._tasks.append(asyncio.create_task(follower.follow()))
            try:
                await asyncio.wait_for(follower.listening.wait(), CONTROL_JOIN_SECONDS)
            except TimeoutError:
                log.warning("admin commands are not followed yet; commands sent now may be missed")
        await self.publish_all()
        self._tasks.append(asyncio.create_task(self._tick_forever()))

    async def replay(self) -> int:
        """Learns the examples on the examples topic from the snapshot's offset to its end."""
        s = self.settings
        reader = ExamplesReader(s.kafka_bootstrap, s.examples_topic, self.examples_offset, REPLAY_FETCH_RECORDS)
        learned = 0
        try:
            start, end = await asyncio.to_thread(reader.bounds)
            if start > self.examples_offset:
                log.error(
                    "examples %d..%d are gone from %s (retention): the model misses them",
                    self.examples_offset,
                    start - 1,
                    s.examples_topic,
                )
                self.examples_offset = start
            while self.examples_offset < end:
                # Only what was logged when the replay began: what follows is learned as it comes.
                values, after = await reader.fetch(timeout=1.0, before=end)
                if not values:
                    continue
                outcome, logged = learn_records(self.learner, values)
                learned += len(outcome.learned)
                self.examples_offset = after
                self.training_log.extend([example.ts for example in outcome.learned], logged)
        finally:
            await asyncio.to_thread(reader.close)
        return learned

    # -- batches --------------------------------------------------------------------------

    async def batch_done(self, outcome: BatchOutcome, examples_offset: int, records: list[bytes]) -> None:
        """After a batch's examples are on the examples topic up to `examples_offset`;
        `records` are those examples as the topic holds them, in the same order."""
        self.examples_offset = examples_offset
        self.training_log.extend([example.ts for example in outcome.learned], records)
        inline = sum(1 for example in outcome.learned if example.label_source == INLINE)
        name = self.series
        if inline:
            metrics.LABELS_LEARNED.labels(name, "inline").inc(inline)
        if len(outcome.learned) > inline:
            metrics.LABELS_LEARNED.labels(name, "labels_topic").inc(len(outcome.learned) - inline)
        self._count_dropped_features()
        if outcome.model_lags and self.publisher is not None:
            self.publisher.lags.extend(outcome.model_lags)
            metrics.MODEL_VERSION_LAG.labels(name).observe(sum(outcome.model_lags) / len(outcome.model_lags))
        await self._decide_rollout()
        await self._maybe_publish_and_snapshot()

    @property
    def series(self) -> str:
        """The `model` label of this learner's series: a named model's name; without MODELS,
        the serving model's factory (as it was before named models)."""
        named = self.settings.model
        return named.name if named.scoped else self.learner.model.name

    def _count_dropped_features(self) -> None:
        """The values the model left out since the last batch (past MAX_MODEL_FEATURES), counted
        here for both worker modes: the embedded worker admits on this very model."""
        model = self.learner.model
        dropped = model.features_dropped - self._dropped_counted
        if dropped > 0:
            metrics.FEATURES_DROPPED.labels(self.series).inc(dropped)
        # A heal or a promotion can move the model's own count back: count on from there.
        self._dropped_counted = model.features_dropped

    def publish_interval(self) -> float:
        """How soon after learning the serving model follows: as soon as publishing is cheap,
        at most 1/20 of the time spent pickling (at least MODEL_PUBLISH_MIN_SECONDS), and
        never later than MODEL_PUBLISH_EVERY_SECONDS."""
        s = self.settings
        cost = self.learner.pickle_seconds + self._verify_seconds
        cheap = max(s.model_publish_min_seconds, PUBLISH_COST_FACTOR * cost)
        return min(s.model_publish_every_seconds, cheap)

    async def _maybe_publish_and_snapshot(self) -> None:
        samples = self.learner.model.samples_learned
        self._publish_cadence.every_seconds = self.publish_interval()
        if self._publish_cadence.due(samples):
            if self.learner.pickle_seconds <= OFFLOAD_ABOVE_SECONDS:
                await self.publish_all(wait=False)
            elif self._publishing is None or self._publishing.done():
                # A large model: encoded in a child while batches go on; one publication at a time.
                self._publishing = asyncio.ensure_future(self.publish_all())
        if self._snapshot_cadence.due(samples):
            self.snapshot()

    async def _tick_forever(self) -> None:
        last_beat = 0.0
        while True:
            await asyncio.sleep(min(0.5, self.publish_interval() / 2))
            try:
                async with self.lock:
                    await self._maybe_publish_and_snapshot()
                # Outside the lock: it reads no learner state, and held there it kept the
                # next batch waiting for the broker's acknowledgement every two seconds.
                if self.publisher is not None and time.monotonic() - last_beat >= HEARTBEAT_SECONDS:
                    await self.publisher.heartbeat()
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
        if self.learner.pickle_seconds > OFFLOAD_ABOVE_SECONDS:
            self._snapshotting = asyncio.ensure_future(self._snapshot_in_child())
            return
        # The model as a checkpoint taken now: the learner goes on with objects loaded from
        # it, where pickling the model itself would leave it slower (models/pickling.py).
        checkpoint = self.learner.verified_checkpoint()
        if checkpoint is None:
            log.error("not snapshotting: the model stays unhealthy after healing")
            return
        meta, state = self._snapshot_cut(Pickled(checkpoint))
        try:
            # The cut, on the loop: the training log's rows so far and the pickled state. The
            # rest (checksum, Parquet encoding, fsyncs: tens of milliseconds) is done on a
            # thread while batches go on, the training log first, as before.
            training = self.training_log.take()
            data = pickled_snapshot(meta, state)
        except OSError as exc:
            self._snapshot_failed(exc)
            return
        self._snapshotting = asyncio.ensure_future(self._snapshot_written_on_thread(training, data, meta))

    def _snapshot_cut(self, pickled: Pickled | None = None) -> tuple[dict[str, Any], dict[str, Any]]:
        """`pickled`: the model already pickled (it loads as the model); without it, the model."""
        model = self.learner.model
        meta = {
            **snapshot_identity(self.settings, self.features),
            "model_name": model.name,  # the model promoted, which may differ from MODEL's
            "examples_offset": self.examples_offset,
            "model_version": model.version,
            "samples_learned": model.samples_learned,
            "created_at": time.time(),
            "metrics": model.metric_values(),
        }
        self._snapshot_cadence.done(model.samples_learned)
        return meta, {"model": model if pickled is None else pickled, "learner": self.learner.state()}

    async def _snapshot_in_child(self) -> None:
        """A large model's snapshot. The training log is written before it (a snapshot must
        never cover examples the log lacks): the rows so far on a thread while batches go on
        (Parquet and an fsync took tens of milliseconds of the loop), then, at the cut, the
        few learned meanwhile; the cut is forked and the child writes the snapshot."""
        try:
            await asyncio.to_thread(self.training_log.write, self.training_log.take())
        except OSError as exc:
            self._snapshot_failed(exc)
            return
        # From here to the fork, nothing awaits: the state, the offset and the log agree.
        if not self.learner.verified():
            log.error("not snapshotting: the model stays unhealthy after healing")
            return
        meta, state = self._snapshot_cut()
        try:
            self.training_log.flush()
            child = Child(lambda: pickle.dumps(self.snapshots.write(meta, state)))
        except OSError as exc:
            self._snapshot_failed(exc)
            return
        await self._snapshot_written(child.result(), meta)

    def _write_snapshot(
        self, training: PendingFile | None, data: bytes, meta: dict[str, Any]
    ) -> tuple[Path, int, float]:
        self.training_log.write(training)
        return self.snapshots.write_encoded(sealed(data), meta)

    async def _snapshot_written_on_thread(
        self, training: PendingFile | None, data: bytes, meta: dict[str, Any]
    ) -> None:
        try:
            written = await asyncio.to_thread(self._write_snapshot, training, data, meta)
        except OSError as exc:
            self._snapshot_failed(exc)
            return
        self._record_snapshot(*written, meta)

    async def _snapshot_written(self, result: Awaitable[bytes], meta: dict[str, Any]) -> None:
        try:
            path, size, seconds = pickle.loads(await result)
            self._record_snapshot(path, size, seconds, meta)
        except (OSError, RuntimeError) as exc:
            self._snapshot_failed(exc)

    def _record_snapshot(self, path: Path, size: int, seconds: float, meta: dict[str, Any]) -> None:
        metrics.SNAPSHOT_BYTES.labels(self.series).set(size)
        metrics.SNAPSHOT_SECONDS.observe(seconds)
        log.info("snapshot %s: %d samples, %d bytes in %.3f s", path.name, meta["samples_learned"], size, seconds)

    def _snapshot_failed(self, exc: BaseException) -> None:
        metrics.LEARNER_ERRORS.labels("snapshot_" + type(exc).__name__).inc()
        log.error("snapshot failed (will retry): %r", exc)
        self._snapshot_cadence.retry()

    async def publish_all(self, *, wait: bool = True) -> None:
        """Publishes the verified model (see ModelPublisher.publish). A model cheap enough to
        pickle on the loop is sent as a checkpoint taken now: one pickle serves both, and
        publications as often as every 50 ms leave few checkpoints to take apart."""
        assert self.publisher is not None
        learner = self.learner
        started = time.perf_counter()
        pickled: bytes | None = None
        if learner.pickle_seconds > OFFLOAD_ABOVE_SECONDS:
            verified = learner.verified()  # the pickle is made in a child
        else:
            pickled = learner.verified_checkpoint()
            verified = pickled is not None
        # Part of what a publication costs, beside the pickle (already in pickle_seconds).
        spent = time.perf_counter() - started
        self._verify_seconds = max(0.0, spent - learner.pickle_seconds) if pickled is not None else spent
        if not verified:
            log.error("not publishing: the model stays unhealthy after healing")
            return
        self._publish_cadence.done(learner.model.samples_learned)
        await self.publisher.publish(learner, self.registry, self.applied, pickled, wait=wait)

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
        metrics.ROLLOUT_DECISIONS.labels(self.series, verdict).inc()
        await self.publish_all()
        self.snapshot()

    async def run_command(self, command: dict[str, Any]) -> None:
        """Carries out an admin command between batches, once (a redelivery after a restart
        is known by its id), and publishes its outcome with the model it leaves serving."""
        if any(applied.get("id") == command.get("id") for applied in self.applied):
            return
        named = self.settings.model
        if named.scoped and command.get("model") != named.name:
            return  # another named model's: its own learner answers it
        async with self.lock:
            result = apply(command, self.learner, self.registry, named.name if named.scoped else None)
            self.applied = [*self.applied[-(APPLIED_KEPT - 1) :], {"id": command.get("id"), **result}]
            await self.publish_all()
            if result["outcome"] == "done":
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
            if self.publisher is not None and self.learner.model.samples_learned != self._publish_cadence.samples:
                try:
                    await asyncio.wait_for(self.publish_all(), 5.0)
                except Exception as exc:  # noqa: BLE001 - stopping; the snapshot already holds everything
                    log.warning("last publication failed: %r", exc)
