"""get_offline_features on a live engine returns, at any event time, what the online store held then."""

from __future__ import annotations

import json

import pytest

from streams.features import FeatureRegistry, apply_event
from tests.conftest import KAFKA_BOOTSTRAP
from tests.helpers import event
from tests.integration.kafka_client import produce

pytestmark = pytest.mark.integration

DEFINITIONS = [
    {"name": "amount_sum_30", "source": "amount", "agg": "sum", "window_seconds": 30},
    {"name": "amount_mean", "source": "amount", "agg": "mean"},
    {"name": "gap", "agg": "seconds_since_last"},
]


async def test_offline_rows_match_a_replay_of_the_online_logic(engine_factory, tmp_path):
    features_file = tmp_path / "features.json"
    features_file.write_text(json.dumps(DEFINITIONS))
    engine = engine_factory(FEATURES_FILE=features_file, OFFLINE_FLUSH_SECONDS=0.5).start()
    history = [(f"e-{i}", f"card-{i % 2}", 100.0 + 7 * i, float(i * 3 % 11)) for i in range(40)]
    await produce(
        KAFKA_BOOTSTRAP,
        engine.settings.events_topic,
        [(entity.encode(), event(eid, entity, {"amount": amount}, ts=ts)) for eid, entity, ts, amount in history],
    )
    engine.wait_until(
        lambda: engine.get("/models").json()["serving"]["predictions_awaiting_label"] == len(history), what="all events"
    )

    aggregates = FeatureRegistry(DEFINITIONS).aggregates
    states: dict[str, dict] = {}
    for _, entity, ts, amount in history:
        states[entity] = apply_event(states.get(entity), ts, {"amount": amount}, aggregates)
        rows = engine.get(f"/features/offline?entity_id=card-0&entity_id=card-1&ts={ts}").json()["rows"]
        for row in rows:
            expected = states.get(row["entity_id"])
            assert row["known"] is (expected is not None)
            if expected:
                assert (row["values"], row["updated_at"], row["version"]) == (
                    expected["values"],
                    expected["updated_at"],
                    expected["version"],
                )
    # At the end, offline at the last event time is what online serves now.
    online = engine.get("/features?entity_id=card-0&entity_id=card-1").json()["rows"]
    assert (
        engine.get(f"/features/offline?entity_id=card-0&entity_id=card-1&ts={history[-1][2]}").json()["rows"] == online
    )
