"""A forest, whose snapshots and publications are pickled in a forked child while the stream
goes on: still exact, and exact after kill -9."""

from __future__ import annotations

import orjson
import pytest
from river import evaluate

from engine.harness import KAFKA_BOOTSTRAP, unique_env
from engine.publish import dataset_events
from models.factory import build_model
from models.online import OnlineModel
from tests.integration.kafka_client import produce

pytestmark = pytest.mark.integration


async def test_a_forest_killed_mid_stream_resumes_exactly(engine_factory):
    env = unique_env(MODEL="arf", SNAPSHOT_EVERY_LABELS=250, SNAPSHOT_EVERY_SECONDS=1000, REDIS_URL="",
                     CACHE_L1_ENTRIES=0, PYTHONHASHSEED=0)
    rows = list(dataset_events("Phishing", entities=25))
    messages = [(e["entity_id"].encode(), orjson.dumps({**e, "label": y})) for e, y in rows]
    engine = engine_factory(env).start()
    await produce(KAFKA_BOOTSTRAP, engine.settings.events_topic, messages)  # a forest learns them in seconds
    engine.wait_until(lambda: engine.samples_learned() >= 600, timeout=120, what="600 learned")
    engine.kill()
    snapshots = sorted((engine.settings.snapshot_path).glob("snapshot-*.bin"))
    assert snapshots, "the forest's snapshots (written by a child process) are on disk"
    engine = engine_factory(env).start()
    engine.wait_until(lambda: engine.samples_learned() == len(rows), timeout=180, what="every label learned once")

    reference = {}
    for name, metric in OnlineModel("arf").metrics.items():
        fresh = type(metric)()
        evaluate.progressive_val_score([(e["features"], y) for e, y in rows], build_model("arf"), fresh)
        reference[name] = fresh.get()
    engine.wait_until(lambda: engine.get("/models").json()["serving"]["metrics"] == reference, timeout=10,
                      what="River's metrics for the forest")
