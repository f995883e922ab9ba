"""The stream logic without Kafka: exactness, delayed labels, dead letters, replays, expiry."""

import pytest
from river import datasets

from streams.dead_letters import DeadLetterReason
from tests.helpers import event, label, progressive_metrics


def reasons(pipeline):
    return [str(getattr(letter, "reason", "")) for letter in pipeline.dead_letters]


def test_inline_labels_in_batches_match_progressive_val_score(pipeline_factory):
    pipeline = pipeline_factory()
    rows = list(datasets.Phishing())
    for start in range(0, len(rows), 97):  # batches of odd sizes
        pipeline.send_events(
            [
                event(i, f"e{i % 13}", x, ts=float(i), label=y)
                for i, (x, y) in enumerate(rows[start : start + 97], start)
            ]
        )
    assert pipeline.model.metric_values() == progressive_metrics("logreg", rows)


def test_delayed_labels_match_progressive_val_score_with_delay(pipeline_factory):
    pipeline = pipeline_factory()
    rows = list(datasets.Phishing())
    delay = 50
    for i, (x, _) in enumerate(rows):
        if i >= delay:
            pipeline.send_labels([label(i - delay, rows[i - delay][1])])
        pipeline.send_events([event(i, "e", x, ts=float(i))])
    pipeline.send_labels([label(i, rows[i][1]) for i in range(len(rows) - delay, len(rows))])

    # simulate_qa reveals label i just before question i + delay, as the loop above does.
    assert pipeline.model.metric_values() == progressive_metrics("logreg", rows, delay=delay)
    assert pipeline.model.samples_learned == len(rows)
    assert len(pipeline.pending) == 0


def test_label_before_its_prediction_waits_then_is_learned(pipeline_factory):
    pipeline = pipeline_factory()
    assert pipeline.send_labels([label(1, True)], now=0.0).waiting_labels == 1
    pipeline.send_events([event(1, "e", {"a": 1.0}, ts=1.0)], now=1.0)
    assert pipeline.model.samples_learned == 1
    assert pipeline.join.expire(now=1000.0).dead_letters == []


def test_label_whose_event_never_comes_is_dead_lettered_with_its_bytes(pipeline_factory):
    pipeline = pipeline_factory(early_label_grace_seconds=5)
    raw = label("ghost", True)
    pipeline.send_labels([raw], now=0.0)
    assert pipeline.join.expire(now=4.0).dead_letters == []
    [letter] = pipeline.join.expire(now=6.0).dead_letters
    assert letter.reason == DeadLetterReason.UNKNOWN_EVENT and letter.record.value == raw
    assert (letter.record.topic, letter.record.offset) == ("labels", 0)


def test_duplicates_are_dead_lettered_and_learned_once(pipeline_factory):
    pipeline = pipeline_factory()
    pipeline.send_events(
        [event(1, "e", {"a": 1.0}, ts=1.0), event(1, "e", {"a": 2.0}, ts=1.0)]
    )  # even within one batch
    pipeline.send_labels([label(1, True)])
    pipeline.send_labels([label(1, True)])
    assert reasons(pipeline) == ["duplicate_event", "duplicate_event"]
    assert pipeline.model.samples_learned == 1


def test_a_replayed_batch_changes_nothing(pipeline_factory):
    pipeline = pipeline_factory(definitions=[{"name": "n", "agg": "count"}])
    rows = list(datasets.Phishing())[:40]
    records = pipeline._records("events", [event(i, "e", x, ts=float(i), label=y) for i, (x, y) in enumerate(rows)])
    pipeline.events.process(0, records)
    pipeline.learner.end_batch()
    again = pipeline.events.process(0, records)  # what a restart or a rebalance delivers
    assert again.replayed == 40 and again.processed == 0
    assert pipeline.rows.get("e")["values"] == {"n": 40.0}
    assert pipeline.model.samples_learned == 40


