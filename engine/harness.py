"""`python -m engine run` as a user runs it, driven from Python: the tests and the
benchmarks start real engines against the real broker with it.

Each engine gets topics, a consumer group and a state folder of its own, and the API on
a port the kernel picks (API_PORT=0; the supervisor writes it to STATE_DIR/api.port).
"""

from __future__ import annotations

import asyncio
import os
import re
import signal
import subprocess
import sys
import time
import uuid
from collections.abc import Callable
from pathlib import Path
from typing import Any

import httpx
from aiokafka.admin import AIOKafkaAdminClient, NewTopic
from aiokafka.errors import KafkaConnectionError

from engine.settings import Settings

ROOT = Path(__file__).resolve().parent.parent
KAFKA_BOOTSTRAP = os.environ.get("KAFKA_BOOTSTRAP", "127.0.0.1:9092")
REDIS_URL = os.environ.get("REDIS_URL", "redis://127.0.0.1:6379/0")


TAG_LENGTH = 10
_TAGGED_APP_ID = re.compile(rf"test-([0-9a-f]{{{TAG_LENGTH}}})")


def unique_env(**overrides: Any) -> dict[str, str]:
    """Engine settings with topics, consumer group and state of its own, so runs never share data."""
    tag = uuid.uuid4().hex[:TAG_LENGTH]
    env = {
        "KAFKA_BOOTSTRAP": KAFKA_BOOTSTRAP,
        "REDIS_URL": REDIS_URL,
        "APP_ID": f"test-{tag}",
        "EVENTS_TOPIC": f"events-{tag}",
        "LABELS_TOPIC": f"labels-{tag}",
        "API_PORT": "0",
        "GRPC_PORT": "0",  # gRPC is asked for by the tests that use it: engines in one run must not share a port
        "LOG_LEVEL": "warning",
    }
    env.update({key: str(value) for key, value in overrides.items()})
    return env


def remove_topics(engines: list[EngineProcess]) -> list[str]:
    """Deletes the topics of engines whose settings `unique_env` made (every topic whose name
    holds one of their tags), once they are stopped for good: each engine makes a dozen
    topics, and a broker that keeps those of every test and benchmark run grows without
    bound, and slows. Topics of other engines are left alone. Returns the topics deleted."""
    tags = {match.group(1) for e in engines if (match := _TAGGED_APP_ID.fullmatch(e.settings.app_id))}
    if not tags:
        return []
    # The broker the harness knows, not an engine's KAFKA_BOOTSTRAP: an outage test points
    # its engine at a proxy that is gone by now, and the topics are on the broker behind it.
    try:
        return asyncio.run(_delete_tagged_topics(KAFKA_BOOTSTRAP, tags))
    except KafkaConnectionError:
        return []  # no broker to clean: nothing of the engines' is left on a broker that is gone


async def _delete_tagged_topics(bootstrap: str, tags: set[str]) -> list[str]:
    doomed = sorted(topic for topic in await topic_names(bootstrap) if any(tag in topic for tag in tags))
    await delete_topics(bootstrap, doomed)
    return doomed


async def topic_names(bootstrap: str) -> set[str]:
    admin = AIOKafkaAdminClient(bootstrap_servers=bootstrap)
    await admin.start()
    try:
        return set(await admin.list_topics())
    finally:
        await admin.close()


async def create_topics(
    bootstrap: str, topics: list[str], partitions: int = 1, configs: dict[str, str] | None = None
) -> None:
    """Creates these topics (one replica: the local broker), each with `partitions`."""
    admin = AIOKafkaAdminClient(bootstrap_servers=bootstrap)
    await admin.start()
    try:
        await admin.create_topics([NewTopic(topic, partitions, 1, topic_configs=configs or {}) for topic in topics])
    finally:
        await admin.close()


async def delete_topics(bootstrap: str, topics: list[str]) -> None:
    """Deletes these topics; a name the broker does not have is no error."""
    if not topics:
        return
    admin = AIOKafkaAdminClient(bootstrap_servers=bootstrap)
    await admin.start()
    try:
        await admin.delete_topics(topics)
    finally:
        await admin.close()


class EngineProcess:
    def __init__(self, env: dict[str, str], workdir: Path, command: tuple[str, ...] = ("run",)) -> None:
        self.env = {**env, "STATE_DIR": env.get("STATE_DIR", str(workdir / "state"))}
        self.workdir = workdir
        self.command = command
        self.settings = Settings.from_env(self.env)
        self.base_url = ""
        self.process: subprocess.Popen | None = None
        self.log_path = workdir / f"engine-{env['APP_ID']}.log"

    @property
    def port_file(self) -> Path:
        return self.settings.state_path / "api.port"

    def launch(self) -> EngineProcess:
        """Starts the process without waiting for anything."""
        self.port_file.unlink(missing_ok=True)
        self.workdir.mkdir(parents=True, exist_ok=True)
        with open(self.log_path, "ab") as log:  # the child holds its own copy of the descriptor
            self.process = subprocess.Popen(
                [sys.executable, "-m", "engine", *self.command],
                cwd=ROOT,
                env={**os.environ, **self.env},
                stdout=log,
                stderr=subprocess.STDOUT,
            )
        return self

    def start(self, ready_timeout: float = 90.0) -> EngineProcess:
        """Starts it and waits for /readyz to answer 200."""
        self.launch()
        self.wait_ready(ready_timeout)
        return self

    def wait_ready(self, timeout: float = 90.0) -> float:
        """Seconds from now until /readyz answers 200."""
        started = time.monotonic()
        deadline = started + timeout
        while time.monotonic() < deadline:
            if self.process is not None and self.process.poll() is not None:
                raise RuntimeError(f"engine exited with {self.process.returncode}:\n{self.log_tail()}")
            if not self.base_url and self.port_file.exists():
                port = self.port_file.read_text().strip()
                if port:
                    self.base_url = f"http://127.0.0.1:{port}"
            if self.base_url:
                try:
                    if httpx.get(f"{self.base_url}/readyz", timeout=1.0).status_code == 200:
                        return time.monotonic() - started
                except httpx.HTTPError:
                    pass
            time.sleep(0.05)
        raise RuntimeError(f"engine not ready in {timeout}s:\n{self.log_tail()}")

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
        self.base_url = ""

    def log_tail(self, lines: int = 40) -> str:
        return "\n".join(self.log_path.read_text(errors="replace").splitlines()[-lines:])

    def get(self, path: str) -> httpx.Response:
        return httpx.get(f"{self.base_url}{path}", timeout=5.0)

    def post(self, path: str, body: Any) -> httpx.Response:
        return httpx.post(f"{self.base_url}{path}", json=body, timeout=5.0)

    def wait_until(self, predicate: Callable[[], bool], timeout: float = 60.0, what: str = "condition") -> None:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            try:
                if predicate():
                    return
            except (httpx.HTTPError, KeyError, TypeError, ValueError):
                pass  # not answering yet, or not holding that yet
            time.sleep(0.1)
        raise AssertionError(f"timed out waiting for {what}:\n{self.log_tail()}")

    def samples_learned(self) -> int:
        return self.get("/models").json()["serving"]["samples_learned"]
