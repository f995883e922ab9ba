"""One contract suite over every model the factory builds."""

import itertools
import math
import pickle

import pytest
from river import datasets

from models.factory import MODELS, UnknownModelError, build_model
from models.online import OnlineModel
from tests.helpers import progressive_metrics, task_rows


def assert_sound(model, prediction):
    """What a user of the answer relies on: a regressor's finite number; a classifier's
    probabilities form a distribution whose most likely class is the predicted one, or are
    empty with no class at all (River's answer before it knows any class)."""
    if not model.is_classifier:
        assert prediction.proba is None
        assert isinstance(prediction.value, (int, float)) and math.isfinite(prediction.value), prediction
        return
    proba = prediction.proba
    assert proba is not None, prediction
    if not proba:
        assert prediction.value is None, prediction
        return
    assert all(0.0 <= p <= 1.0 for p in proba.values()), prediction
    assert math.fsum(proba.values()) == pytest.approx(1.0), prediction
    assert prediction.value in proba and proba[prediction.value] == max(proba.values()), prediction


@pytest.mark.parametrize("name", sorted(MODELS))
def test_predict_before_learn_is_sound_and_scored_as_river_scores_it(name):
    model = OnlineModel(name)
    rows = task_rows(model.task, 5)
    x, _ = rows[0]
    prediction = model.predict(x)
    assert_sound(model, prediction)
    assert model.predict(x) == prediction  # predicting learns nothing
    assert model.samples_learned == 0
    for x, y in rows:
        model.learn(x, y, model.predict(x))
    # The first answers, from a model that knew nothing, count as progressive_val_score
    # counts them (an empty answer is not scored).
    assert model.metric_values() == progressive_metrics(name, rows)
    assert model.samples_learned == len(rows)


@pytest.mark.parametrize("name", sorted(MODELS))
def test_pickle_round_trip_predicts_the_same(name):
    model = OnlineModel(name)
    rows = task_rows(model.task, 60)
    for x, y in rows[:-5]:
        model.learn(x, y, model.predict(x))
    clone = pickle.loads(pickle.dumps(model))
    for x, _ in rows[-5:]:
        assert clone.predict(x) == model.predict(x)
    assert clone.metric_values() == model.metric_values()


@pytest.mark.parametrize("name", sorted(MODELS))
def test_a_feature_that_emerges_midway_is_learned_and_used(name):
    rows = task_rows(MODELS[name].task, 300)
    emerging = next(iter(rows[0][0]))  # held back for the first half of the stream
    with_it, without_it = OnlineModel(name), OnlineModel(name)  # the twin never gets it
    differ = False
    for i, (x, y) in enumerate(rows):
        short = {k: v for k, v in x.items() if k != emerging}
        features = x if i >= len(rows) // 2 else short
        prediction, twin = with_it.predict(features), without_it.predict(short)
        assert_sound(with_it, prediction)
        differ = differ or prediction != twin
        with_it.learn(features, y, prediction)
        without_it.learn(short, y, twin)
    # Identical until it appears; from then on the model answers with it.
    assert differ, f"{name} answers the same whether or not it learned {emerging!r}"
    assert with_it.metric_values() != without_it.metric_values()
    assert with_it.samples_learned == len(rows)