def test_pending_predictions_expire_by_ttl_and_by_bound(pipeline_factory):
    pipeline = pipeline_factory(pending_ttl_seconds=10, pending_max=2)
    for i in range(4):
        pipeline.send_events([event(i, "e", {"a": float(i)}, ts=float(i))], now=float(i))
    expiry = pipeline.join.expire(now=10.5)
    assert (expiry.predictions, expiry.evicted) == (1, 1)  # event 0 by TTL, event 1 over the bound
    assert sorted(pipeline.pending.data) == ["2", "3"]


def test_an_event_the_model_cannot_take_is_a_model_error_not_a_crash(pipeline_factory):
    pipeline = pipeline_factory()
    rows = list(datasets.Phishing())[:10]
    pipeline.send_events([event(i, "e", x, ts=float(i), label=y) for i, (x, y) in enumerate(rows)])
    pipeline.send_events([event(10, "e", {**rows[0][0], "https": "yes"}, ts=10.0, label=True)])  # predicting raises
    pipeline.send_events([event(11, "e", {**rows[0][0], "country": "FR"}, ts=11.0, label=True)])  # learning raises
    pipeline.send_events([event(12, "e", rows[1][0], ts=12.0, label=True)])
    assert reasons(pipeline) == ["model_error", "model_error"]
    assert pipeline.model.samples_learned == 11


def test_learns_from_features_as_they_were_at_prediction_time(pipeline_factory):
    pipeline = pipeline_factory(definitions=[{"name": "n", "agg": "count"}])
    pipeline.send_events([event(1, "e", {"a": 1.0}, ts=1.0)])
    pipeline.send_events([event(2, "e", {"a": 2.0}, ts=2.0)])  # the entity's count moves on to 2
    assert pipeline.pending.get("1")["prediction"]["features"] == {"a": 1.0, "n": 1.0}


@pytest.mark.parametrize("value", [1e308, -1e308])
def test_hostile_values_are_out_of_range_and_the_rest_is_learned(pipeline_factory, value):
    pipeline = pipeline_factory()
    rows = list(datasets.Phishing())[:100]
    values = [
        event(i, "e", dict(x, https=value) if i % 30 == 7 else x, ts=float(i), label=y) for i, (x, y) in enumerate(rows)
    ]
    pipeline.send_events(values)
    assert reasons(pipeline) == ["out_of_range"] * 4
    clean = [row for i, row in enumerate(rows) if i % 30 != 7]
    assert pipeline.model.metric_values() == progressive_metrics("logreg", clean)


class PublishedCopy:
    """What a worker apart from its learner predicts with: the latest published version."""

    predicts_labelled = False
    version = 3
    samples = 120

    def __init__(self) -> None:
        from models.online import OnlineModel

        self.model = OnlineModel("logreg")
        self.predicted: list[dict] = []
        self.learned: list = []

    def admit(self, x):
        return x, 0

    def predict(self, x):
        self.predicted.append(x)
        return self.model.predict(x)

    def predict_challenger(self, x):
        return None

    def learn(self, example):
        self.learned.append(example)
        return True


def test_a_worker_apart_leaves_a_labelled_event_for_its_learner_to_predict():
    from models.named import NamedModel
    from models.online import Prediction
    from streams.batch_consumer import Record
    from streams.events import EventProcessor, ModelLane
    from streams.features import FeatureRegistry
    from streams.records import Contract
    from tests.conftest import MemoryTable

    copy = PublishedCopy()
    processor = EventProcessor(
        Contract(), FeatureRegistry(), MemoryTable(), [ModelLane(NamedModel("logreg", "logreg"), copy)]
    )
    values = [event(1, "a", {"x": 1.0}, label=True), event(2, "a", {"x": 2.0})]
    outcome = processor.process(0, [Record("events", 0, i, None, v, (), None) for i, v in enumerate(values)])

    # The labelled event: no prediction from a copy behind the learner; its learner makes it.
    [example] = copy.learned
    assert example.learner_predicts and example.prediction == Prediction(None) and not example.fresh
    # The unlabelled one is answered by the copy, for the join with its label.
    assert copy.predicted == [{"x": 2.0}]
    [(event_id, record)] = outcome.predictions
    assert event_id == "2" and record["model_version"] == 3 and record["prediction"]["value"] is not None
