"""Model versions to the models topic (champion, challenger, registry, heartbeat), and the
model gauges that go with each publication."""

from __future__ import annotations

import asyncio
import logging
import pickle
import time
from typing import Any

import orjson
from aiokafka import AIOKafkaProducer

from engine import metrics
from models.learner import Learner
from models.offload import OFFLOAD_ABOVE_SECONDS, Child
from models.online import OnlineModel
from models.registry import ModelRegistry
from streams.model_topic import (
    CHALLENGER,
    CHAMPION,
    HEARTBEAT,
    REGISTRY,
    ModelVersion,
    VersionInfo,
    encode_version,
    heartbeat_value,
    publish,
)

log = logging.getLogger(__name__)

REGISTRY_REREAD_SECONDS = 1.0


class ModelPublisher:
    """One named model's publisher: its records are keyed under `prefix` (empty for the single
    model of an engine without MODELS), its series labelled `model=series`."""

    def __init__(self, producer: AIOKafkaProducer, topic: str, prefix: bytes = b"", series: str = "") -> None:
        self.producer = producer
        self.topic = topic
        self.prefix = prefix
        self.series = series
        self.revision = 0
        self.lags: list[int] = []  # of the predictions scored since the last publication
        # Series cannot be removed across processes: the info series a model replaced goes to 0.
        self._info_labels: tuple[str, str, str, str] | None = None
        self._sent: dict[bytes, bytes | None] = {}  # the last value sent under each key
        self._registry_cache: tuple[Any, list[dict[str, Any]], bytes] | None = None

    async def publish(
        self,
        learner: Learner,
        registry: ModelRegistry,
        applied: list[dict[str, Any]],
        champion_pickle: bytes | None = None,
        *,
        wait: bool = True,
    ) -> None:
        """The champion, the challenger (or its absence) and the registry, as they are now; a
        large model is encoded in a forked child while the stream goes on. `champion_pickle`:
        the champion already pickled now (the learner's verified checkpoint), sent as it is.

        `wait=False` (the periodic publications, from the batch path): the records are handed
        to the producer and not awaited. Waiting for the broker's acknowledgement took 0.5-4 ms
        of a batch's cycle every 50 ms, time in which the worker handled nothing; a version lost
        on the way is superseded by the next one, and a failure is logged and counted when
        it comes, and makes the next publication send every record again."""
        self.revision += 1
        model = learner.model
        rollout = learner.rollout
        lags, self.lags = self.lags, []
        lag = {"mean_samples": sum(lags) / len(lags), "max_samples": max(lags), "examples": len(lags)} if lags else None
        info = VersionInfo(
            name=model.name,
            task=model.task.value,
            metrics=model.metric_values(),
            concept_drifts=model.drifts_detected,
            rollout=rollout.status() if rollout else None,
            prediction_model_lag=lag,
        )
        versions = [ModelVersion(model, model.version, self.revision, model.samples_learned, time.time(), info)]
        if rollout is not None:
            challenger = rollout.challenger
            challenger_info = VersionInfo(name=challenger.name, mode=rollout.mode, share=rollout.share)
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
        self.record_gauges(model)
        if champion_pickle is not None:
            encoded = [encode_version(versions[0], champion_pickle), *(encode_version(v) for v in versions[1:])]
        elif learner.pickle_seconds > OFFLOAD_ABOVE_SECONDS:
            encoded = pickle.loads(await Child(lambda: pickle.dumps([encode_version(v) for v in versions])).result())
        else:
            encoded = [encode_version(v) for v in versions]
        # Versions go out as often as every 50 ms: the records are sent together and awaited
        # once, and a challenger's absence or a registry record already on the topic is not
        # sent again.
        records = [(CHAMPION, encoded[0]), (CHALLENGER, encoded[1] if len(encoded) > 1 else None)]
        registry_record = self._registry_record(registry, applied)
        records.append((REGISTRY, registry_record))
        sends = [
            await self.producer.send(self.topic, value, key=self.prefix + key, partition=0)
            for key, value in records
            if key == CHAMPION or self._sent.get(key, b"") != value
        ]
        acknowledged = asyncio.gather(*sends)
        self._sent.update(records)
        if wait:
            try:
                await acknowledged
            except BaseException:
                self._sent.clear()
                raise
        else:
            acknowledged.add_done_callback(self._unacknowledged)

    def _unacknowledged(self, acknowledged: asyncio.Future) -> None:
        if acknowledged.cancelled():
            self._sent.clear()
            return
        exc = acknowledged.exception()
        if exc is not None:
            # Every record goes again with the next publication: the registry or the absence of
            # a challenger may be what was lost.
            self._sent.clear()
            metrics.LEARNER_ERRORS.labels(type(exc).__name__).inc()
            log.warning("a model publication was not acknowledged (the next one goes as usual): %r", exc)

    async def publish_registry(self, registry: ModelRegistry, applied: list[dict[str, Any]]) -> None:
        record = self._registry_record(registry, applied)
        await publish(self.producer, self.topic, self.prefix + REGISTRY, record)
        self._sent[REGISTRY] = record

    def _registry_record(self, registry: ModelRegistry, applied: list[dict[str, Any]]) -> bytes:
        """The registry as the models topic carries it. Reading the index took 0.2-1.3 ms of
        every publication (every 50 ms, on the batch path): it is read again when its file
        changed (another process registers candidates), when `applied` is another list (a
        command was carried out), and at least every REGISTRY_REREAD_SECONDS."""
        key = (registry.index_signature(), time.monotonic() // REGISTRY_REREAD_SECONDS)
        cached = self._registry_cache
        if cached is not None and cached[0] == key and cached[1] is applied:
            return cached[2]
        record = orjson.dumps(
            {"versions": registry.versions(), "serving": registry.serving, "applied": applied}, default=str
        )
        self._registry_cache = (key, applied, record)  # holds `applied`: an identity to compare
        return record

    async def heartbeat(self) -> None:
        await publish(self.producer, self.topic, self.prefix + HEARTBEAT, heartbeat_value(self.revision))

    def record_gauges(self, model: OnlineModel) -> None:
        series = self.series or model.name
        for name, value in model.metric_values().items():
            metrics.MODEL_METRIC.labels(series, name).set(value)
        if model.served_samples:
            for name, value in model.served_metric_values().items():
                metrics.SERVED_METRIC.labels(series, name).set(value)
        metrics.MODEL_SAMPLES.labels(series).set(model.samples_learned)
        metrics.MODEL_DRIFTS.labels(series).set(model.drifts_detected)
        metrics.MODELS_PUBLISHED.labels(series).inc()
        labels = (series, model.name, str(model.version), model.task.value)
        if self._info_labels is not None and self._info_labels != labels:
            metrics.MODEL_INFO.labels(*self._info_labels).set(0)
        metrics.MODEL_INFO.labels(*labels).set(1)
        self._info_labels = labels
