"""Every kind of bad input lands in the DLQ with its reason; the valid messages around it are all learned."""

from __future__ import annotations

import json

import orjson
import pytest

from tests.conftest import KAFKA_BOOTSTRAP
from tests.helpers import event
from tests.integration.kafka_client import consume_all, produce

pytestmark = pytest.mark.integration

BAD_EVENTS = [
    ("not_json", b"{this is not json"),
    ("not_object", b"[1, 2, 3]"),
    ("missing_field", orjson.dumps({"entity_id": "u", "ts": 1.0, "features": {}})),
    ("missing_field", orjson.dumps({"event_id": "no-ts", "entity_id": "u", "features": {}})),
    ("wrong_type", orjson.dumps({"event_id": "bad-features", "entity_id": "u", "ts": 1.0, "features": "x"})),
    ("wrong_type", orjson.dumps({"event_id": "bad-value", "entity_id": "u", "ts": 1.0, "features": {"a": [1]}})),
    ("wrong_type", orjson.dumps({"event_id": "bad-ts", "entity_id": "u", "ts": "yesterday", "features": {}})),
    ("non_finite", b'{"event_id": "nan", "entity_id": "u", "ts": 1.0, "features": {"amount": NaN}}'),
    ("non_finite", b'{"event_id": "inf", "entity_id": "u", "ts": 1.0, "features": {"amount": 1e999}}'),
    ("out_of_range", event("too-big", "u", {"amount": 1e9}, label=True)),
    ("oversized", event("huge", "u", {"amount": 1.0, "blob": "x" * 5000}, label=True)),
    ("model_error", event("string-into-scaler", "u", {"amount": 1.0, "country": "FR"}, label=True)),
]


async def test_bad_events_are_dead_lettered_and_valid_ones_learned(engine_factory, tmp_path):
    features_file = tmp_path / "features.json"
    features_file.write_text(json.dumps([{"name": "amount", "kind": "raw", "min": 0, "max": 10000}]))
    engine = engine_factory(FEATURES_FILE=features_file, MAX_MESSAGE_BYTES=2048).start()

    messages = []
    for i, (_, raw) in enumerate(BAD_EVENTS):
        messages.append((b"u", raw))
        messages.append((b"u", event(f"valid-{i}", "u", {"amount": float(i)}, label=i % 2 == 0)))
    messages.append((b"u", event("valid-0", "u", {"amount": 3.0}, label=True)))  # duplicate event id
    await produce(KAFKA_BOOTSTRAP, engine.settings.events_topic, messages)

    expected = [reason for reason, _ in BAD_EVENTS] + ["duplicate_event"]
    dead = await consume_all(KAFKA_BOOTSTRAP, engine.settings.dlq_events_topic, len(expected))
    assert [dict(r.headers)["dlq.reason"].decode() for r in dead] == expected
    assert [r.value for r in dead] == [raw for _, raw in BAD_EVENTS] + [messages[-1][1]]
    assert all(dict(r.headers)["dlq.source.topic"].decode() == engine.settings.events_topic for r in dead)

    engine.wait_until(lambda: engine.samples_learned() == len(BAD_EVENTS), what="every valid event learned")
    metrics_text = engine.get("/metrics").text
    assert (
        f'rtml_dlq_messages_total{{reason="out_of_range",topic="{engine.settings.dlq_events_topic}"}} 1.0'
        in metrics_text
    )


async def test_bad_labels_are_dead_lettered(engine_factory):
    engine = engine_factory(EARLY_LABEL_GRACE_SECONDS=1).start()
    await produce(
        KAFKA_BOOTSTRAP,
        engine.settings.events_topic,
        [(b"u", event("e-1", "u", {"amount": 1.0})), (b"u", event("e-2", "u", {"amount": 2.0}))],
    )
    engine.wait_until(
        lambda: engine.get("/models").json()["serving"]["predictions_awaiting_label"] == 2, what="predictions"
    )
    bad_labels = [
        ("not_json", b"nope"),
        ("missing_field", orjson.dumps({"event_id": "e-1"})),
        ("wrong_type", orjson.dumps({"event_id": "e-1", "label": None})),
        ("duplicate_event", None),  # e-1's label a second time, after the valid one below
        ("unknown_event", orjson.dumps({"event_id": "never-published", "label": True})),
    ]
    valid = orjson.dumps({"event_id": "e-1", "label": True})
    sequence = [raw for _, raw in bad_labels[:3]] + [valid, valid, bad_labels[4][1]]
    sequence.append(orjson.dumps({"event_id": "e-2", "label": False}))
    await produce(KAFKA_BOOTSTRAP, engine.settings.labels_topic, [(None, raw) for raw in sequence])

    dead = await consume_all(KAFKA_BOOTSTRAP, engine.settings.dlq_labels_topic, len(bad_labels))
    assert [dict(r.headers)["dlq.reason"].decode() for r in dead] == [reason for reason, _ in bad_labels]
    assert dead[3].value == valid
    engine.wait_until(lambda: engine.samples_learned() == 2, what="both valid labels learned")
