"""Shared fixtures: settings per test, a real engine process against the real broker
(engine/harness.py), and the stream logic in memory (Pipeline)."""

from __future__ import annotations

import socket
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest

from engine.harness import (  # noqa: F401 - fixtures' helpers
    KAFKA_BOOTSTRAP,
    REDIS_URL,
    ROOT,
    EngineProcess,
    remove_topics,
    unique_env,
)
from engine.settings import Settings


def free_port() -> int:
    """A port nobody listens on right now (for a Redis that is not there)."""
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


@pytest.fixture
def engine_factory(tmp_path: Path) -> Iterator[Callable[..., EngineProcess]]:
    engines: list[EngineProcess] = []

    def make(env: dict[str, str] | None = None, **overrides: Any) -> EngineProcess:
        engine = EngineProcess(env or unique_env(**overrides), tmp_path)
        engines.append(engine)
        return engine

    yield make
    try:
        for engine in engines:
            engine.stop()
    finally:
        remove_topics(engines)


@pytest.fixture
def settings_factory() -> Callable[..., Settings]:
    def make(**overrides: Any) -> Settings:
        return Settings.from_env(unique_env(**overrides))

    return make


class MemoryTable:
    """A feature or join table without Faust: what TableWriter offers, over a dict."""

    def __init__(self) -> None:
        self.data: dict[str, Any] = {}
        self.partitions: dict[str, int] = {}

    def get(self, key: str, partition: int | None = None) -> Any:
        return self.data.get(key)

    def set(self, partition: int, key: str, value: Any) -> None:
        self.data[key] = value
        self.partitions[key] = partition

    def delete(self, partition: int, key: str) -> None:
        self.data.pop(key, None)

    def items(self) -> list[tuple[str, Any]]:
        return list(self.data.items())

    def __len__(self) -> int:
        return len(self.data)


class Pipeline:
    """The embedded default's stream logic in one process, without Kafka: events and labels
    in, the learner learning as the worker would make it."""

    def __init__(self, model_name: str = "logreg", definitions: list | None = None, **join_options: Any) -> None:
        import tempfile

        from engine.learning import LearningService
        from engine.worker_modes import EmbeddedLearner
        from models.learner import Learner
        from models.named import NamedModel
        from models.online import OnlineModel
        from streams.events import EventProcessor, ModelLane
        from streams.features import FeatureRegistry
        from streams.join import Join
        from streams.records import Contract

        self.registry = FeatureRegistry(definitions or [])
        self.learner = Learner(OnlineModel(model_name))
        self.rows, self.pending = MemoryTable(), MemoryTable()
        settings = Settings.from_env({"REDIS_URL": "", "STATE_DIR": tempfile.mkdtemp(prefix="pipeline-")})
        mode = EmbeddedLearner(LearningService(settings, self.learner, self.registry))
        contract = Contract(ranges=self.registry.ranges, task=self.learner.model.task)
        lanes = [ModelLane(NamedModel(model_name, model_name), mode)]
        self.events = EventProcessor(
            contract, self.registry, self.rows, lanes, fresh_predictions=mode.fresh_predictions
        )
        self.join = Join(contract, self.pending, lanes, **join_options)
        self.offsets = {"events": 0, "labels": 0, "predictions": 0}
        self.dead_letters: list[Any] = []

    def _records(self, topic: str, values: list[bytes]) -> list[Any]:
        from streams.batch_consumer import Record

        start = self.offsets[topic]
        self.offsets[topic] += len(values)
        return [Record(topic, 0, start + i, None, v, (), None) for i, v in enumerate(values)]

    def send_events(self, values: list[bytes], now: float | None = None) -> Any:
        import orjson

        outcome = self.events.process(0, self._records("events", values), now)
        self.dead_letters += outcome.dead_letters
        if outcome.predictions:
            joined = self.join.on_predictions(
                0, self._records("predictions", [orjson.dumps(r) for _, r in outcome.predictions]), now
            )
            self.dead_letters += joined.dead_letters
        self.dead_letters += [r for r in self.learner.end_batch().refused]
        return outcome

    def send_labels(self, values: list[bytes], now: float | None = None) -> Any:
        outcome = self.join.on_labels(0, self._records("labels", values), now)
        self.dead_letters += outcome.dead_letters
        self.learner.end_batch()
        return outcome

    @property
    def model(self) -> Any:
        return self.learner.model


@pytest.fixture
def pipeline_factory() -> Callable[..., Pipeline]:
    return Pipeline
