"""Several named models on one stream, without Kafka: the MODELS setting, what labels must
be, and each model learning its own target exactly as River's progressive_val_score."""

from __future__ import annotations

import tempfile

import orjson
import pytest

from engine.learning import LearningService
from engine.settings import Settings, SettingsError
from engine.worker_modes import EmbeddedLearner
from models.examples import Example
from models.factory import Task
from models.learner import Learner
from models.named import MISSING, NamedModel, parse_models
from models.online import OnlineModel
from streams.batch_consumer import Record
from streams.dead_letters import DeadLetterReason
from streams.events import EventProcessor, ModelLane
from streams.features import FeatureRegistry
from streams.join import Join
from streams.records import Contract, InvalidMessage, LabelTargets, label_rule, parse_label
from tests.conftest import MemoryTable
from tests.helpers import (
    NAMED_FACTORIES,
    NAMED_MODELS,
    event,
    named_labels,
    progressive_metrics,
    rows_for,
    task_rows,
)


def test_models_are_declared_by_name_factory_and_target():
    models = parse_models("fraud=logreg@is_fraud, amount = linreg@amount,plain=hoeffding", "logreg")
    assert models == (
        NamedModel("fraud", "logreg", "is_fraud", scoped=True),
        NamedModel("amount", "linreg", "amount", scoped=True),
        NamedModel("plain", "hoeffding", None, scoped=True),
    )
    # MODEL alone: one model named after its factory, with the single-model topics and keys.
    assert parse_models("", "hoeffding") == (NamedModel("hoeffding", "hoeffding"),)


@pytest.mark.parametrize(
    ("declared", "says"),
    [
        ("fraud", "not name=factory"),
        ("fraud=", "not name=factory"),
        ("a/b=logreg", "not name=factory"),
        ("a=logreg@", "not name=factory"),
        ("a=logreg,a=linreg", "names 'a' twice"),
        ("a=logreg,A=linreg", "names 'a' and 'A': names differ by more than case"),
        ("a=logreg@is fraud", "not name=factory"),
        ("a=nope", "unknown model 'nope'"),
    ],
)
def test_a_bad_declaration_is_refused_at_start_with_what_is_wrong(declared, says):
    with pytest.raises(SettingsError, match=says):
        Settings.from_env({"MODELS": declared})


def test_each_named_model_has_its_own_topics_keys_and_folders(tmp_path):
    settings = Settings.from_env({"MODELS": NAMED_MODELS, "STATE_DIR": str(tmp_path), "FALLBACK_MODEL": "hoeffding"})
    assert settings.model_names == ["clf", "tree", "score"] and settings.model.name == "clf"
    owns = {m.name: settings.for_model(m) for m in settings.models}
    assert {o.examples_topic for o in owns.values()} == {
        "rtml-examples-clf.is_phishing",
        "rtml-examples-tree.is_phishing",
        "rtml-examples-score.score",
    }
    assert len({o.snapshot_path for o in owns.values()}) == 3 and len({o.training_log_path for o in owns.values()}) == 3
    assert owns["score"].snapshot_path == tmp_path / "snapshots" / "models" / "score.score"
    assert owns["score"].model_key_prefix == b"score/" and owns["score"].control_group == "rtml-control-score"
    # Another target is another examples log: the old one's examples would teach the wrong target.
    moved = Settings.from_env({"MODELS": "score=linreg@amount", "STATE_DIR": str(tmp_path)})
    assert moved.for_model(moved.model).examples_topic == "rtml-examples-score.amount"
    assert owns["score"].model_name == "linreg"
    # A fallback only for the models of its task.
    assert owns["clf"].fallback_model == "hoeffding" and owns["score"].fallback_model == ""
    # Without MODELS nothing moves: an engine upgraded keeps its topics and snapshots.
    single = Settings.from_env({"STATE_DIR": str(tmp_path)})
    assert single.examples_topic == "rtml-examples" and single.model_key_prefix == b""
    assert single.snapshot_path == tmp_path / "snapshots"


def test_learn_model_names_one_of_the_models():
    settings = Settings.from_env({"MODELS": NAMED_MODELS, "LEARN_MODEL": "tree"})
    assert [m.name for m in settings.learned_models()] == ["tree"]
    with pytest.raises(SettingsError, match="LEARN_MODEL"):
        Settings.from_env({"MODELS": NAMED_MODELS, "LEARN_MODEL": "forest"})
    with pytest.raises(SettingsError, match="name the one to learn with LEARN_MODEL"):
        Settings.from_env({"MODELS": NAMED_MODELS}).learned_models()


def test_a_model_learns_its_target_and_nothing_from_a_label_without_it():
    clf, plain = NamedModel("clf", "logreg", "is_fraud", True), NamedModel("plain", "logreg", None, True)
    assert clf.label_of({"is_fraud": True, "amount": 3.0}) is True
    assert clf.label_of({"amount": 3.0}) is MISSING and clf.label_of(True) is MISSING
    assert plain.label_of(True) is True and plain.label_of({"is_fraud": True}) is MISSING


