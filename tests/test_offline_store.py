"""Online and offline feature rows agree at every timestamp of a replay."""

import random

import orjson
import pyarrow as pa

from streams.batch_consumer import Record
from streams.feature_store import FeatureStore
from streams.offline_store import OfflineFeatureLog
from tests.helpers import event

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
        value = event(i, entity, {"amount": rng.uniform(0, 100)}, ts=ts)
        pipeline.events.process(0, [Record("events", 0, i, None, value, (), None)])
        seen.append((ts, online.get_online_features(entities)))
    offline.flush()

    for ts, rows_then in seen:
        assert offline.get_offline_features(entities, ts) == rows_then
    before_anything = offline.get_offline_features(["card-0"], 999.0)[0]
    assert before_anything["known"] is False and before_anything["values"] == {}


# -- the as-of query against a plain reference, over merged and unmerged files ------------------


def reference_as_of(updates, ids, t):
    """The definition: per entity, the greatest (updated_at, version) at or before t."""
    rows = []
    for entity_id in ids:
        mine = [u for u in updates if u[0] == entity_id and u[1] <= t]
        if mine:
            _, updated_at, version, values = max(mine, key=lambda u: (u[1], u[2]))
            rows.append(
                {"entity_id": entity_id, "known": True, "values": values, "updated_at": updated_at, "version": version}
            )
        else:
            rows.append({"entity_id": entity_id, "known": False, "values": {}, "updated_at": None, "version": 0})
    return rows


def random_updates(rng, n, entities, start=0.0):
    """Updates as a stream makes them: per entity, versions count up; times mostly rise, with
    ties (one event time, several updates) and some late arrivals (an earlier time, later)."""
    versions = dict.fromkeys(entities, 0)
    ts = start
    updates = []
    for _ in range(n):
        ts += rng.choice([0.0, 0.5, 1.0, 2.0])
        entity = rng.choice(entities)
        versions[entity] += 1
        at = ts - rng.choice([0.0, 0.0, 0.0, 3.0])
        updates.append((entity, at, versions[entity], {"n": versions[entity], "x": rng.random()}))
    return updates


def write_updates(log, updates):
    """Appends updates as the stream does (one entity state each), then writes them."""
    for entity_id, updated_at, version, values in updates:
        log.append(entity_id, {"updated_at": updated_at, "version": version, "values": values})
    log.write(log.take())


def test_as_of_matches_the_definition_before_and_after_merges(tmp_path):
    rng = random.Random(11)
    entities = [f"e{i}" for i in range(40)]
    updates = random_updates(rng, 2000, entities)
    log = OfflineFeatureLog(tmp_path, flush_rows=50, fanout=3, row_group_rows=20)  # many row groups and merges
    for start in range(0, len(updates), 120):
        write_updates(log, updates[start : start + 120])
    assert len(log.files()) < 12  # 40 flushes, merged
    asked = [*entities[:7], "never-seen", "e3"]  # an unknown id, and one asked twice
    for t in [-1.0, updates[0][1], 10.0, 777.7, updates[-1][1], 1e12] + [
        rng.uniform(0, updates[-1][1]) for _ in range(25)
    ]:
        assert log.get_offline_features(asked, t) == reference_as_of(updates, asked, t)
    assert log.get_offline_features([], 100.0) == []


def test_a_reader_of_a_folder_that_does_not_exist_knows_nothing(tmp_path):
    reader = OfflineFeatureLog(tmp_path / "absent", read_only=True)
    assert reader.get_offline_features(["a"], 1.0)[0]["known"] is False
    assert not (tmp_path / "absent").exists()


def test_a_log_written_before_merging_existed_is_read_and_taken_over(tmp_path):
    from models.parquet_log import ParquetLog
    from streams.offline_store import SCHEMA

    rng = random.Random(5)
    entities = [f"e{i}" for i in range(10)]
    updates = random_updates(rng, 400, entities)
    legacy = ParquetLog(tmp_path, SCHEMA, "features")  # unsorted files, one row group each
    for start in range(0, 300, 37):
        rows = [(e, u, v, orjson.dumps(values).decode()) for e, u, v, values in updates[start : min(start + 37, 300)]]
        legacy.write(legacy.pending(pa.table([list(column) for column in zip(*rows)], schema=SCHEMA)))
    log = OfflineFeatureLog(tmp_path, fanout=4)
    times = [rng.uniform(0, updates[-1][1]) for _ in range(15)]
    for t in times:
        assert log.get_offline_features(entities, t) == reference_as_of(updates[:300], entities, t)
    write_updates(log, updates[300:])
    assert len(log.files()) < 9  # the old files adopted and merged
    for t in times:
        assert log.get_offline_features(entities, t) == reference_as_of(updates, entities, t)
