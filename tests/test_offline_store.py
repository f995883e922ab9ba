"""Online and offline feature rows agree at every timestamp of a replay."""

import random

import orjson

from streams.batch_consumer import Record
from streams.feature_store import FeatureStore
from streams.offline_store import OfflineFeatureLog

DEFINITIONS = [
    {"name": "amount_sum_60", "source": "amount", "agg": "sum", "window_seconds": 60},
    {"name": "amount_max", "source": "amount", "agg": "max"},
    {"name": "n_30", "agg": "count", "window_seconds": 30},
    {"name": "gap", "agg": "seconds_since_last"},
]


def test_offline_as_of_equals_online_at_every_timestamp(tmp_path, pipeline_factory):
    pipeline = pipeline_factory(definitions=DEFINITIONS)
    offline = OfflineFeatureLog(tmp_path / "offline", flush_rows=37)  # several files, odd sizes
    pipeline.events.on_row = offline.append
    online = FeatureStore(pipeline.registry, pipeline.rows)
    entities = [f"card-{i}" for i in range(5)]
    rng = random.Random(7)
    seen = []  # (timestamp, online rows then)
    ts = 1000.0
    for i in range(300):
        ts += rng.choice([0.5, 1.0, 3.0, 10.0])
        entity = rng.choice(entities)
        event = {"event_id": str(i), "entity_id": entity, "ts": ts, "features": {"amount": rng.uniform(0, 100)}}
        pipeline.events.process(0, [Record("events", 0, i, None, orjson.dumps(event), (), None)])
        seen.append((ts, online.get_online_features(entities)))
    offline.flush()

    for ts, rows_then in seen:
        assert offline.get_offline_features(entities, ts) == rows_then
    before_anything = offline.get_offline_features(["card-0"], 999.0)[0]
    assert before_anything["known"] is False and before_anything["values"] == {}
