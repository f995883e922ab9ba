"""The learner without Kafka: poisoned examples are undone exactly, duplicates learned once."""

import itertools
import pickle

import orjson
import pytest
from river import datasets

from models.errors import ModelError
from models.examples import Example
from models.learner import Learner
from models.online import OnlineModel, Prediction
from tests.helpers import progressive_metrics

POISON = (1e308, -1e308, 1e200)


def phishing(n=400):
    return list(itertools.islice(datasets.Phishing(), n))


def example(i, x, y, prediction, topic="events"):
    return Example(f"e-{i}", float(i), x, y, prediction, 1, (topic, 0, i), fresh=True)


def stream(learner, rows, batch=25):
    """What the engine does per event: predict, learn, end the batch every `batch` events.
    Returns the events refused: (event id, why) for model errors and divergences."""
    refused = []
    for i, (x, y) in enumerate(rows):
        try:
            prediction = learner.predict(x)
        except ModelError as exc:
            refused.append((f"e-{i}", f"model_error: {exc}"))
            continue
        learner.learn(example(i, x, y, prediction))
        if i % batch == batch - 1:
            refused += [(r.example.event_id, f"{r.reason}: {r.detail}") for r in learner.end_batch().refused]
    return refused + [(r.example.event_id, f"{r.reason}: {r.detail}") for r in learner.end_batch().refused]


@pytest.mark.parametrize("model_name", ["logreg", "hoeffding", "softmax"])
@pytest.mark.parametrize("value", POISON)
def test_a_poisoning_example_is_undone_and_reported(model_name, value):
    rows = phishing()
    poisoned = [(dict(x, https=value) if i in (100, 250) else x, y) for i, (x, y) in enumerate(rows)]
    learner = Learner(OnlineModel(model_name), min_interval=60)

    refused = stream(learner, poisoned)

    # Whether the model cannot even predict on it (a tree overflows) or learning it breaks
    # the model (a scaler's variance overflows), the offending event is refused with a reason.
    assert sorted(event_id for event_id, _ in refused) == ["e-100", "e-250"]
    assert all(why.startswith(("model_error: ", "model_diverged: ")) for _, why in refused)
    clean = [row for i, row in enumerate(rows) if i not in (100, 250)]
    assert learner.model.metric_values() == progressive_metrics(model_name, clean)
    assert learner.model.samples_learned == len(clean)


def test_tiny_values_are_not_mistaken_for_poison():
    rows = [(dict(x, https=1e-320) if i % 7 == 0 else x, y) for i, (x, y) in enumerate(phishing(200))]
    learner = Learner(OnlineModel("logreg"), min_interval=50)
    assert stream(learner, rows) == []
    assert learner.model.metric_values() == progressive_metrics("logreg", rows)


def test_an_input_the_model_cannot_take_is_a_model_error_and_changes_nothing():
    learner = Learner(OnlineModel("logreg"))
    rows = phishing(50)
    stream(learner, rows)
    before = learner.model.checkpoint()
    with pytest.raises(ModelError, match="predicting raised"):
        learner.predict({**rows[0][0], "https": "yes"})
    assert learner.model.checkpoint() == before


def test_an_example_is_learned_once_however_often_it_comes():
    learner = Learner(OnlineModel("logreg"))
    ((x, y),) = phishing(1)
    first = example(0, x, y, learner.predict(x))
    assert learner.learn(first)
    assert not learner.learn(first)  # same source offset
    again = Example("e-0", 0.0, x, y, first.prediction, 1, ("labels", 3, 99))
    assert not learner.learn(again)  # same event id through another path
    assert learner.model.samples_learned == 1
    assert learner.end_batch().duplicates == 2


def test_checkpoints_get_rarer_when_they_cost_more_than_their_budget():
    ticks = itertools.count()
    # Every clock reading advances 1 s: pickling "takes" 1 s, an example "takes" 1 s apart.
    learner = Learner(OnlineModel("logreg"), min_interval=10, checkpoint_budget=0.01, clock=lambda: float(next(ticks)))
    for i, (x, y) in enumerate(phishing(30)):
        learner.learn(example(i, x, y, learner.predict(x)))
    assert learner.checkpoint_interval > 10


def test_snapshot_state_keeps_the_duplicate_filters():
    learner = Learner(OnlineModel("logreg"))
    ((x, y),) = phishing(1)
    learner.learn(example(0, x, y, learner.predict(x)))
    restored = Learner(OnlineModel("logreg"))
    restored.restore_state(learner.state())
    assert restored.has_learned(example(0, x, y, None))


