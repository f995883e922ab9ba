"""Retrain offline, register, promote through the admin route, roll back: on a live engine."""

from __future__ import annotations

import os
import subprocess
import sys

import httpx
import pytest

from engine.publish import dataset_events
from models.registry import ModelRegistry
from tests.conftest import KAFKA_BOOTSTRAP, ROOT, unique_env
from tests.helpers import dataset_messages, trained
from tests.integration.kafka_client import produce

pytestmark = pytest.mark.integration

TOKEN = "test-admin-token"


async def test_retrain_register_promote_rollback(engine_factory, tmp_path):
    env = unique_env(ADMIN_TOKEN=TOKEN, SNAPSHOT_EVERY_LABELS=400, CACHE_L1_ENTRIES=0, REDIS_URL="")
    rows = list(dataset_events("Phishing", entities=20))
    engine = engine_factory(env).start()
    await produce(KAFKA_BOOTSTRAP, engine.settings.events_topic, dataset_messages(rows))
    engine.wait_until(lambda: engine.samples_learned() == len(rows), what="the dataset learned")
    assert engine.stop() == 0  # the snapshot at stop flushes the training log

    retrain = subprocess.run(
        [sys.executable, "-m", "engine", "retrain", "--candidate", "hoeffding", "--passes", "2"],
        cwd=ROOT,
        env={**os.environ, **env, "STATE_DIR": str(tmp_path / "state")},
        capture_output=True,
        text=True,
    )
    assert retrain.returncode == 0, retrain.stderr[-2000:]
    assert "registered_version" in retrain.stdout

    engine = engine_factory(env).start()
    # Serving answers at once from what the models topic held; the learner then publishes
    # the registry with the candidate registered while the engine was down.
    engine.wait_until(
        lambda: any(v["kind"] == "candidate" for v in engine.get("/models").json()["versions"]),
        what="the registry with the candidate",
    )
    models = engine.get("/models").json()
    assert models["snapshots"][0]["samples_learned"] == len(rows)  # the one written at stop
    candidate = [v for v in models["versions"] if v["kind"] == "candidate"][-1]
    assert candidate["parent"] == models["serving_version"] == 1
    assert candidate["comparison"]["training_window"]["examples"] == 1000
    assert candidate["comparison"]["holdout_window"]["examples"] == 250

    body = {"entity_id": rows[0][0]["entity_id"], "features": rows[0][0]["features"]}
    before = engine.post("/predict", body).json()
    auth = {"Authorization": f"Bearer {TOKEN}"}
    assert (
        httpx.post(f"{engine.base_url}/models/logreg/promote", json={"version": candidate["version"]}).status_code
        == 401
    )
    promoted = httpx.post(
        f"{engine.base_url}/models/logreg/promote", json={"version": candidate["version"]}, headers=auth
    )
    assert promoted.status_code == 200, promoted.text
    during = engine.post("/predict", body).json()
    assert during["model"] == {"name": "hoeffding", "version": candidate["version"]}

    back = httpx.post(f"{engine.base_url}/models/hoeffding/rollback", headers=auth)
    assert back.status_code == 200, back.text
    after = engine.post("/predict", body).json()
    assert after["model"] == before["model"] and after["probabilities"] == before["probabilities"]


async def test_canary_rollout_on_a_live_engine_is_decided_by_labels(engine_factory, tmp_path):
    env = unique_env(ADMIN_TOKEN=TOKEN, CACHE_L1_ENTRIES=0, REDIS_URL="")
    rows = list(dataset_events("Phishing", entities=50))
    engine = engine_factory(env).start()
    auth = {"Authorization": f"Bearer {TOKEN}"}
    messages = dataset_messages(rows)
    await produce(KAFKA_BOOTSTRAP, engine.settings.events_topic, messages[:100])
    engine.wait_until(lambda: engine.samples_learned() == 100, what="100 learned")

    # A challenger that learned the whole dataset beforehand: it must win the canary.
    challenger = trained([(event["features"], y) for event, y in rows])
    version = ModelRegistry(tmp_path / "state/snapshots/registry").register(challenger, "candidate", parent=1)
    started = httpx.post(
        f"{engine.base_url}/models/logreg/rollout",
        json={"version": version, "mode": "canary", "share": 0.3, "min_labels": 300, "margin": 0.01},
        headers=auth,
    )
    assert started.status_code == 200, started.text

    served = [
        engine.post("/predict", {"entity_id": f"visitor-{i}", "features": rows[0][0]["features"]}).json()
        for i in range(400)
    ]
    canary_share = sum(a["model"]["version"] == version for a in served) / len(served)
    assert abs(canary_share - 0.3) < 0.08  # hash routing over 400 entities

    await produce(KAFKA_BOOTSTRAP, engine.settings.events_topic, messages[100:500])
    engine.wait_until(lambda: engine.get("/models").json()["rollout"] is None, what="the rollout decided")
    models = engine.get("/models").json()
    assert models["serving_version"] == version
    entry = next(v for v in models["versions"] if v["version"] == version)
    assert entry["rollout_result"] == "promote"
    assert (
        engine.post("/predict", {"entity_id": "anyone", "features": rows[0][0]["features"]}).json()["model"]["version"]
        == version
    )