def test_labels_must_fit_each_target_s_model():
    rule = label_rule(Settings.from_env({"MODELS": NAMED_MODELS}).models)
    assert rule == LabelTargets((), {"is_phishing": (Task.BINARY, Task.BINARY), "score": (Task.REGRESSION,)})

    def label(value):
        return parse_label(orjson.dumps({"event_id": "e", "label": value}), 10_000, task=rule).label

    assert label({"is_phishing": 1, "score": 2.5, "other": "x"}) == {"is_phishing": 1, "score": 2.5}
    assert label({"score": 2.5, "is_phishing": None}) == {"score": 2.5}  # null: that target is missing
    refusals = {
        "a scalar": (True, "label", "must be an object of target -> value"),
        "no target": ({"other": 1}, "label", "none of the targets"),
        "wrong type": ({"is_phishing": "maybe"}, "label.is_phishing", "does not fit a binary model"),
        "not finite": ({"score": 1e300}, "label.score", "out_of_range"),
    }
    for case, (value, field, says) in refusals.items():
        with pytest.raises(InvalidMessage) as refused:
            label(value)
        assert refused.value.field == field and says in f"{refused.value.reason.value} {refused.value.detail}", case
    # One model without a target, MODEL alone: its task, as before named models.
    assert label_rule(Settings.from_env({}).models) is Task.BINARY


@pytest.mark.parametrize("declared", ["a=logreg@y,b=linreg@y,m=softmax@y", "m=softmax@y,b=linreg@y,a=logreg@y"])
def test_each_model_learns_a_shared_target_as_its_task_reads_it_whatever_the_order(declared):
    models = {m.name: m for m in Settings.from_env({"MODELS": declared}).models}
    rule = label_rule(tuple(models.values()))
    fitted = parse_label(orjson.dumps({"event_id": "e", "label": {"y": 1}}), 10_000, task=rule)
    # The binary model learns 1 as true; the regressor and the multiclass model learn 1.
    assert {name: m.label_of(fitted.label) for name, m in models.items()} == {"a": True, "b": 1, "m": 1}
    assert type(models["b"].label_of(fitted.label)) is int


class NamedPipeline:
    """The embedded default's stream logic for several named models, without Kafka."""

    def __init__(self, declared: str) -> None:
        """`declared`: MODELS; empty: the single model of an engine without MODELS (logreg)."""
        settings = Settings.from_env({"MODELS": declared, "REDIS_URL": "", "STATE_DIR": tempfile.mkdtemp()})
        registry = FeatureRegistry()
        self.learners = {}
        lanes = []
        for named in settings.models:
            learner = Learner(OnlineModel(named.factory))
            self.learners[named.name] = learner
            mode = EmbeddedLearner(LearningService(settings.for_model(named), learner, registry))
            lanes.append(ModelLane(named, mode))
        contract = Contract(task=label_rule(settings.models))
        self.events = EventProcessor(contract, registry, MemoryTable(), lanes, fresh_predictions=True)
        self.join = Join(contract, MemoryTable(), lanes)

    def end_batches(self) -> None:
        for learner in self.learners.values():
            learner.end_batch()


def test_three_models_on_two_targets_each_match_progressive_val_score():
    rows = named_labels(task_rows(Task.BINARY, 400))
    pipeline = NamedPipeline(NAMED_MODELS)
    events = [event(i, f"e{i % 20}", x, label=y) for i, (x, y) in enumerate(rows)]
    outcome = pipeline.events.process(0, [Record("events", 0, i, None, v, (), None) for i, v in enumerate(events)])
    pipeline.end_batches()
    assert outcome.dead_letters == [] and outcome.predictions == []
    for name, learner in pipeline.learners.items():
        own = rows_for(name, rows)
        assert learner.model.samples_learned == len(own)
        assert learner.model.metric_values() == progressive_metrics(NAMED_FACTORIES[name], own), name
    assert outcome.missing_targets == {"score": len(rows) - len(rows_for("score", rows))}


def test_labels_that_come_later_teach_each_model_its_target_from_its_own_prediction():
    rows = named_labels(task_rows(Task.BINARY, 200))
    pipeline = NamedPipeline(NAMED_MODELS)
    events = [event(i, f"e{i % 20}", x) for i, (x, _) in enumerate(rows)]
    outcome = pipeline.events.process(0, [Record("events", 0, i, None, v, (), None) for i, v in enumerate(events)])
    # One prediction record per event, with every model's prediction.
    assert len(outcome.predictions) == len(rows)
    assert set(outcome.predictions[0][1]["models"]) == {"clf", "tree", "score"}
    predictions = [
        Record("predictions", 0, i, None, orjson.dumps(r), (), None) for i, (_, r) in enumerate(outcome.predictions)
    ]
    pipeline.join.on_predictions(0, predictions)
    labels = [orjson.dumps({"event_id": str(i), "label": y}) for i, (_, y) in enumerate(rows)]
    joined = pipeline.join.on_labels(0, [Record("labels", 0, i, None, v, (), None) for i, v in enumerate(labels)])
    pipeline.end_batches()
    assert joined.dead_letters == []
    assert joined.missing_targets == {"score": len(rows) - len(rows_for("score", rows))}
    for name, learner in pipeline.learners.items():
        own = rows_for(name, rows)
        # Every prediction was made before any label: River's delay=len(rows).
        assert learner.model.metric_values() == progressive_metrics(NAMED_FACTORIES[name], own, delay=len(own)), name


