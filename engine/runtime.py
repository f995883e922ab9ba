"""What one serving process holds: read replicas of the features and the models, the cache,
the predictor, and the way to the learner for admin commands.

Built complete by `Runtime.start` on the running event loop (the Kafka and Redis clients
need it); the API reads it from its lifespan state.
"""

from __future__ import annotations

import asyncio
import json
import os
import time
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Protocol

import orjson
from aiokafka import AIOKafkaProducer
from prometheus_client import CollectorRegistry
from prometheus_client.multiprocess import MultiProcessCollector

from engine import metrics
from engine.cache import L1Cache, PredictionCache, RedisCache
from engine.contract import RequestError
from engine.prediction_log import ServedPredictionLog
from engine.serving import DeadlineBreaker, ModelSource, Predictor, PublishedModels
from engine.settings import Settings
from engine.worker_status import WorkerStatusFollower
from models.snapshots import SnapshotStore
from streams.feature_replica import FeatureReplica
from streams.features import FeatureRegistry
from streams.model_topic import ModelReplica
from streams.offline_store import OfflineFeatureLog

COMMAND_WAIT_SECONDS = 10.0
LABELS_SEND_SECONDS = 10.0
BROKER_PROBE_SECONDS = 2.0


def load_feature_registry(path: str) -> FeatureRegistry:
    if not path:
        return FeatureRegistry()
    definitions = json.loads(Path(path).read_text())
    if not isinstance(definitions, list):
        raise ValueError(f"{path}: expected a JSON list of feature definitions")
    registry = FeatureRegistry()
    for definition in definitions:
        registry.register(definition)
    return registry


def build_cache(settings: Settings) -> tuple[PredictionCache | None, RedisCache | None]:
    s = settings
    l1 = L1Cache(s.cache_l1_entries, s.cache_ttl_seconds, s.cache_l1_bytes) if s.cache_l1_entries > 0 else None
    redis = (
        RedisCache(s.redis_url, s.cache_ttl_seconds, s.redis_timeout_seconds, s.redis_backoff_seconds)
        if s.redis_url
        else None
    )
    # `is not None`: an empty L1 is falsy (it has a length), and Redis off must not turn it off.
    has_tier = l1 is not None or redis is not None
    return (PredictionCache(l1, redis, s.cache_l2) if has_tier else None), redis


class Features(Protocol):
    """Entity states by id, and whether they have caught up: a read replica of the feature
    table's changelog, or states held in this process (tests, benchmarks)."""

    ready: asyncio.Event

    def get(self, entity_id: str, /) -> Any: ...
    async def stop(self) -> None: ...


class HeldFeatures:
    """Entity states given to this process: always caught up."""

    def __init__(self, states: Mapping[str, Any]) -> None:
        self.states = states
        self.ready = asyncio.Event()
        self.ready.set()

    def get(self, entity_id: str, /) -> Any:
        return self.states.get(entity_id)

    async def stop(self) -> None:
        return None


class BrokerProbe:
    """Whether a broker accepted a connection lately (/readyz reports it; serving goes on
    without the broker, from what it holds, so it is reported, not required)."""

    def __init__(self) -> None:
        self.reachable = False

    async def follow(self, producer: AIOKafkaProducer, started: asyncio.Task) -> None:
        """Every few seconds, a connection (not metadata: metadata of every topic, thousands
        on a shared cluster, is decoded in Python and held this loop up for 100+ ms)."""
        try:
            await started
        except Exception:  # noqa: BLE001 - the start failed: the broker is unreachable
            pass
        client = producer.client
        while True:
            try:
                node = client.get_random_node()
                reachable = node is not None and await asyncio.wait_for(client.ready(node), BROKER_PROBE_SECONDS)
            except Exception:  # noqa: BLE001 - any failure means: not reachable now
                reachable = False
            self.reachable = bool(reachable)
            await asyncio.sleep(BROKER_PROBE_SECONDS)


@dataclass
class ServedModel:
    """One named model as a serving process holds it: its own settings (topics, keys,
    folders), its published versions and its predictor."""

    settings: Settings
    replica: ModelReplica | None
    predictor: Predictor
    snapshots: SnapshotStore

    @property
    def name(self) -> str:
        return self.settings.model.name


