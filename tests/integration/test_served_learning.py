"""Learning from what was served, on the real broker: predictions answered over HTTP with an
event_id, their labels on the labels topic or through POST /labels, learned once from the
features as served; ids served twice or never; the broker gone; a serving process killed
with logs in flight."""

from __future__ import annotations

import asyncio
import json
import time

import httpx
import orjson
import pytest

from engine.harness import KAFKA_BOOTSTRAP
from engine.publish import dataset_events
from tests.helpers import dataset_messages, label
from tests.integration.kafka_client import consume_all, end_offset, eventually, produce
from tests.integration.test_serving_faults import wait_for_examples, worker_and_server

pytestmark = pytest.mark.integration


def request(i: int, x: dict, entities: int = 10) -> dict:
    return {"entity_id": f"Phishing-entity-{i % entities}", "features": x, "event_id": f"served-{i}"}


def classes(pairs: list) -> dict[str, float]:
    """Probabilities as the HTTP answer writes them (JSON keys are strings)."""
    return {json.dumps(label): p for label, p in pairs}


async def test_served_predictions_are_learned_once_from_labels_on_the_topic_and_posted(engine_factory, tmp_path):
    features_file = tmp_path / "features.json"
    features_file.write_text(json.dumps([{"name": "n", "agg": "count"}]))
    engine = engine_factory(
        REDIS_URL="", FEATURES_FILE=str(features_file), EARLY_LABEL_GRACE_SECONDS=1, MODEL_PUBLISH_EVERY_SECONDS=0.2
    ).start()
    rows = list(dataset_events("Phishing", limit=230, entities=10))
    stream, later = rows[:200], rows[200:]
    await produce(KAFKA_BOOTSTRAP, engine.settings.events_topic, dataset_messages(stream))
    engine.wait_until(lambda: engine.samples_learned() == 200, what="the stream learned")
    engine.wait_until(
        lambda: engine.get("/features?entity_id=Phishing-entity-0").json()["rows"][0]["version"] == 20,
        what="serving caught up with the entities' features",
    )

    answers = {}
    for i, (event, _) in enumerate(later):
        answer = engine.post("/predict", request(i, event["features"])).json()
        assert answer["logged"] == "queued" and answer["fallback"] is None
        answers[answer["event_id"]] = answer
    again = engine.post("/predict", {**request(0, later[1][0]["features"])}).json()
    assert again["logged"] == "duplicate" and again["prediction"] is not None

    # Half the labels on the labels topic, half through POST /labels.
    truth = {f"served-{i}": y for i, (_, y) in enumerate(later)}
    ids = list(truth)
    await produce(KAFKA_BOOTSTRAP, engine.settings.labels_topic, [(i.encode(), label(i, truth[i])) for i in ids[:15]])
    posted = engine.post("/labels", {"labels": [{"event_id": i, "label": truth[i]} for i in ids[15:]]})
    assert posted.status_code == 202 and posted.json() == {"accepted": 15}
    engine.wait_until(lambda: engine.samples_learned() == 230, what="every served prediction learned")

    examples = [orjson.loads(r.value) for r in await consume_all(KAFKA_BOOTSTRAP, engine.settings.examples_topic, 230)]
    served = [e for e in examples if e.get("served")]
    assert sorted(e["event_id"] for e in served) == sorted(ids)  # each once, the duplicate request not again
    for example in served:
        answer = answers[example["event_id"]]
        i = int(example["event_id"].split("-")[1])
        # The features as the model saw them: the request's joined with the entity's, as served.
        assert example["features"] == {**later[i][0]["features"], "n": float(answer["feature_version"])}
        assert example["prediction"]["value"] == answer["prediction"]
        assert classes(example["prediction"]["proba"]) == answer["probabilities"]
        assert example["label"] == truth[example["event_id"]]

    listing = engine.get("/models").json()["serving"]
    assert listing["served_samples"] == 30
    hits = sum(answers[i]["prediction"] == truth[i] for i in ids)
    assert listing["served_metrics"]["accuracy"] == pytest.approx(hits / 30)
    assert "rtml_served_metric{" in engine.get("/metrics").text

    # A label for an id never served, and one for an id already learned: dead-lettered as today.
    engine.post("/labels", {"labels": [{"event_id": "never-served", "label": True}]})
    await produce(KAFKA_BOOTSTRAP, engine.settings.labels_topic, [(b"served-0", label("served-0", truth["served-0"]))])
    dead = await consume_all(KAFKA_BOOTSTRAP, engine.settings.dlq_labels_topic, 2, timeout=30)
    reasons = {orjson.loads(r.value)["event_id"]: dict(r.headers)["dlq.reason"] for r in dead}
    assert reasons == {"never-served": b"unknown_event", "served-0": b"duplicate_event"}


