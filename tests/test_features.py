import pytest

from streams.features import FeatureDefinitionError, FeatureRegistry, apply_event, model_features

REGISTRY = FeatureRegistry(
    [
        {"name": "amount", "kind": "raw", "min": 0},
        {"name": "n_10s", "agg": "count", "window_seconds": 10},
        {"name": "sum_10s", "agg": "sum", "source": "amount", "window_seconds": 10},
        {"name": "mean_all", "agg": "mean", "source": "amount"},
        {"name": "min_10s", "agg": "min", "source": "amount", "window_seconds": 10},
        {"name": "max_10s", "agg": "max", "source": "amount", "window_seconds": 10},
        {"name": "last", "agg": "last", "source": "amount"},
        {"name": "gap", "agg": "seconds_since_last"},
    ]
)


def replay(events):
    state = None
    for ts, features in events:
        state = apply_event(state, ts, features, REGISTRY.aggregates)
    return state


def test_windowed_aggregates_include_the_event_and_drop_old_points():
    state = replay([(0.0, {"amount": 4.0}), (5.0, {"amount": 2.0}), (12.0, {"amount": 9.0})])
    assert state["values"] == {
        "n_10s": 2.0,  # t=0 fell out of the 10 s window ending at 12
        "sum_10s": 11.0,
        "mean_all": 5.0,
        "min_10s": 2.0,
        "max_10s": 9.0,
        "last": 9.0,
        "gap": 7.0,
    }
    assert state["version"] == 3 and state["updated_at"] == 12.0


def test_first_event_has_no_gap_and_missing_source_gives_none():
    state = replay([(1.0, {"other": 1})])
    assert state["values"]["gap"] is None
    assert state["values"]["mean_all"] is None
    assert state["values"]["n_10s"] == 1.0


def test_state_is_json_round_trippable():
    import json

    state = replay([(0.0, {"amount": 1.5}), (1.0, {"amount": 2.5})])
    assert json.loads(json.dumps(state)) == state


def test_model_features_put_event_features_first_and_skip_missing_aggregates():
    joined = model_features({"b": 1, "a": 2}, {"agg": 3.0, "none": None})
    assert list(joined.items()) == [("b", 1), ("a", 2), ("agg", 3.0)]


def test_ranges_come_from_raw_definitions():
    assert REGISTRY.ranges == {"amount": (0, float("inf"))}


@pytest.mark.parametrize(
    "definition",
    [
        {"name": "x", "agg": "median", "source": "a"},
        {"name": "x", "agg": "sum"},
        {"name": "x", "agg": "count", "window_seconds": -1},
        {"name": "", "kind": "raw"},
        {"name": "x", "kind": "raw", "min": "low"},
        {"name": "x", "kind": "raw", "colour": "red"},
    ],
)
def test_bad_definitions_are_refused(definition):
    with pytest.raises(FeatureDefinitionError):
        FeatureRegistry([definition])


def test_redefining_a_feature_differently_is_refused():
    registry = FeatureRegistry([{"name": "x", "agg": "count"}])
    registry.register({"name": "x", "agg": "count"})  # same definition: fine
    with pytest.raises(FeatureDefinitionError):
        registry.register({"name": "x", "agg": "count", "window_seconds": 5})


def test_a_definition_built_in_code_is_checked_like_one_read_from_json():
    from streams.features import FeatureDefinition, FeatureDefinitionError, FeatureRegistry

    with pytest.raises(FeatureDefinitionError):
        FeatureRegistry().register(FeatureDefinition(name="broken", kind="aggregate", agg="median"))


def test_the_feature_store_registers_features_and_answers_online_rows():
    from streams.feature_store import FeatureStore

    registry = FeatureRegistry()
    store = FeatureStore(registry, {"u1": apply_event(None, 5.0, {"amount": 2.0}, [])})
    definition = store.register_feature({"name": "amount", "kind": "raw", "min": 0, "max": 10})
    assert registry.ranges == {"amount": (0, 10)} and definition.name == "amount"
    with pytest.raises(FeatureDefinitionError):
        store.register_feature({"name": "amount", "kind": "raw", "min": 0, "max": 99})  # registered differently
    assert store.get_online_features(["u1", "nobody"]) == [
        {"entity_id": "u1", "known": True, "values": {}, "updated_at": 5.0, "version": 1},
        {"entity_id": "nobody", "known": False, "values": {}, "updated_at": None, "version": 0},
    ]
