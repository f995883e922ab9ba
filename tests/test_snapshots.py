import pickle

import pytest
from river import datasets

from models.snapshots import SnapshotStore
from tests.helpers import trained


def test_round_trip_keeps_the_model_exactly(tmp_path):
    rows = list(datasets.Phishing())
    model = trained(rows[:300], "arf")
    store = SnapshotStore(tmp_path)
    store.write({"samples": model.samples_learned}, {"model": model})
    restored = store.latest().state["model"]
    for x, y in rows[300:400]:  # both go on learning identically (ARF's random state too)
        for m in (model, restored):
            m.learn(x, y, m.predict(x))
    assert restored.metric_values() == model.metric_values()
    x = rows[500][0]
    assert restored.predict(x) == model.predict(x)


def test_truncated_and_corrupt_snapshots_are_skipped_for_the_previous_one(tmp_path):
    store = SnapshotStore(tmp_path, retention=5)
    store.write({"n": 1}, {"value": 1})
    good = store.paths()[0]
    store.write({"n": 2}, {"value": 2})
    truncated = store.paths()[0]
    truncated.write_bytes(truncated.read_bytes()[:-10])
    assert store.latest().meta == {"n": 1}
    store.write({"n": 3}, {"value": 3})
    corrupt = store.paths()[0]
    data = bytearray(corrupt.read_bytes())
    data[-1] ^= 0xFF
    corrupt.write_bytes(bytes(data))
    (tmp_path / "snapshot-99999999999999999999.bin").write_bytes(b"garbage")
    assert store.latest().path == good


def test_retention_prunes_the_oldest(tmp_path):
    store = SnapshotStore(tmp_path, retention=2)
    for n in range(4):
        store.write({"n": n}, {})
    assert [s.meta["n"] for s in store.valid()] == [3, 2]


def test_no_temporary_files_are_left(tmp_path):
    store = SnapshotStore(tmp_path)
    store.write({}, {"x": pickle.dumps(1)})
    assert [p.name for p in tmp_path.iterdir() if p.name.startswith(".")] == []


def test_listing_reads_the_json_sidecars_with_offsets(tmp_path):
    store = SnapshotStore(tmp_path, retention=2)
    for n in range(3):
        store.write({"n": n, "offsets": {("events", 0): 10 * n}}, {"big": b"x" * 100})
    listing = store.listing()
    assert [e["n"] for e in listing] == [2, 1]
    assert listing[0]["offsets"] == {"events:0": 20} and listing[0]["bytes"] > 100
    assert len(list(tmp_path.glob("*.json"))) == 2  # pruned with their snapshots


def test_a_snapshot_of_another_engine_river_or_feature_set_is_refused_with_the_reason(tmp_path):
    import river

    from engine.learning import SnapshotRefused, check_snapshot
    from engine.settings import Settings
    from streams.features import FeatureRegistry

    settings = Settings.from_env({"APP_ID": "a", "MODEL": "logreg"})
    features = FeatureRegistry([{"name": "n", "agg": "count"}])
    good = {
        "app_id": "a",
        "examples_topic": "a-examples",
        "model_name": "logreg",
        "river_version": river.__version__,
        "feature_definitions": [vars(d) for d in features.definitions],
    }
    store = SnapshotStore(tmp_path)
    store.write(good, {})
    check_snapshot(store.latest(), settings, features)
    for key, value in [("app_id", "b"), ("model_name", "arf"), ("river_version", "0.1"), ("feature_definitions", [])]:
        store.write({**good, key: value}, {})
        with pytest.raises(SnapshotRefused, match=key):
            check_snapshot(store.latest(), settings, features)
