"""One contract suite over every model the factory builds."""

import pickle

import pytest
from river import datasets

from models.factory import MODELS, Task, UnknownModelError, build_model
from models.online import OnlineModel

DATASET_FOR = {Task.BINARY: datasets.Phishing, Task.MULTICLASS: datasets.ImageSegments, Task.REGRESSION: datasets.TrumpApproval}


def sample(task, n=60):
    return list(DATASET_FOR[task]())[:n]


@pytest.mark.parametrize("name", sorted(MODELS))
def test_predict_before_learn_does_not_raise(name):
    model = OnlineModel(name)
    x, _ = sample(model.task, 1)[0]
    prediction = model.predict(x)
    if model.is_classifier:
        assert prediction.proba is not None


@pytest.mark.parametrize("name", sorted(MODELS))
def test_pickle_round_trip_predicts_the_same(name):
    model = OnlineModel(name)
    rows = sample(model.task)
    for x, y in rows[:-5]:
        model.learn(x, y, model.predict(x))
    clone = pickle.loads(pickle.dumps(model))
    for x, _ in rows[-5:]:
        assert clone.predict(x) == model.predict(x)
    assert clone.metric_values() == model.metric_values()


@pytest.mark.parametrize("name", sorted(MODELS))
def test_emerging_and_missing_features(name):
    model = OnlineModel(name)
    rows = sample(model.task, 30)
    for i, (x, y) in enumerate(rows):
        x = dict(list(x.items())[: 1 + i % len(x)])  # features appear over time
        model.learn(x, y, model.predict(x))
    x, _ = rows[0]
    model.predict({**x, "never_seen_before": 1.0})
    assert model.samples_learned == 30


@pytest.mark.parametrize("name", sorted(MODELS))
def test_factory_builds_identical_fresh_models(name):
    rows = sample(MODELS[name].task, 40)
    a, b = build_model(name), build_model(name)
    for x, y in rows:
        a.learn_one(x, y)
        b.learn_one(x, y)
    x, _ = rows[0]
    assert a.predict_one(x) == b.predict_one(x)


def test_unknown_model_names_the_choices():
    with pytest.raises(UnknownModelError, match="logreg"):
        build_model("gpt")