@dataclass
class Runtime:
    settings: Settings
    feature_registry: FeatureRegistry
    features: Features
    models: ModelReplica | None  # the default model's
    predictor: Predictor  # the default model's
    redis: RedisCache | None
    offline_log: OfflineFeatureLog
    snapshots: SnapshotStore  # the default model's
    producer: AIOKafkaProducer | None = None
    broker: BrokerProbe | None = None  # with a producer
    starting: list[asyncio.Task] | None = None
    grpc: Any = None  # the Open Inference Protocol's gRPC server (grpc.aio.Server), when serving it
    workers: WorkerStatusFollower | None = None  # the stream workers' reports, with Kafka
    served: dict[str, ServedModel] = field(default_factory=dict)  # every named model, the default first

    def __post_init__(self) -> None:
        if not self.served:
            own = self.settings.for_model(self.settings.model)
            self.served = {own.model.name: ServedModel(own, self.models, self.predictor, self.snapshots)}

    def model(self, name: str | None) -> ServedModel:
        """The named model, the default one for None; 404 naming the choices for another name."""
        if name is None:
            return next(iter(self.served.values()))
        served = self.served.get(name)
        if served is None:
            raise RequestError(404, f"unknown model {name!r}; the models are {list(self.served)}", "model")
        return served

    @classmethod
    async def start(cls, settings: Settings) -> Runtime:
        """Starts following the features and models in the background: the process answers
        at once, and /readyz says when it has caught up."""
        features = FeatureReplica(settings.kafka_bootstrap, settings.entity_changelog_topic)
        owns = [settings.for_model(named) for named in settings.models]
        replicas = [ModelReplica(own.kafka_bootstrap, own.models_topic, own.model_key_prefix) for own in owns]
        # Served predictions go out a batch at a time: at the default 16 KB a batch, sending
        # one cost 11 µs of this loop, at 1 MB 3 µs.
        producer = AIOKafkaProducer(bootstrap_servers=settings.kafka_bootstrap, acks="all", max_batch_size=1 << 20)
        producer_started = asyncio.create_task(_start_until_up(producer))
        starting = [
            asyncio.create_task(features.start(wait_for_topic=3600.0)),
            producer_started,
            *(asyncio.create_task(replica.start()) for replica in replicas),
        ]
        broker = BrokerProbe()
        starting.append(asyncio.create_task(broker.follow(producer, producer_started)))
        cache, redis = build_cache(settings)
        served_log = ServedPredictionLog(
            lambda: producer if _succeeded(producer_started) else None,
            settings.predictions_topic,
            settings.topic_partitions,
            buffer=settings.served_log_buffer,
            remember=settings.dedupe_window,
        )
        served_log.start()
        workers = WorkerStatusFollower(settings.kafka_bootstrap, settings.workers_topic, settings.worker_lagging_events)
        workers.start()
        served = {}
        for own, replica in zip(owns, replicas):
            # A breaker each: one slow model does not send the others to their fallbacks.
            breaker = DeadlineBreaker(settings.predict_deadline_seconds, settings.breaker_cooldown_seconds)
            # The cache's tiers are shared; whether Redis pays is each model's own (its prediction time).
            view = None if cache is None else PredictionCache(cache.l1, cache.l2, cache.l2_mode)
            predictor = Predictor(
                PublishedModels(replica), features, view, breaker, served_log, own.model.name, own.model.scoped
            )
            snapshots = SnapshotStore(own.snapshot_path, own.snapshot_retention)
            served[own.model.name] = ServedModel(own, replica, predictor, snapshots)
        default = next(iter(served.values()))
        return cls(
            settings=settings,
            feature_registry=load_feature_registry(settings.feature_definitions),
            features=features,
            models=default.replica,
            predictor=default.predictor,
            redis=redis,
            offline_log=OfflineFeatureLog(settings.state_path / "offline-features", read_only=True),
            snapshots=default.snapshots,
            producer=producer,
            broker=broker,
            starting=starting,
            workers=workers,
            served=served,
        )

    @classmethod
    def in_process(cls, settings: Settings, models: ModelSource, features: Mapping[str, Any]) -> Runtime:
        """A runtime without Kafka (unit tests, benchmarks of the HTTP path alone)."""
        cache, redis = build_cache(settings)
        breaker = DeadlineBreaker(settings.predict_deadline_seconds, settings.breaker_cooldown_seconds)
        return cls(
            settings=settings,
            feature_registry=load_feature_registry(settings.feature_definitions),
            features=HeldFeatures(features),
            models=None,
            predictor=Predictor(models, features, cache, breaker, name=settings.model.name),
            redis=redis,
            offline_log=OfflineFeatureLog(settings.state_path / "offline-features", read_only=True),
            snapshots=SnapshotStore(settings.snapshot_path, settings.snapshot_retention),
        )

    async def stop(self) -> None:
        if self.grpc is not None:
            await self.grpc.stop(1.0)
        if self.predictor.served_log is not None:
            await self.predictor.served_log.stop()
        for task in self.starting or ():
            task.cancel()
        if self.workers is not None:
            await self.workers.stop()
        await self.features.stop()
        for served in self.served.values():
            if served.replica is not None:
                await served.replica.stop()
        if self.producer is not None:
            await self.producer.stop()
        if self.redis is not None:
            await self.redis.close()

    # -- readiness ---------------------------------------------------------------------------

    def checks(self) -> dict[str, bool]:
        """Ready: the features are caught up and every model is held."""
        features_ready = self.features.ready.is_set()
        loaded = all(
            (served.replica is None or served.replica.ready.is_set()) and served.predictor.model is not None
            for served in self.served.values()
        )
        return {"model_loaded": loaded, "features_caught_up": features_ready}

    # -- the learner, through the models and control topics ------------------------------------

    def kafka_reachable(self) -> bool | None:
        """Whether the broker answered the last metadata request (None without Kafka)."""
        if self.producer is None:
            return None
        return self.broker is not None and self.broker.reachable

    async def command(self, command: dict[str, Any], served: ServedModel) -> dict[str, Any] | None:
        """Sends an admin command to the model's learner and waits for its result to come back
        on the models topic; None when it has not come within COMMAND_WAIT_SECONDS."""
        replica = served.replica
        if self.producer is None or replica is None:
            return {"outcome": "refused", "refusal": "unavailable", "error": "no learner reachable from this process"}
        await self.producer.send_and_wait(self.settings.control_topic, orjson.dumps(command))
        deadline = time.monotonic() + COMMAND_WAIT_SECONDS
        while True:
            for result in replica.registry.get("applied", []):
                if result.get("id") == command["id"]:
                    return result
            remaining = deadline - time.monotonic()
            if remaining <= 0:
                return None
            try:
                await asyncio.wait_for(replica.updated.wait(), remaining)
            except TimeoutError:
                return None

    async def send_labels(self, labels: list[tuple[str, Any]]) -> int:
        """Sends (event id, label) pairs to the labels topic, keyed by event id; returns how
        many Kafka acknowledged, or refuses with 503 when it did not in time."""
        producer = self.producer
        starting = self.starting[1] if self.starting else None  # the producer's start
        if producer is None or (starting is not None and not _succeeded(starting)):
            raise RequestError(503, "Kafka is not reachable from this process: send the labels again")
        now = time.time()
        try:
            futures = [
                await producer.send(
                    self.settings.labels_topic,
                    orjson.dumps({"event_id": event_id, "label": label, "ts": now}),
                    key=event_id.encode(),
                )
                for event_id, label in labels
            ]
            await asyncio.wait_for(asyncio.gather(*futures), LABELS_SEND_SECONDS)
        except Exception as exc:  # noqa: BLE001 - any failure: the caller sends them again
            raise RequestError(503, f"Kafka did not acknowledge the labels: {exc!r}; send them again") from None
        metrics.LABELS_POSTED.inc(len(labels))
        return len(labels)

    def pending_predictions(self) -> int | None:
        """Predictions waiting for labels, summed over the stream workers' gauges (when
        `engine run` shares metrics between its processes)."""
        if not os.environ.get("PROMETHEUS_MULTIPROC_DIR"):
            return None
        registry = CollectorRegistry()
        MultiProcessCollector(registry)
        value = registry.get_sample_value("rtml_pending_predictions")
        return None if value is None else int(value)


async def _start_until_up(producer: AIOKafkaProducer) -> None:
    """Starts the producer, trying again while the broker is down: served predictions and
    posted labels need it, and the broker may come up after serving does."""
    while True:
        try:
            await producer.start()
            return
        except Exception:  # noqa: BLE001 - not reachable yet; serving answers meanwhile
            await asyncio.sleep(BROKER_PROBE_SECONDS)


def _succeeded(task: asyncio.Task) -> bool:
    return task.done() and not task.cancelled() and task.exception() is None
