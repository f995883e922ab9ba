"""Retrain offline, register, promote through the admin route, roll back: on a live engine."""

from __future__ import annotations

import os
import subprocess
import sys

import httpx
import orjson
import pytest

from engine.publish import dataset_events
from tests.conftest import KAFKA_BOOTSTRAP, ROOT, unique_env
from tests.integration.kafka_client import produce

pytestmark = pytest.mark.integration

TOKEN = "test-admin-token"


async def test_retrain_register_promote_rollback(engine_factory, tmp_path):
    env = unique_env(ADMIN_TOKEN=TOKEN, SNAPSHOT_EVERY_LABELS=400, CACHE_L1_ENTRIES=0, REDIS_URL="")
    rows = list(dataset_events("Phishing", entities=20))
    engine = engine_factory(env).start()
    await produce(KAFKA_BOOTSTRAP, engine.settings.events_topic,
                  [(e["entity_id"].encode(), orjson.dumps({**e, "label": y})) for e, y in rows])
    engine.wait_until(lambda: engine.samples_learned() == len(rows), what="the dataset learned")
    assert engine.stop() == 0  # the snapshot at stop flushes the training log

    retrain = subprocess.run(
        [sys.executable, "-m", "engine", "retrain", "--candidate", "hoeffding", "--passes", "2"],
        cwd=ROOT, env={**os.environ, **env, "STATE_DIR": str(tmp_path / "state")}, capture_output=True, text=True,
    )
    assert retrain.returncode == 0, retrain.stderr[-2000:]
    assert "registered_version" in retrain.stdout

    engine = engine_factory(env).start()
    models = engine.get("/models").json()
    candidate = [v for v in models["versions"] if v["kind"] == "candidate"][-1]
    assert candidate["parent"] == models["serving_version"] == 1
    assert candidate["comparison"]["training_window"]["examples"] == 1000
    assert candidate["comparison"]["holdout_window"]["examples"] == 250

    body = {"entity_id": rows[0][0]["entity_id"], "features": rows[0][0]["features"]}
    before = engine.post("/predict", body).json()
    auth = {"Authorization": f"Bearer {TOKEN}"}
    assert httpx.post(f"{engine.base_url}/models/logreg/promote", json={"version": candidate["version"]}).status_code == 401
    promoted = httpx.post(f"{engine.base_url}/models/logreg/promote", json={"version": candidate["version"]}, headers=auth)
    assert promoted.status_code == 200, promoted.text
    during = engine.post("/predict", body).json()
    assert during["model"] == {"name": "hoeffding", "version": candidate["version"]}

    back = httpx.post(f"{engine.base_url}/models/hoeffding/rollback", headers=auth)
    assert back.status_code == 200, back.text
    after = engine.post("/predict", body).json()
    assert after["model"] == before["model"] and after["probabilities"] == before["probabilities"]
