"""Serving processes apart from the stream, on the real broker: the stream worker gone, a
serving process killed, a serving process started late, and `engine run` restarting one."""

from __future__ import annotations

import os
import signal
import time
from pathlib import Path

import httpx
import pytest

from engine.harness import KAFKA_BOOTSTRAP, EngineProcess, unique_env
from tests.helpers import event
from tests.integration.kafka_client import end_offset, eventually, produce

pytestmark = pytest.mark.integration


def worker_and_server(tmp_path: Path, **settings: object) -> tuple[EngineProcess, EngineProcess]:
    """What `engine run` starts, as two processes the test can kill one by one."""
    env = unique_env(REDIS_URL="", CACHE_L1_ENTRIES=0, MODEL_PUBLISH_EVERY_SECONDS=0.5, **settings)
    (tmp_path / "worker").mkdir()
    (tmp_path / "serve").mkdir()
    worker = EngineProcess(
        {**env, "STATE_DIR": str(tmp_path / "state")}, tmp_path / "worker", ("worker", "--embedded-learner")
    )
    server = EngineProcess({**env, "STATE_DIR": str(tmp_path / "state")}, tmp_path / "serve", ("serve",))
    return worker, server


def labelled(i: int, entity: str = "card-1", amount: float = 1.0) -> tuple[bytes, bytes]:
    return entity.encode(), event(f"e-{i}", entity, {"amount": amount}, ts=time.time(), label=i % 2 == 0)


def feature_version(server: EngineProcess, entity: str = "card-1") -> int:
    return server.get(f"/features?entity_id={entity}").json()["rows"][0]["version"]


def predict(server: EngineProcess, entity: str = "card-1") -> dict:
    response = server.post("/predict", {"entity_id": entity, "features": {"amount": 2.0}})
    assert response.status_code == 200
    return response.json()


async def wait_for_examples(worker: EngineProcess, count: int, timeout: float = 60.0) -> None:
    """Until the worker has learned `count` labels (its examples topic holds them)."""

    async def logged() -> bool:
        return await end_offset(KAFKA_BOOTSTRAP, worker.settings.examples_topic) >= count

    await eventually(logged, timeout, what=f"the worker to learn {count} labels", log=worker.log_tail)


async def test_serving_goes_on_without_the_stream_worker_and_says_how_old_its_answers_are(tmp_path, processes):
    worker, server = worker_and_server(tmp_path)
    processes += [worker.launch(), server.start()]
    await produce(KAFKA_BOOTSTRAP, server.settings.events_topic, [labelled(i) for i in range(20)])
    server.wait_until(lambda: server.samples_learned() == 20, what="20 learned")
    # Idle but alive, the learner says every 2 s that its champion is still its latest.
    time.sleep(3.0)
    assert predict(server)["model_age_seconds"] < 2.5
    worker.kill()
    first = predict(server)
    time.sleep(2.5)
    later = predict(server)
    assert later["fallback"] is None and later["model"] == first["model"]
    assert later["model_age_seconds"] >= first["model_age_seconds"] + 2
    assert later["feature_age_seconds"] >= first["feature_age_seconds"] + 2
    assert server.get("/readyz").status_code == 200


async def test_a_killed_serving_process_comes_back_and_catches_up(tmp_path, processes):
    worker, server = worker_and_server(tmp_path)
    processes += [worker.launch(), server.start()]
    await produce(KAFKA_BOOTSTRAP, server.settings.events_topic, [labelled(i) for i in range(10)])
    server.wait_until(lambda: feature_version(server) == 10, what="10 events applied")
    server.kill()
    await produce(KAFKA_BOOTSTRAP, server.settings.events_topic, [labelled(i) for i in range(10, 30)])
    await wait_for_examples(worker, 30)  # the worker applies them while no serving process runs
    processes.append(server.start())
    # Ready means caught up: the very first answer has the 20 events it missed.
    assert feature_version(server) == 30
    assert predict(server)["feature_version"] == 30


async def test_a_serving_process_started_late_is_ready_only_once_caught_up(tmp_path, processes):
    worker, server = worker_and_server(tmp_path)
    processes.append(worker.launch())
    entities = [f"card-{i}" for i in range(300)]
    await produce(
        KAFKA_BOOTSTRAP, worker.settings.events_topic, [labelled(i, entities[i % 300], float(i)) for i in range(3000)]
    )
    await wait_for_examples(worker, 3000, timeout=90)
    processes.append(server.start())
    rows = server.get("/features?" + "&".join(f"entity_id={e}" for e in entities[:50])).json()["rows"]
    assert all(row["version"] == 10 for row in rows), [row["version"] for row in rows]


async def test_engine_run_restarts_a_serving_process_that_dies(tmp_path, processes):
    engine = EngineProcess(unique_env(REDIS_URL=""), tmp_path)
    processes.append(engine.start())
    server_pid = int((engine.settings.pid_path / "serve-0.pid").read_text())
    os.kill(server_pid, signal.SIGKILL)
    engine.wait_until(
        lambda: int((engine.settings.pid_path / "serve-0.pid").read_text()) != server_pid,
        timeout=20,
        what="a new serving process",
    )
    engine.wait_until(
        lambda: httpx.get(f"{engine.base_url}/readyz", timeout=1).status_code == 200,
        timeout=30,
        what="ready again on the same port",
    )
    await produce(KAFKA_BOOTSTRAP, engine.settings.events_topic, [labelled(i) for i in range(5)])
    engine.wait_until(lambda: engine.samples_learned() == 5, what="the stream untouched by it")
    assert engine.stop() == 0
    assert not any(engine.settings.pid_path.glob("*.pid"))