@pytest.mark.parametrize("name", sorted(MODELS))
def test_missing_and_unknown_features_are_answered_without_learning_anything(name):
    model = OnlineModel(name)
    rows = task_rows(model.task, 30)
    for i, (x, y) in enumerate(rows):
        x = dict(list(x.items())[: 1 + i % len(x)])  # rows missing more or fewer features
        model.learn(x, y, model.predict(x))
    answers = [model.predict(x) for x, _ in rows]
    x, _ = rows[0]
    missing = dict(list(x.items())[: len(x) // 2])
    for features in (x, missing, {}, {**x, "never_seen_before": 1.0}):
        assert_sound(model, model.predict(features))
    # A feature the model never learned does not change its answer.
    assert model.predict({**x, "never_seen_before": 1.0}) == model.predict(x)
    # None of those answers taught the model anything.
    assert model.samples_learned == len(rows)
    assert [model.predict(x) for x, _ in rows] == answers


@pytest.mark.parametrize("name", sorted(MODELS))
def test_factory_builds_identical_fresh_models(name):
    rows = task_rows(MODELS[name].task, 40)
    a, b = build_model(name), build_model(name)
    for x, y in rows:
        a.learn_one(x, y)
        b.learn_one(x, y)
    x, _ = rows[0]
    assert a.predict_one(x) == b.predict_one(x)


def test_unknown_model_names_the_choices():
    with pytest.raises(UnknownModelError, match="logreg"):
        build_model("gpt")


@pytest.mark.parametrize("name", sorted(MODELS))
def test_past_max_features_new_names_are_left_out_and_the_rest_is_learned_exactly(name):
    # predict and learn leave out the same names by themselves: a copy that serves never grows.
    rows = task_rows(MODELS[name].task, 200)
    names = list(rows[0][0])
    limit = len(names) + 5  # room for the dataset's names and the first few junk ones
    bounded = OnlineModel(name, max_features=limit)
    reference = OnlineModel(name)  # never shown a name past the limit
    for i, (x, y) in enumerate(rows):
        flooded = {**x, f"user_{i}_clicks": 1.0, f"user_{i}_spend": 2.0}  # an id in the name, twice
        seen = {**x, **{f"user_{j}_{k}": v for j in range(3) for k, v in (("clicks", 1.0), ("spend", 2.0)) if j == i}}
        if i == 2:
            seen.pop("user_2_spend")  # the sixth junk name no longer fits
        admitted, _ = bounded.admit(flooded)  # as the stream does, once per event
        assert admitted == seen
        prediction = bounded.predict(admitted)
        assert prediction == reference.predict(seen)
        bounded.learn(admitted, y, prediction)
        reference.learn(seen, y, prediction)
    assert len(bounded.feature_names) == limit
    assert bounded.features_dropped == 2 * len(rows) - 5
    assert bounded.metric_values() == reference.metric_values()
    assert bounded.predict({"user_7_clicks": 5.0, **rows[0][0]}) == reference.predict(rows[0][0])
    # The River state knows only the admitted names: it stays the size of the reference's
    # (within 1%: pickles of equal trees differ by memo order), where 390 more names grow it.
    assert len(pickle.dumps(bounded.estimator)) <= 1.01 * len(pickle.dumps(reference.estimator))


def test_a_model_pickled_before_the_feature_limit_loads_with_the_default():
    model = OnlineModel("logreg")
    state = model.__dict__.copy()
    for added in ("max_features", "feature_names", "features_dropped"):
        del state[added]
    old = OnlineModel.__new__(OnlineModel)
    old.__setstate__(state)
    restored = pickle.loads(pickle.dumps(old))
    assert restored.max_features == 10_000 and restored.feature_names == set() and restored.features_dropped == 0
    assert restored.predict({"a": 1.0}) == model.predict({"a": 1.0})
    restored.learn({"a": 1.0}, True, restored.predict({"a": 1.0}))
    assert restored.metric_values()["log_loss"] == pytest.approx(-math.log(0.5))


def test_a_published_copy_leaves_out_names_it_does_not_know_without_learning_them():
    from streams.model_topic import ModelVersion, decode_version, encode_version

    model = OnlineModel("logreg")
    x = {"a": 1.0}
    model.learn(x, True, model.predict(x))
    copy = decode_version(encode_version(ModelVersion(model, 1, 1, 1, 0.0))).model
    assert copy.predict({"a": 1.0, "invented_by_a_client": 5.0}) == model.predict({"a": 1.0})
    assert copy.feature_names == {"a"} and model.grows_names


def test_a_version_sent_as_the_learner_s_checkpoint_reads_back_as_the_model():
    from models.pickling import dumps
    from streams.model_topic import ModelVersion, decode_version, encode_version

    model = OnlineModel("hoeffding")
    rows = list(itertools.islice(datasets.Phishing(), 200))
    for x, y in rows:
        model.learn(x, y, model.predict(x))
    version = ModelVersion(model, 3, 7, model.samples_learned, 0.0)
    copy = decode_version(encode_version(version, dumps(model)))
    assert (copy.version, copy.revision, copy.samples_learned) == (3, 7, 200)
    assert [copy.model.predict(x) for x, _ in rows] == [model.predict(x) for x, _ in rows]
    assert copy.model.metric_values() == model.metric_values()
    assert not copy.model.grows_names


@pytest.mark.parametrize("name", ["logreg", "softmax", "linreg"])
def test_metrics_and_drift_counts_are_river_s_through_a_pickle_and_a_checkpoint(name):
    # Midway, the model is read, pickled and restored from its checkpoint; its metrics stay
    # progressive_val_score's and its drift count that of River's ADWIN on its errors. The
    # labels turn over halfway, so that the detector has drifts to count.
    from river import drift

    rows = task_rows(OnlineModel(name).task, 400)
    if name == "logreg":
        rows = rows[:200] + [(x, not y) for x, y in rows[200:]]
    elif name == "linreg":
        rows = rows[:200] + [(x, y + 50.0) for x, y in rows[200:]]
    model = OnlineModel(name)
    detector, drifts = drift.ADWIN(), 0
    for i, (x, y) in enumerate(rows):
        prediction = model.predict(x)
        model.learn(x, y, prediction)
        if prediction.value is not None:
            detector.update(float(prediction.value != y) if model.is_classifier else abs(y - prediction.value))
            drifts += detector.drift_detected
        if i == 99:
            assert model.metric_values() == progressive_metrics(name, rows[:100])
        elif i == 199:
            model = pickle.loads(pickle.dumps(model))
        elif i == 299:
            model.restore(model.checkpoint())
    assert model.metric_values() == progressive_metrics(name, rows)
    assert model.drifts_detected == drifts
    if name != "softmax":
        assert drifts > 0
