"""Model versions to the models topic (champion, challenger, registry, heartbeat), and the
model gauges that go with each publication."""

from __future__ import annotations

import asyncio
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

    async def publish(
        self,
        learner: Learner,
        registry: ModelRegistry,
        applied: list[dict[str, Any]],
        champion_pickle: bytes | None = None,
    ) -> None:
        """The champion, the challenger (or its absence) and the registry, as they are now; a
        large model is encoded in a forked child while the stream goes on. `champion_pickle`:
        the champion already pickled now (the learner's verified checkpoint), sent as it is."""
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
        await asyncio.gather(*sends)
        self._sent.update(records)

    async def publish_registry(self, registry: ModelRegistry, applied: list[dict[str, Any]]) -> None:
        record = self._registry_record(registry, applied)
        await publish(self.producer, self.topic, self.prefix + REGISTRY, record)
        self._sent[REGISTRY] = record

    @staticmethod
    def _registry_record(registry: ModelRegistry, applied: list[dict[str, Any]]) -> bytes:
        record = {"versions": registry.versions(), "serving": registry.serving, "applied": applied}
        return orjson.dumps(record, default=str)

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
