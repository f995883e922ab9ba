"""kill -9 at random points during a replay: every label learned exactly once, and the end
state equals an uninterrupted run's (progressive metrics, feature aggregates, predictions)."""

from __future__ import annotations

import json
import random

import pytest

from engine.publish import dataset_events
from streams.features import model_features
from tests.conftest import KAFKA_BOOTSTRAP, unique_env
from tests.helpers import dataset_messages, progressive_metrics, replay_features, trained
from tests.integration.kafka_client import end_offset, kill_while_publishing, produce, wait_until_consumed

pytestmark = pytest.mark.integration

DEFINITIONS = [
    {"name": "visits_1h", "agg": "count", "window_seconds": 3600},
    {"name": "https_mean", "source": "https", "agg": "mean"},
]


def uninterrupted_run(rows):
    """What an engine that never crashed computes: features by the same pure functions, then
    River's own progressive_val_score on them."""
    after, states = replay_features(DEFINITIONS, [e for e, _ in rows])
    dataset = [(model_features(e["features"], state["values"]), y) for (e, y), state in zip(rows, after)]
    return progressive_metrics("logreg", dataset), states, trained(dataset)


# LEARNER=apart: `engine run` starts the worker and the learner as processes of their own,
# and kill -9 of the supervisor takes both down at once.
@pytest.mark.parametrize("learner", ["embedded", "apart"])
async def test_sigkill_during_replay_is_exact(engine_factory, tmp_path, learner):
    features_file = tmp_path / "features.json"
    features_file.write_text(json.dumps(DEFINITIONS))
    # Snapshots rarer than Faust's offset commits: restarts must read back what Faust skips.
    env = unique_env(
        FEATURES_FILE=features_file,
        SNAPSHOT_EVERY_LABELS=230,
        SNAPSHOT_EVERY_SECONDS=1000,
        CACHE_L1_ENTRIES=0,
        REDIS_URL="",
        PYTHONHASHSEED=0,
        LEARNER=learner,
    )
    rows = list(dataset_events("Phishing", entities=40, start_ts=1_700_000_000.0))
    total = len(rows)
    kill_points = random.Random(11).sample(range(150, total - 150), 3)
    engine = await kill_while_publishing(engine_factory, env, rows, kill_points, lambda e: e.samples_learned())

    engine.wait_until(lambda: engine.samples_learned() == total, timeout=120, what="every label learned")
    await wait_until_consumed(engine)
    if learner == "embedded":
        # Once every event is processed for good, an event learned twice would show: its
        # example would be on the examples topic twice. (A worker apart does not know what
        # its learner learned: a replay writes an example again, which the learner skips.)
        assert await end_offset(KAFKA_BOOTSTRAP, engine.settings.examples_topic) == total
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
        expected = reference_model.predict(x).proba
        assert answer["probabilities"] == {str(k).lower(): v for k, v in expected.items()}


async def test_graceful_restart_keeps_everything_learned(engine_factory, tmp_path):
    # No periodic snapshot would come: only the one written at stop carries the learning.
    env = unique_env(SNAPSHOT_EVERY_LABELS=1_000_000, SNAPSHOT_EVERY_SECONDS=100_000, PYTHONHASHSEED=0)
    rows = list(dataset_events("Phishing", entities=40))
    messages = dataset_messages(rows)
    engine = engine_factory(env).start()
    await produce(KAFKA_BOOTSTRAP, engine.settings.events_topic, messages[:700])
    engine.wait_until(lambda: engine.samples_learned() == 700, what="700 learned")
    assert engine.stop() == 0
    await produce(KAFKA_BOOTSTRAP, engine.settings.events_topic, messages[700:])  # while it is down
    engine = engine_factory(env).start()
    # Started fresh it would stop at 550; relearning the first 700 would overshoot.
    engine.wait_until(lambda: engine.samples_learned() == len(rows), what="the rest learned")

    reference = progressive_metrics("logreg", [(e["features"], y) for e, y in rows])
    assert engine.get("/models").json()["serving"]["metrics"] == reference
