"""Fixtures of the integration tests: a broker of a test's own, and engine processes that
are stopped after the test."""

from __future__ import annotations

import os
import random
import socket
import subprocess
from pathlib import Path

import pytest

from engine.harness import ROOT, EngineProcess, remove_topics


class Broker:
    def __init__(self, folder: Path) -> None:
        self.port = _free_port_pair()
        self.env = {**os.environ, "KAFKA_PORT": str(self.port), "STATE_DIR": str(folder)}
        self.bootstrap = f"127.0.0.1:{self.port}"

    def start(self) -> None:
        subprocess.run([str(ROOT / "infra/kafka/kafka.sh"), "start"], env=self.env, check=True, capture_output=True)

    def stop(self) -> None:
        subprocess.run([str(ROOT / "infra/kafka/kafka.sh"), "stop"], env=self.env, check=True, capture_output=True)


def _free_port_pair() -> int:
    """A port that is free, and so is the next (the broker's controller listens there)."""
    for _ in range(100):
        port = random.randint(20000, 30000)
        if all(_free(p) for p in (port, port + 1)):
            return port
    raise RuntimeError("no two free ports in a row")


def _free(port: int) -> bool:
    with socket.socket() as sock:
        return sock.connect_ex(("127.0.0.1", port)) != 0


@pytest.fixture
def broker(tmp_path):
    own = Broker(tmp_path / "broker")
    own.start()
    yield own
    own.stop()


@pytest.fixture
def processes():
    """Engine processes a test starts one by one (to kill them one by one); all stopped after it."""
    started: list[EngineProcess] = []
    yield started
    try:
        for process in started:
            process.stop()
    finally:
        remove_topics(started)