def test_the_recent_ids_survive_a_snapshot_in_their_order():
    # The same event ids read back from another topic: only the id filter knows them. Its
    # window keeps the most recent ids, so the order decides which one goes first.
    rows = phishing(5)
    learner = Learner(OnlineModel("logreg"), dedupe_window=3)
    for i, (x, y) in enumerate(rows):
        learner.learn(example(i, x, y, learner.predict(x)))
    older = [
        {**learner.state(), "recent_ids": orjson.dumps(dict.fromkeys(["e-2", "e-3", "e-4"]))},  # before 2026-12-06
        {**learner.state(), "recent_ids": ["e-2", "e-3", "e-4"]},  # before the ids were JSON
    ]
    for state in (learner.state(), *older):
        restored = Learner(OnlineModel("logreg"), dedupe_window=3)
        restored.restore_state(pickle.loads(pickle.dumps(state)))
        again = [example(i, x, y, None, topic="replayed") for i, (x, y) in enumerate(rows)]
        assert [restored.has_learned(e) for e in again] == [False, False, True, True, True]
        x, y = rows[0]
        restored.learn(example(9, x, y, restored.predict(x), topic="other"))
        assert [restored.has_learned(e) for e in again] == [False, False, False, True, True]


def test_a_poison_that_shows_only_in_the_state_is_caught_at_the_batch_end():
    # A scaler takes 1e308 with a finite answer and an infinite variance; only the next
    # example turns the weights to NaN. The state check catches it before that.
    rows = phishing(60)
    poisoned = [(dict(x, https=1e308) if i == 40 else x, y) for i, (x, y) in enumerate(rows)]
    learner = Learner(OnlineModel("logreg"))
    for i, (x, y) in enumerate(poisoned[:41]):
        learner.learn(example(i, x, y, learner.predict(x)))
    outcome = learner.end_batch()
    assert [(r.example.event_id, r.reason, r.detail.split(":")[0]) for r in outcome.refused] == [
        ("e-40", "model_diverged", "the model's state holds a non-finite number")
    ]
    assert [e.event_id for e in outcome.learned] == [f"e-{i}" for i in range(40)]


def test_an_example_the_model_cannot_learn_is_a_model_error_and_leaves_no_trace():
    rows = phishing(30)
    learner = Learner(OnlineModel("logreg"))
    for i, (x, y) in enumerate(rows):
        features = dict(x, country="FR") if i == 20 else x  # a string into the scaler raises in learn_one
        learner.learn(example(i, features, y, learner.predict(features)))
    outcome = learner.end_batch()
    assert [(r.example.event_id, r.reason) for r in outcome.refused] == [("e-20", "model_error")]
    clean = [row for i, row in enumerate(rows) if i != 20]
    assert learner.model.metric_values() == progressive_metrics("logreg", clean)


def test_two_culprits_in_one_heal_window_are_both_refused_and_neither_is_learned():
    # Both poisons show only in the model's state, and the batch ends after both: one heal
    # finds them both. The second comes back from the heal as a copy, its prediction made
    # again by the healed model; it must be matched as the example it copies.
    rows = phishing(60)
    culprits = {20: 1e308, 40: 1e200}
    poisoned = [(dict(x, https=culprits[i]) if i in culprits else x, y) for i, (x, y) in enumerate(rows)]
    learner = Learner(OnlineModel("logreg"))
    shadow = OnlineModel("logreg")  # predicts what the model answers with the culprits left out
    for i, (x, y) in enumerate(poisoned):
        prediction = shadow.predict(x)
        learner.learn(example(i, x, y, prediction))
        if i not in culprits:
            shadow.learn(x, y, prediction)
    outcome = learner.end_batch()

    refused = [r.example.event_id for r in outcome.refused]
    learned = [e.event_id for e in outcome.learned]
    assert refused == ["e-20", "e-40"]
    assert learned == [f"e-{i}" for i in range(60) if i not in culprits]
    clean = [row for i, row in enumerate(rows) if i not in culprits]
    assert learner.model.metric_values() == progressive_metrics("logreg", clean)


def test_a_served_example_is_learned_and_scored_apart_from_the_stream():
    rows = phishing(40)
    learner = Learner(OnlineModel("logreg"))
    for i, (x, y) in enumerate(rows[:30]):
        learner.learn(example(i, x, y, learner.predict(x)))
    stream_metrics = learner.model.metric_values()
    served = []
    for i, (x, y) in enumerate(rows[30:], start=30):
        answered = learner.predict(x)
        served.append((y, answered))
        learner.learn(
            Example(f"s-{i}", float(i), x, y, answered, 1, ("predictions", 0, i), "labels_topic", served=True)
        )
    # The stream's metrics are those of the stream alone; what clients got is scored apart.
    assert learner.model.metric_values() == stream_metrics
    assert learner.model.served_samples == 10 and learner.model.samples_learned == 40
    accuracy = sum(answer.value == y for y, answer in served) / len(served)
    assert learner.model.served_metric_values()["accuracy"] == accuracy
    # And the model learned them: it is the model that learned all 40 in order.
    reference = OnlineModel("logreg")
    for x, y in rows:
        reference.learn(x, y, reference.predict(x))
    assert learner.model.predict(rows[0][0]) == reference.predict(rows[0][0])