def test_an_event_whose_label_fits_no_target_is_dead_lettered_whole():
    pipeline = NamedPipeline(NAMED_MODELS)
    bad = [event(1, "e", {"a": 1.0}, label=True), event(2, "e", {"a": 1.0}, label={"is_phishing": "maybe"})]
    outcome = pipeline.events.process(0, [Record("events", 0, i, None, v, (), None) for i, v in enumerate(bad)])
    assert [letter.reason for letter in outcome.dead_letters] == [DeadLetterReason.WRONG_TYPE] * 2
    assert outcome.processed == 0 and all(learner.model.samples_learned == 0 for learner in pipeline.learners.values())


def test_predictions_of_several_models_served_for_one_event_each_teach_their_model():
    pipeline = NamedPipeline(NAMED_MODELS)
    learned = {name: [] for name in NAMED_FACTORIES}
    for lane in pipeline.join.lanes:
        lane.models.learn = lambda example, name=lane.name: learned[name].append(example) or True

    def served(name, value, features, at):
        entry = {"prediction": {"value": value, "proba": None}, "model_version": 1, "model_samples": 3}
        return {
            "event_id": "o-1",
            "entity_id": "card-7",
            "ts": at,
            "features": features,
            "models": {name: entry},
            "predicted_at": at,
            "served": {"cached": None, "fallback": None, "rollout": None},
        }

    records = [
        served("clf", True, {"a": 1.0}, 10.0),
        served("score", 4.5, {"a": 2.0}, 11.0),
        served("clf", False, {}, 12.0),
    ]
    pipeline.join.on_predictions(0, [Record("p", 0, i, None, orjson.dumps(r), (), None) for i, r in enumerate(records)])
    label = orjson.dumps({"event_id": "o-1", "label": {"is_phishing": False, "score": 3.0}})
    pipeline.join.on_labels(0, [Record("labels", 0, 0, None, label, (), None)])
    [clf], [score] = learned["clf"], learned["score"]
    # Each model's first prediction, with the features it saw then, learned as served.
    assert (clf.prediction.value, clf.features, clf.label, clf.served) == (True, {"a": 1.0}, False, True)
    assert (score.prediction.value, score.features, score.label, score.served) == (4.5, {"a": 2.0}, 3.0, True)
    assert learned["tree"] == []  # it answered no one for this event


def test_the_single_model_of_an_engine_without_models_writes_its_records_as_before():
    pipeline = NamedPipeline("")
    outcome = pipeline.events.process(0, [Record("events", 0, 0, None, event(1, "e", {"a": 1.0}), (), None)])
    [(_, record)] = outcome.predictions
    assert "models" not in record and record["prediction"] == {"value": False, "proba": [[False, 0.5], [True, 0.5]]}
    assert record["model_version"] == 1 and record["features"] == {"a": 1.0}


def test_an_example_refused_by_one_model_is_dead_lettered_once_naming_the_models(tmp_path):
    from engine.stream_worker import StreamWorker
    from engine.worker_modes import LearnerApart
    from models.guard import Refusal
    from models.learner import BatchOutcome
    from models.online import Prediction

    settings = Settings.from_env({"MODELS": NAMED_MODELS, "STATE_DIR": str(tmp_path), "REDIS_URL": ""})
    worker = StreamWorker(
        settings, FeatureRegistry(), [(m, LearnerApart(settings.for_model(m))) for m in settings.models]
    )
    example = Example("e1", 1.0, {"a": 1.0}, True, Prediction(True), 1, ("events", 0, 7))
    other = Example("e2", 1.0, {"a": 1.0}, True, Prediction(True), 1, ("events", 0, 8))
    outcomes = [
        BatchOutcome(refused=[Refusal(example, "model_diverged", "the model answers nan")]),
        BatchOutcome(),
        BatchOutcome(refused=[Refusal(example, "model_diverged", "x"), Refusal(other, "model_error", "y")]),
    ]
    refused = {r.example.source: r.detail for r in worker._refusals(outcomes)}
    assert refused == {
        ("events", 0, 7): "model clf: the model answers nan; model score: x",
        ("events", 0, 8): "model score: y",
    }


def test_a_learner_apart_names_its_model_in_the_dead_letters_of_what_it_refused():
    from engine.dead_letter_sink import refused_letter
    from models.guard import Refusal
    from models.online import Prediction

    example = Example("e1", 1.0, {"a": 1.0}, True, Prediction(None), 0, ("events", 0, 7), learner_predicts=True)
    refusal = Refusal(example, "model_error", "predicting raised ValueError: x")
    assert refused_letter(refusal, "clf").detail == "model clf: predicting raised ValueError: x"
    assert refused_letter(refusal).detail == "predicting raised ValueError: x"  # the only model: as before
