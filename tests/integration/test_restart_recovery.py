"""Online features survive a restart: the tables come back from their changelogs."""

from __future__ import annotations

import json

import pytest

from tests.conftest import KAFKA_BOOTSTRAP, unique_env
from tests.helpers import event, replay_features
from tests.integration.kafka_client import produce

pytestmark = pytest.mark.integration

DEFINITIONS = [
    {"name": "amount_sum_1h", "source": "amount", "agg": "sum", "window_seconds": 3600},
    {"name": "amount_max", "source": "amount", "agg": "max"},
    {"name": "events_1h", "agg": "count", "window_seconds": 3600},
    {"name": "gap", "agg": "seconds_since_last"},
]


def entity_rows(engine, ids):
    query = "&".join(f"entity_id={i}" for i in ids)
    return engine.get(f"/features?{query}").json()["rows"]


async def test_tables_recover_from_changelog_after_restart(engine_factory, tmp_path):
    features_file = tmp_path / "features.json"
    features_file.write_text(json.dumps(DEFINITIONS))
    env = unique_env(FEATURES_FILE=features_file)
    first = engine_factory(env).start()

    before_restart = [
        (f"card-{i % 3}".encode(), event(f"e-{i}", f"card-{i % 3}", {"amount": float(i)}, ts=1000.0 + 10 * i))
        for i in range(30)
    ]
    await produce(KAFKA_BOOTSTRAP, first.settings.events_topic, before_restart)
    first.wait_until(
        lambda: first.get("/models").json()["serving"]["predictions_awaiting_label"] == 30, what="30 predictions"
    )
    rows_before = entity_rows(first, ["card-0", "card-1", "card-2"])
    assert rows_before[0]["values"] == {"amount_sum_1h": 135.0, "amount_max": 27.0, "events_1h": 10.0, "gap": 30.0}
    assert first.stop() == 0

    # Mid-stream: more events arrive while the engine is down.
    await produce(
        KAFKA_BOOTSTRAP,
        first.settings.events_topic,
        [(b"card-0", event("e-30", "card-0", {"amount": 100.0}, ts=1300.0))],
    )
    second = engine_factory(env).start()
    second.wait_until(lambda: entity_rows(second, ["card-0"])[0]["version"] == 11, what="the new event applied")
    rows_after = entity_rows(second, ["card-0", "card-1", "card-2"])
    assert rows_after[1:] == rows_before[1:]
    assert rows_after[0]["values"] == {"amount_sum_1h": 235.0, "amount_max": 100.0, "events_1h": 11.0, "gap": 30.0}
    # Predictions still waiting for labels were recovered too (the count is a gauge, refreshed every second).
    second.wait_until(
        lambda: second.get("/models").json()["serving"]["predictions_awaiting_label"] == 31,
        timeout=10,
        what="31 predictions awaiting their label",
    )


async def test_with_four_partitions_every_entity_keeps_its_features_across_a_restart(engine_factory, tmp_path):
    # An entity's rows live in its events' partition, whatever the hash of the table key:
    # the worker that owns the events recovers exactly the rows it needs.
    features_file = tmp_path / "features.json"
    features_file.write_text(json.dumps(DEFINITIONS))
    env = unique_env(FEATURES_FILE=features_file, TOPIC_PARTITIONS=4)
    entities = [f"card-{i}" for i in range(40)]
    history = [
        {"event_id": f"e-{i}", "entity_id": entities[i % 40], "ts": 1000.0 + i, "features": {"amount": float(i % 17)}}
        for i in range(400)
    ]
    events = [(e["entity_id"].encode(), event(**e)) for e in history]
    first = engine_factory(env).start()
    await produce(KAFKA_BOOTSTRAP, first.settings.events_topic, events[:300])
    first.wait_until(lambda: sum(r["version"] for r in entity_rows(first, entities)) == 300, what="300 applied")
    assert first.stop() == 0
    await produce(KAFKA_BOOTSTRAP, first.settings.events_topic, events[300:])  # while it is down
    second = engine_factory(env).start()
    second.wait_until(lambda: sum(r["version"] for r in entity_rows(second, entities)) == 400, what="all 400 applied")

    _, expected = replay_features(DEFINITIONS, history)
    for row in entity_rows(second, entities):
        assert (row["values"], row["version"]) == (
            expected[row["entity_id"]]["values"],
            expected[row["entity_id"]]["version"],
        )