def test_a_verified_checkpoint_is_the_model_now_and_what_a_heal_goes_back_to():
    rows = phishing(120)
    learner = Learner(OnlineModel("logreg"), min_interval=10_000)
    stream(learner, rows[:100])
    checkpoint = learner.verified_checkpoint()
    assert checkpoint is not None
    copy = pickle.loads(checkpoint)
    assert all(copy.predict(x) == learner.model.predict(x) for x, _ in rows)
    assert copy.samples_learned == learner.model.samples_learned == 100
    # A poison learned after it is undone back to it, and the examples since are relearned:
    # the model ends as River's on the stream without the poison.
    poisoned = [(dict(x, https=1e308) if i == 110 else x, y) for i, (x, y) in enumerate(rows)]
    refused = []
    for i, (x, y) in enumerate(poisoned[100:], start=100):
        try:
            prediction = learner.predict(x)
        except ModelError:
            refused.append(f"e-{i}")
            continue
        learner.learn(example(i, x, y, prediction))
    refused += [r.example.event_id for r in learner.end_batch().refused]
    assert refused == ["e-110"]
    clean = [row for i, row in enumerate(rows) if i != 110]
    assert learner.model.metric_values() == progressive_metrics("logreg", clean)


def test_a_verified_checkpoint_heals_first_and_is_none_when_healing_does_not_help(monkeypatch):
    learner = Learner(OnlineModel("logreg"))
    stream(learner, phishing(20))
    problems = iter(["the model's state holds a non-finite number", None])
    monkeypatch.setattr(learner, "_unhealthy", lambda inputs=1: next(problems))
    heals = []
    monkeypatch.setattr(learner, "_heal", lambda extra=None: heals.append(1))
    assert learner.verified_checkpoint() == learner._checkpoint  # the one healing ended with
    assert heals == [1]
    monkeypatch.setattr(learner, "_unhealthy", lambda inputs=1: "still broken")
    assert learner.verified_checkpoint() is None


def test_verifying_a_model_checks_it_once_and_again_only_after_healing(monkeypatch):
    learner = Learner(OnlineModel("logreg"))
    stream(learner, phishing(20))
    checks, heals = [], []
    answers = iter([None, "the model's state holds a non-finite number", None, "still broken", "still broken"])

    def unhealthy(inputs=1):
        checks.append(inputs)
        return next(answers)

    monkeypatch.setattr(learner, "_unhealthy", unhealthy)
    monkeypatch.setattr(learner, "_heal", lambda extra=None: heals.append(1))
    assert learner.verified() and checks == [learner.verify_inputs] and heals == []
    assert learner.verified() and len(checks) == 3 and heals == [1]  # healed, then checked again
    assert not learner.verified() and heals == [1, 1]  # healing did not help: it does not leave


def unpredicted(i, x, y):
    """A labelled event's example from a worker apart from the learner: no prediction yet."""
    return Example(f"e-{i}", float(i), x, y, Prediction(None), 0, ("events", 0, i), learner_predicts=True)


def learn_unpredicted(learner, rows, batch=25):
    """What a learner apart does with a worker's labelled events: learn each unpredicted,
    end the batch every `batch` examples. Returns the examples learned and those refused."""
    learned, refused = [], []
    for i, (x, y) in enumerate(rows):
        learner.learn(unpredicted(i, x, y))
        if i % batch == batch - 1:
            outcome = learner.end_batch()
            learned += outcome.learned
            refused += outcome.refused
    outcome = learner.end_batch()
    return learned + outcome.learned, refused + outcome.refused


@pytest.mark.parametrize("model_name", ["logreg", "hoeffding"])
def test_the_learner_predicts_an_unpredicted_example_right_before_learning_it(model_name):
    rows = phishing()
    learner = Learner(OnlineModel(model_name), min_interval=60)
    learned, _ = learn_unpredicted(learner, rows)

    # Progressive validation, as River computes it: each prediction from the model that had
    # learned every example before it, and none after.
    assert learner.model.metric_values() == progressive_metrics(model_name, rows)
    reference = OnlineModel(model_name)
    for i, (x, y) in enumerate(rows):
        example = learned[i]
        assert example.prediction == reference.predict(x)
        assert (example.fresh, example.learner_predicts, example.model_samples) == (True, False, i)
        reference.learn(x, y, example.prediction)


