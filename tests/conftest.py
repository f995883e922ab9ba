"""Shared fixtures: settings per test, and a real engine process against the real broker."""

from __future__ import annotations

import os
import signal
import socket
import subprocess
import sys
import time
import uuid
from pathlib import Path
from typing import Any, Callable, Iterator

import httpx
import pytest

from engine.settings import Settings

ROOT = Path(__file__).resolve().parent.parent
KAFKA_BOOTSTRAP = os.environ.get("KAFKA_BOOTSTRAP", "127.0.0.1:9092")
REDIS_URL = os.environ.get("REDIS_URL", "redis://127.0.0.1:6379/0")


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def unique_env(**overrides: Any) -> dict[str, str]:
    """Engine settings with topics, consumer group and state of its own, so tests never share data."""
    tag = uuid.uuid4().hex[:10]
    env = {
        "KAFKA_BOOTSTRAP": KAFKA_BOOTSTRAP,
        "REDIS_URL": REDIS_URL,
        "APP_ID": f"test-{tag}",
        "EVENTS_TOPIC": f"events-{tag}",
        "LABELS_TOPIC": f"labels-{tag}",
        "API_PORT": str(free_port()),
        "LOG_LEVEL": "warning",
    }
    env.update({key: str(value) for key, value in overrides.items()})
    return env


class EngineProcess:
    """`python -m engine run` as a user runs it, with its own log file."""

    def __init__(self, env: dict[str, str], workdir: Path) -> None:
        self.env = env
        self.workdir = workdir
        self.settings = Settings.from_env(env)
        self.base_url = f"http://127.0.0.1:{self.settings.api_port}"
        self.process: subprocess.Popen | None = None
        self.log_path = workdir / f"engine-{env['APP_ID']}.log"

    def start(self, ready_timeout: float = 90.0) -> "EngineProcess":
        environ = {**os.environ, **self.env, "STATE_DIR": str(self.workdir / "state")}
        log = open(self.log_path, "ab")
        self.process = subprocess.Popen(
            [sys.executable, "-m", "engine", "run"], cwd=ROOT, env=environ, stdout=log, stderr=subprocess.STDOUT
        )
        deadline = time.monotonic() + ready_timeout
        while time.monotonic() < deadline:
            if self.process.poll() is not None:
                raise RuntimeError(f"engine exited with {self.process.returncode}:\n{self.log_tail()}")
            try:
                if httpx.get(f"{self.base_url}/readyz", timeout=1.0).status_code == 200:
                    return self
            except httpx.HTTPError:
                pass
            time.sleep(0.2)
        raise RuntimeError(f"engine not ready in {ready_timeout}s:\n{self.log_tail()}")

    def stop(self, timeout: float = 30.0) -> int:
        if self.process is None or self.process.poll() is not None:
            return self.process.returncode if self.process else 0
        self.process.send_signal(signal.SIGTERM)
        try:
            return self.process.wait(timeout)
        except subprocess.TimeoutExpired:
            self.process.kill()
            self.process.wait()
            raise

    def kill(self) -> None:
        assert self.process is not None
        self.process.send_signal(signal.SIGKILL)
        self.process.wait()

    def log_tail(self, lines: int = 40) -> str:
        return "\n".join(self.log_path.read_text(errors="replace").splitlines()[-lines:])

    def get(self, path: str) -> httpx.Response:
        return httpx.get(f"{self.base_url}{path}", timeout=5.0)

    def post(self, path: str, body: Any) -> httpx.Response:
        return httpx.post(f"{self.base_url}{path}", json=body, timeout=5.0)

    def wait_until(self, predicate: Callable[[], bool], timeout: float = 60.0, what: str = "condition") -> None:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if predicate():
                return
            time.sleep(0.1)
        raise AssertionError(f"timed out waiting for {what}:\n{self.log_tail()}")

    def samples_learned(self) -> int:
        return self.get("/models").json()["serving"]["samples_learned"]


@pytest.fixture
def engine_factory(tmp_path: Path) -> Iterator[Callable[..., EngineProcess]]:
    engines: list[EngineProcess] = []

    def make(env: dict[str, str] | None = None, **overrides: Any) -> EngineProcess:
        engine = EngineProcess(env or unique_env(**overrides), tmp_path)
        engines.append(engine)
        return engine

    yield make
    for engine in engines:
        engine.stop()


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

    def get(self, key: str) -> Any:
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
        from engine.stream_worker import LearnerModels
        from models.learner import Learner
        from models.online import OnlineModel
        from streams.events import EventProcessor
        from streams.features import FeatureRegistry
        from streams.join import Join
        from streams.records import Contract

        self.registry = FeatureRegistry(definitions or [])
        self.learner = Learner(OnlineModel(model_name))
        self.rows, self.pending = MemoryTable(), MemoryTable()
        models = LearnerModels(type("Service", (), {"learner": self.learner})())
        contract = Contract(ranges=self.registry.ranges)
        self.events = EventProcessor(contract, self.registry, self.rows, models, self.learner.learn, fresh_predictions=True)
        self.join = Join(contract, self.pending, self.learner.learn, **join_options)
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
            joined = self.join.on_predictions(0, self._records("predictions", [orjson.dumps(r) for _, r in outcome.predictions]), now)
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