async def test_a_killed_serving_process_loses_only_what_kafka_never_acknowledged(tmp_path, processes):
    worker, server = worker_and_server(tmp_path, EARLY_LABEL_GRACE_SECONDS=1)
    processes += [worker.launch(), server.start()]
    rows = list(dataset_events("Phishing", limit=300, entities=10))
    async with httpx.AsyncClient(base_url=server.base_url, timeout=10) as client:
        # All at once, and the process killed as the last answer arrives: logs are in flight.
        answers = await asyncio.gather(
            *(client.post("/predict", json=request(i, event["features"])) for i, (event, _) in enumerate(rows))
        )
    server.kill()  # kill -9: whatever its log still buffered is gone
    assert all(answer.json()["logged"] == "queued" for answer in answers)

    predictions = worker.settings.predictions_topic
    logged = [orjson.loads(r.value)["event_id"] for r in await consume_all(KAFKA_BOOTSTRAP, predictions, 300, 5)]
    truth = {f"served-{i}": y for i, (_, y) in enumerate(rows)}
    await produce(KAFKA_BOOTSTRAP, worker.settings.labels_topic, [(i.encode(), label(i, y)) for i, y in truth.items()])
    await wait_for_examples(worker, len(logged))
    lost = 300 - len(logged)
    if lost:
        dead = await consume_all(KAFKA_BOOTSTRAP, worker.settings.dlq_labels_topic, lost, timeout=30)
        assert sorted(orjson.loads(r.value)["event_id"] for r in dead) == sorted(set(truth) - set(logged))
    time.sleep(1.0)  # nothing more may come
    examples = await consume_all(KAFKA_BOOTSTRAP, worker.settings.examples_topic, len(logged) + 1, 3)
    assert sorted(orjson.loads(r.value)["event_id"] for r in examples) == sorted(logged)  # each acknowledged one, once
    print(f"served 300, logged {len(logged)} before kill -9, learned {len(examples)}")


async def test_with_the_broker_gone_served_predictions_are_answered_and_counted_unlogged(broker, engine_factory):
    engine = engine_factory(KAFKA_BOOTSTRAP=broker.bootstrap, REDIS_URL="", SERVED_LOG_BUFFER=5).start()
    first = engine.post("/predict", {"entity_id": "a", "features": {"x": 1.0}, "event_id": "before"}).json()
    assert first["logged"] == "queued"

    async def logged_before() -> bool:
        return await end_offset(broker.bootstrap, engine.settings.predictions_topic) == 1

    await eventually(logged_before, 30, what="the prediction served before the outage on the topic")
    broker.stop()
    answers = [
        engine.post("/predict", {"entity_id": "a", "features": {"x": 1.0}, "event_id": f"during-{i}"})
        for i in range(40)
    ]
    assert all(a.status_code == 200 and a.json()["prediction"] is not None for a in answers)
    outcomes = [a.json()["logged"] for a in answers]
    assert "unlogged" in outcomes and set(outcomes) <= {"queued", "unlogged"}
    metrics = engine.get("/metrics").text
    assert 'rtml_served_predictions_unlogged_total{reason="buffer_full"}' in metrics
    assert engine.get("/healthz").status_code == 200
