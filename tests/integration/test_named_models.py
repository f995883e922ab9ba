"""Several named models on one stream, on the real broker: each learns its own target exactly
as River's progressive_val_score, through inline labels, labels that come later (the labels
topic and POST /labels) and kill -9; serving answers from the model a request names."""

from __future__ import annotations

import random

import httpx
import orjson
import pytest

from engine.publish import dataset_events
from tests.conftest import KAFKA_BOOTSTRAP, unique_env
from tests.helpers import (
    NAMED_FACTORIES,
    NAMED_MODELS,
    dataset_messages,
    named_labels,
    progressive_metrics,
    rows_for,
)
from tests.integration.kafka_client import end_offset, kill_while_publishing, produce, wait_until_consumed

pytestmark = pytest.mark.integration


def examples_topic(settings, name: str) -> str:
    return settings.for_model(next(m for m in settings.models if m.name == name)).examples_topic


def learned(engine, name: str) -> int:
    return engine.get(f"/models?model={name}").json()["serving"]["samples_learned"]


def missing_target_count(engine, name: str) -> float:
    for line in engine.get("/metrics").text.splitlines():
        if line.startswith(f'rtml_labels_missing_target_total{{model="{name}"}}'):
            return float(line.rsplit(" ", 1)[1])
    return 0.0


async def test_three_models_on_two_targets_each_match_progressive_val_score(engine_factory):
    engine = engine_factory(MODELS=NAMED_MODELS, PYTHONHASHSEED=0).start()
    rows = named_labels(list(dataset_events("Phishing")))
    await produce(KAFKA_BOOTSTRAP, engine.settings.events_topic, dataset_messages(rows))
    for name in NAMED_FACTORIES:
        expected = len(rows_for(name, rows))
        engine.wait_until(lambda name=name, n=expected: learned(engine, name) == n, what=f"{name} learned {expected}")

    board = {row["name"]: row for row in engine.get("/models").json()["models"]}
    assert list(board) == ["clf", "tree", "score"]  # the default first
    for name, factory in NAMED_FACTORIES.items():
        own = [(e["features"], y) for e, y in rows_for(name, rows)]
        reference = progressive_metrics(factory, own)
        document = engine.get(f"/models?model={name}").json()
        assert document["model"] == name and document["serving"]["metrics"] == reference, name
        assert board[name]["value"] == reference[board[name]["primary_metric"]]
        # Each model's examples, once each, on its own topic.
        assert await end_offset(KAFKA_BOOTSTRAP, examples_topic(engine.settings, name)) == len(own)
    engine.wait_until(
        lambda: missing_target_count(engine, "score") == len(rows) - len(rows_for("score", rows)),
        what="the labels without a score counted",
    )
    assert missing_target_count(engine, "clf") == 0

    # Serving: the model a request names answers; the default without a name; 404 naming the choices.
    entity = rows[0][0]["entity_id"]
    default = engine.post("/predict", {"entity_id": entity}).json()
    assert default["model"]["name"] == "logreg" and isinstance(default["prediction"], bool)
    regressed = httpx.post(f"{engine.base_url}/predict?model=score", json={"entity_id": entity}).json()
    assert isinstance(regressed["prediction"], float) and regressed["probabilities"] is None
    assert engine.post("/predict", {"entity_id": entity, "model": "tree"}).json()["model"]["name"] == "hoeffding"
    unknown = engine.post("/predict", {"entity_id": entity, "model": "forest"})
    assert unknown.status_code == 404 and unknown.json()["field"] == "model"
    assert "forest" in unknown.json()["error"] and "['clf', 'tree', 'score']" in unknown.json()["error"]
    assert engine.get("/models?model=forest").status_code == 404
    assert engine.get("/v2/models/score/ready").status_code == 200
    assert engine.get("/v2/models/logreg/ready").status_code == 404  # named models go by their names