def test_an_unpredicted_example_the_model_cannot_answer_for_is_refused_and_not_learned():
    learner = Learner(OnlineModel("logreg"))
    rows = phishing(50)
    for i, (x, y) in enumerate(rows):
        learner.learn(unpredicted(i, x, y))
    learner.end_batch()
    before = learner.model.checkpoint()
    # A string where the scaler needs a number: the embedded worker dead-letters such an event.
    assert learner.learn(unpredicted(50, {**rows[0][0], "https": "yes"}, True)) is False
    outcome = learner.end_batch()
    assert [(r.example.event_id, r.reason) for r in outcome.refused] == [("e-50", "model_error")]
    assert "predicting raised" in outcome.refused[0].detail
    assert outcome.learned == [] and learner.model.checkpoint() == before
    assert learner.learn(unpredicted(50, {**rows[0][0], "https": "yes"}, True)) is False  # a replay: refused once
    assert learner.end_batch().refused == []


def test_the_training_log_holds_an_unpredicted_example_as_the_examples_topic_does():
    from engine.learning import learn_records

    rows = phishing(50)
    values = [unpredicted(i, x, y).encode() for i, (x, y) in enumerate(rows)]
    learner = Learner(OnlineModel("logreg"))
    outcome, logged = learn_records(learner, values)
    # What the retrainer reads from it (features, label) is what was learned; the learned
    # examples themselves carry the learner's own predictions.
    assert logged == values
    assert [(e.features, e.label) for e in outcome.learned] == [(x, y) for x, y in rows]
    assert all(e.fresh and e.prediction.value is not None for e in outcome.learned)
    assert learner.model.metric_values() == progressive_metrics("logreg", rows)


@pytest.mark.parametrize("model_name", ["logreg", "hoeffding"])
def test_a_poisoning_unpredicted_example_is_undone_as_a_predicted_one_is(model_name):
    rows = phishing()
    poisoned = [(dict(x, https=1e308) if i in (100, 250) else x, y) for i, (x, y) in enumerate(rows)]
    learner = Learner(OnlineModel(model_name), min_interval=60)
    _, refused = learn_unpredicted(learner, poisoned)
    assert sorted(r.example.event_id for r in refused) == ["e-100", "e-250"]
    clean = [row for i, row in enumerate(rows) if i not in (100, 250)]
    assert learner.model.metric_values() == progressive_metrics(model_name, clean)


def test_the_training_log_pairs_each_example_with_its_record_when_a_heal_leaves_one_out():
    from engine.learning import learn_records

    # The same features in every example: paired by position after the culprit was left
    # out, each record would be logged for the example after it.
    rows = [({"a": 1.0, "b": 2.0}, i % 3 == 0) for i in range(300)]
    poisoned = [({"a": 1e308, "b": 2.0} if i == 150 else x, y) for i, (x, y) in enumerate(rows)]
    values = [unpredicted(i, x, y).encode() for i, (x, y) in enumerate(poisoned)]
    outcome, logged = learn_records(Learner(OnlineModel("logreg"), min_interval=60), values)
    assert [r.example.event_id for r in outcome.refused] == ["e-150"]
    kept = [i for i in range(300) if i != 150]
    assert [e.event_id for e in outcome.learned] == [f"e-{i}" for i in kept]
    # One record per example learned, in its place, with its own id and label.
    assert [(Example.decode(v).event_id, Example.decode(v).label) for v in logged] == [
        (f"e-{i}", rows[i][1]) for i in kept
    ]


def test_an_unpredicted_example_s_features_past_the_limit_are_left_out_and_counted_once():
    learner = Learner(OnlineModel("logreg", max_features=2))
    rows = [({"a": 1.0, "b": 2.0, "c": 3.0, "d": 4.0, "e": 5.0}, i % 2 == 0) for i in range(5)]
    for i, (x, y) in enumerate(rows):
        learner.learn(unpredicted(i, x, y))
    learned = learner.end_batch().learned
    assert [e.features for e in learned] == [{"a": x["a"], "b": x["b"]} for x, _ in rows]
    assert learner.model.features_dropped == 3 * len(rows)
    assert learner.model.metric_values() == progressive_metrics("logreg", [(e.features, e.label) for e in learned])


def test_the_training_log_holds_what_was_learned_when_the_limit_left_names_out():
    from engine.learning import learn_records

    wide = {"a": 1.0, "b": 2.0, "c": 3.0}
    values = [unpredicted(i, wide, i % 2 == 0).encode() for i in range(3)]
    outcome, logged = learn_records(Learner(OnlineModel("logreg", max_features=2)), values)
    assert [Example.from_record(orjson.loads(v)).features for v in logged] == [{"a": 1.0, "b": 2.0}] * 3
    assert [e.features for e in outcome.learned] == [{"a": 1.0, "b": 2.0}] * 3
