"""kill -9 at random points during a replay: every label learned exactly once, and the end
state equals an uninterrupted run's (progressive metrics, feature aggregates, predictions)."""

from __future__ import annotations

import asyncio
import json
import random

import httpx
import orjson
import pytest
from river import evaluate

from engine.publish import dataset_events
from models.factory import build_model
from models.online import OnlineModel
from streams.features import FeatureRegistry, apply_event, model_features
from tests.conftest import KAFKA_BOOTSTRAP, unique_env
from tests.integration.kafka_client import produce

pytestmark = pytest.mark.integration

DEFINITIONS = [
    {"name": "visits_1h", "agg": "count", "window_seconds": 3600},
    {"name": "https_mean", "source": "https", "agg": "mean"},
]


def uninterrupted_run(rows):
    """What an engine that never crashed computes: features by the same pure functions, then
    River's own progressive_val_score on them."""
    aggregates = FeatureRegistry(DEFINITIONS).aggregates
    states, dataset = {}, []
    for event, y in rows:
        state = apply_event(states.get(event["entity_id"]), event["ts"], event["features"], aggregates)
        states[event["entity_id"]] = state
        dataset.append((model_features(event["features"], state["values"]), y))
    reference = {}
    for name, metric in OnlineModel("logreg").metrics.items():
        fresh = type(metric)()
        evaluate.progressive_val_score(dataset, build_model("logreg"), fresh)
        reference[name] = fresh.get()
    model = build_model("logreg")
    for x, y in dataset:
        model.learn_one(x, y)
    return reference, states, model


def learned(engine) -> int | None:
    try:
        return engine.samples_learned()
    except (httpx.HTTPError, KeyError, ValueError):
        return None


async def test_sigkill_during_replay_is_exact(engine_factory, tmp_path):
    features_file = tmp_path / "features.json"
    features_file.write_text(json.dumps(DEFINITIONS))
    # Snapshots rarer than Faust's offset commits: restarts must read back what Faust skips.
    env = unique_env(FEATURES_FILE=features_file, SNAPSHOT_EVERY_LABELS=230, SNAPSHOT_EVERY_SECONDS=1000,
                     CACHE_L1_ENTRIES=0, REDIS_URL="", PYTHONHASHSEED=0)
    rows = [({**e, "label": None}, y) for e, y in dataset_events("Phishing", entities=40, start_ts=1_700_000_000.0)]
    rows = [({k: v for k, v in e.items() if k != "label"}, y) for e, y in rows]
    total = len(rows)
    engine = engine_factory(env).start()

    async def publish_slowly():
        for start in range(0, total, 50):
            chunk = rows[start:start + 50]
            await produce(KAFKA_BOOTSTRAP, engine.settings.events_topic,
                          [(e["entity_id"].encode(), orjson.dumps({**e, "label": y})) for e, y in chunk])
            await asyncio.sleep(0.15)

    publishing = asyncio.create_task(publish_slowly())
    kill_points = sorted(random.Random(11).sample(range(150, total - 150), 3))
    for point in kill_points:
        while (learned(engine) or 0) < point:
            await asyncio.sleep(0.05)
        engine.kill()
        engine = engine_factory(env).start()
    await publishing

    for _ in range(1200):
        if learned(engine) == total:
            break
        await asyncio.sleep(0.1)
    await asyncio.sleep(2.0)  # anything learned twice would show up as more than `total`
    serving = engine.get("/models").json()["serving"]
    assert serving["samples_learned"] == total

    reference_metrics, reference_states, reference_model = uninterrupted_run(rows)
    assert serving["metrics"] == reference_metrics

    entity_ids = sorted(reference_states)
    query = "&".join(f"entity_id={e}" for e in entity_ids)
    online = {r["entity_id"]: r for r in engine.get(f"/features?{query}").json()["rows"]}
    for entity_id in entity_ids:
        assert online[entity_id]["values"] == reference_states[entity_id]["values"]
        assert online[entity_id]["version"] == reference_states[entity_id]["version"]

    held_out = [e for e, _ in rows[:25]]
    for event in held_out:
        answer = engine.post("/predict", {"entity_id": event["entity_id"], "features": event["features"]}).json()
        x = model_features(event["features"], reference_states[event["entity_id"]]["values"])
        expected = reference_model.predict_proba_one(x)
        assert answer["probabilities"] == {str(k).lower(): v for k, v in expected.items()}


async def test_graceful_restart_keeps_everything_learned(engine_factory, tmp_path):
    # No periodic snapshot would come: only the one written at stop carries the learning.
    env = unique_env(SNAPSHOT_EVERY_LABELS=1_000_000, SNAPSHOT_EVERY_SECONDS=100_000, PYTHONHASHSEED=0)
    rows = list(dataset_events("Phishing", entities=40))
    messages = [(e["entity_id"].encode(), orjson.dumps({**e, "label": y})) for e, y in rows]
    engine = engine_factory(env).start()
    await produce(KAFKA_BOOTSTRAP, engine.settings.events_topic, messages[:700])
    engine.wait_until(lambda: engine.samples_learned() == 700, what="700 learned")
    assert engine.stop() == 0
    await produce(KAFKA_BOOTSTRAP, engine.settings.events_topic, messages[700:])  # while it is down
    engine = engine_factory(env).start()
    # Started fresh it would stop at 550; relearning the first 700 would overshoot.
    engine.wait_until(lambda: engine.samples_learned() == len(rows), what="the rest learned")

    reference = {}
    for name, metric in OnlineModel("logreg").metrics.items():
        fresh = type(metric)()
        evaluate.progressive_val_score([(e["features"], y) for e, y in rows], build_model("logreg"), fresh)
        reference[name] = fresh.get()
    assert engine.get("/models").json()["serving"]["metrics"] == reference