async def test_object_labels_that_come_later_teach_each_model_its_target(engine_factory):
    engine = engine_factory(MODELS=NAMED_MODELS, PYTHONHASHSEED=0, ADMIN_TOKEN="t0ken").start()
    rows = named_labels(list(dataset_events("Phishing", limit=600)))
    await produce(KAFKA_BOOTSTRAP, engine.settings.events_topic, dataset_messages(rows, inline_labels=False))
    engine.wait_until(
        lambda: engine.get("/models").json()["serving"]["predictions_awaiting_label"] == len(rows),
        what="every event predicted and waiting for its label",
    )
    half = len(rows) // 2
    on_topic = [(e["event_id"].encode(), orjson.dumps({"event_id": e["event_id"], "label": y})) for e, y in rows[:half]]
    await produce(KAFKA_BOOTSTRAP, engine.settings.labels_topic, on_topic)
    posted = engine.post("/labels", {"labels": [{"event_id": e["event_id"], "label": y} for e, y in rows[half:]]})
    assert posted.status_code == 202
    # A label that has none of the targets is refused, naming them.
    refused = engine.post("/labels", {"labels": [{"event_id": "x", "label": {"amount": 3}}]})
    assert refused.status_code == 422 and "is_phishing" in refused.json()["error"]
    for name, factory in NAMED_FACTORIES.items():
        own = [(e["features"], y) for e, y in rows_for(name, rows)]
        engine.wait_until(lambda name=name, n=len(own): learned(engine, name) == n, what=f"{name} learned")
        # Every prediction was made before any label: River's delay=len(rows).
        reference = progressive_metrics(factory, own, delay=len(own))
        assert engine.get(f"/models?model={name}").json()["serving"]["metrics"] == reference, name
    # A prediction served over HTTP with an event_id teaches the model that answered, alone.
    entity = rows[0][0]["entity_id"]
    served = httpx.post(
        f"{engine.base_url}/predict?model=score", json={"entity_id": entity, "event_id": "served-1"}
    ).json()
    assert served["logged"] == "queued"
    assert engine.post("/labels", {"labels": [{"event_id": "served-1", "label": {"score": 2.5}}]}).status_code == 202
    engine.wait_until(
        lambda: engine.get("/models?model=score").json()["serving"]["served_samples"] == 1,
        what="the served prediction learned by score",
    )
    assert engine.get("/models?model=clf").json()["serving"]["served_samples"] == 0

    # Admin commands go to the named model's own learner.
    auth = {"Authorization": "Bearer t0ken"}
    nothing = httpx.post(f"{engine.base_url}/models/score/rollback", headers=auth, timeout=15)
    assert nothing.status_code == 409 and "roll back" in nothing.json()["error"]
    unknown = httpx.post(f"{engine.base_url}/models/forest/rollback", headers=auth, timeout=15)
    assert unknown.status_code == 404 and "['clf', 'tree', 'score']" in unknown.json()["error"]


async def test_sigkill_with_several_models_is_exact_for_each(engine_factory):
    # Snapshots rarer than Faust's offset commits: restarts relearn from each model's examples topic.
    env = unique_env(
        MODELS=NAMED_MODELS, SNAPSHOT_EVERY_LABELS=230, SNAPSHOT_EVERY_SECONDS=1000, REDIS_URL="", PYTHONHASHSEED=0
    )
    rows = named_labels(list(dataset_events("Phishing", entities=40, start_ts=1_700_000_000.0)))
    total = len(rows)
    kill_points = random.Random(19).sample(range(150, total - 150), 2)
    engine = await kill_while_publishing(engine_factory, env, rows, kill_points, lambda e: learned(e, "clf"))

    for name in NAMED_FACTORIES:
        n = len(rows_for(name, rows))
        engine.wait_until(lambda name=name, n=n: learned(engine, name) == n, timeout=120, what=f"{name} learned all")
    await wait_until_consumed(engine)
    for name, factory in NAMED_FACTORIES.items():
        own = [(e["features"], y) for e, y in rows_for(name, rows)]
        # Each example once on its model's topic: none learned twice, none lost.
        assert await end_offset(KAFKA_BOOTSTRAP, examples_topic(engine.settings, name)) == len(own)
        assert engine.get(f"/models?model={name}").json()["serving"]["metrics"] == progressive_metrics(factory, own)
