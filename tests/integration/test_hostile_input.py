"""Hostile input against a live engine: values that would poison the model, and ids of a
megabyte, on Kafka and over HTTP."""

from __future__ import annotations

import orjson
import pytest

from engine.publish import dataset_events
from tests.conftest import KAFKA_BOOTSTRAP
from tests.helpers import dataset_messages, progressive_metrics
from tests.integration.kafka_client import consume_all, produce

pytestmark = pytest.mark.integration

HOSTILE = {7: 1e308, 19: -1e308, 31: 1e-320}  # every 40 events, at these positions


def hostile_stream():
    rows = []
    for i, (event, y) in enumerate(dataset_events("Phishing", entities=30)):
        value = HOSTILE.get(i % 40)
        if value is not None:
            event = {**event, "features": {**event["features"], "https": value}}
        rows.append((event, y))
    return rows


async def test_values_that_would_poison_the_model_are_refused_and_the_rest_is_exact(engine_factory):
    engine = engine_factory(REDIS_URL="").start()
    rows = hostile_stream()
    await produce(KAFKA_BOOTSTRAP, engine.settings.events_topic, dataset_messages(rows))

    offending = [e for e, _ in rows if abs(e["features"]["https"]) > 1e15]
    dead = await consume_all(KAFKA_BOOTSTRAP, engine.settings.dlq_events_topic, len(offending))
    assert [orjson.loads(r.value)["event_id"] for r in dead] == [e["event_id"] for e in offending]
    assert {dict(r.headers)["dlq.reason"] for r in dead} == {b"out_of_range"}

    kept = [
        (e["features"], y) for e, y in rows if abs(e["features"]["https"]) <= 1e15
    ]  # 1e-320 is a number like any other
    engine.wait_until(lambda: engine.samples_learned() == len(kept), what="every valid event learned")
    reference = progressive_metrics("logreg", kept)
    engine.wait_until(
        lambda: engine.get("/models").json()["serving"]["metrics"] == reference,
        timeout=10,
        what="River's metrics on the stream without the offending events",
    )

    answer = engine.post("/predict", {"entity_id": rows[0][0]["entity_id"], "features": {"https": 1e308}})
    assert answer.status_code == 422 and answer.json()["field"] == "features.https"
    fine = engine.post("/predict", {"entity_id": rows[0][0]["entity_id"], "features": {"https": 1e-320}}).json()
    assert fine["fallback"] is None and None not in fine["probabilities"].values()


async def test_a_megabyte_entity_id_is_refused_on_both_paths(engine_factory):
    engine = engine_factory(REDIS_URL="").start()
    huge = "x" * 1_000_000
    body = {"event_id": "huge", "entity_id": huge, "ts": 1.0, "features": {"https": 1.0}, "label": True}
    await produce(KAFKA_BOOTSTRAP, engine.settings.events_topic, [(b"k", orjson.dumps(body))])
    [dead] = await consume_all(KAFKA_BOOTSTRAP, engine.settings.dlq_events_topic, 1)
    assert dict(dead.headers)["dlq.reason"] == b"oversized"  # over MAX_MESSAGE_BYTES: refused before it is parsed

    answer = engine.post("/predict", {"entity_id": huge, "features": {}})
    assert answer.status_code == 422 and answer.json()["field"] == "entity_id"
    assert engine.get("/readyz").status_code == 200


async def test_labels_that_do_not_fit_times_ahead_and_floods_of_names_on_the_real_broker(engine_factory):
    limit = 30  # Phishing has 9 names: room for 21 of the names the flood brings
    engine = engine_factory(REDIS_URL="", MAX_MODEL_FEATURES=str(limit)).start()
    rows, refused, known = [], {}, set()
    expected = []  # what the model must learn: each kept event on the names it admits, in order
    for i, (event, y) in enumerate(dataset_events("Phishing", limit=400, entities=30)):
        # Every event carries two new names, as a producer that puts an id into a name would.
        event = {**event, "features": {**event["features"], f"user_{i}_clicks": 1.0, f"user_{i}_spend": 2.0}}
        if i % 50 == 3:
            y, refused[event["event_id"]] = 2, b"wrong_type"  # a binary model would learn it as true
        elif i % 50 == 11:
            event["ts"], refused[event["event_id"]] = "2200-01-01T00:00:00Z", b"out_of_range"
        elif i % 50 == 17:
            event["features"] = {f"f{j}": 0.0 for j in range(300)}
            refused[event["event_id"]] = b"out_of_range"
        else:
            seen = {}
            for name, value in event["features"].items():
                if name in known or len(known) < limit:
                    known.add(name)
                    seen[name] = value
            expected.append((seen, y))
        rows.append((event, y))
    await produce(KAFKA_BOOTSTRAP, engine.settings.events_topic, dataset_messages(rows))

    dead = await consume_all(KAFKA_BOOTSTRAP, engine.settings.dlq_events_topic, len(refused))
    assert {orjson.loads(r.value)["event_id"]: dict(r.headers)["dlq.reason"] for r in dead} == refused
    details = [dict(r.headers)["dlq.detail"].decode() for r in dead]
    assert any("does not fit a binary model" in detail for detail in details)

    engine.wait_until(lambda: engine.samples_learned() == len(expected), what="every valid event learned")
    reference = progressive_metrics("logreg", expected)
    engine.wait_until(
        lambda: engine.get("/models").json()["serving"]["metrics"] == reference,
        timeout=10,
        what="River's metrics on the valid events, on the names the model admitted",
    )
    dropped = sum(len(event["features"]) for event, _ in rows if event["event_id"] not in refused) - sum(
        len(x) for x, _ in expected
    )
    assert engine.get("/models").json()["serving"]["features"] == {"names": limit, "limit": limit, "dropped": dropped}
    assert f'rtml_features_dropped_total{{model="logreg"}} {float(dropped)}' in engine.get("/metrics").text

    # A label on its own topic is held to the same rule.
    await produce(
        KAFKA_BOOTSTRAP, engine.settings.labels_topic, [(b"e", orjson.dumps({"event_id": "e", "label": "yes"}))]
    )
    [letter] = await consume_all(KAFKA_BOOTSTRAP, engine.settings.dlq_labels_topic, 1)
    assert dict(letter.headers)["dlq.reason"] == b"wrong_type"
