"""The stream logic without Kafka: exactness, delayed labels, dead letters, expiry."""

import orjson
import pytest
from river import datasets, evaluate, metrics

from models.factory import build_model
from models.online import OnlineModel
from streams.features import FeatureRegistry
from streams.processor import StreamProcessor
from streams.records import InvalidMessage


def make_processor(**kwargs):
    return StreamProcessor(OnlineModel("logreg"), FeatureRegistry(), {}, {}, **kwargs)


def event(i, x, y=None):
    body = {"event_id": str(i), "entity_id": "e", "ts": float(i), "features": x}
    if y is not None:
        body["label"] = y
    return orjson.dumps(body)


def test_delayed_labels_match_progressive_val_score_with_delay():
    processor = make_processor()
    rows = list(datasets.Phishing())
    delay = 50
    for i, (x, _) in enumerate(rows):
        if i >= delay:
            processor.handle_label(orjson.dumps({"event_id": str(i - delay), "label": rows[i - delay][1]}))
        processor.handle_event(event(i, x))
    for i in range(len(rows) - delay, len(rows)):
        processor.handle_label(orjson.dumps({"event_id": str(i), "label": rows[i][1]}))

    reference = metrics.Accuracy()
    # simulate_qa reveals label i just before question i + delay, as the loop above does.
    evaluate.progressive_val_score(datasets.Phishing(), build_model("logreg"), reference, delay=delay)
    assert processor.model.metrics["accuracy"].get() == reference.get()
    assert processor.model.samples_learned == len(rows)
    assert len(processor.pending) == 0


def test_label_before_its_event_waits_then_is_learned():
    processor = make_processor()
    assert processor.handle_label(orjson.dumps({"event_id": "1", "label": True}), now=0.0) is False
    result = processor.handle_event(event(1, {"a": 1.0}), now=1.0)
    assert result.learned and processor.model.samples_learned == 1
    assert processor.expire_early_labels(now=1000.0) == []


def test_label_whose_event_never_comes_is_returned_for_the_dlq():
    processor = make_processor(early_label_grace_seconds=5)
    raw = orjson.dumps({"event_id": "ghost", "label": True})
    processor.handle_label(raw, now=0.0)
    assert processor.expire_early_labels(now=4.0) == []
    assert processor.expire_early_labels(now=6.0) == [raw]


def test_duplicates_are_rejected():
    processor = make_processor()
    processor.handle_event(event(1, {"a": 1.0}))
    with pytest.raises(InvalidMessage) as caught:
        processor.handle_event(event(1, {"a": 2.0}))
    assert caught.value.reason == "duplicate_event"
    processor.handle_label(orjson.dumps({"event_id": "1", "label": True}))
    with pytest.raises(InvalidMessage) as caught:
        processor.handle_label(orjson.dumps({"event_id": "1", "label": True}))
    assert caught.value.reason == "duplicate_event"
    assert processor.model.samples_learned == 1


def test_pending_predictions_expire_by_ttl_and_by_bound():
    processor = make_processor(pending_ttl_seconds=10, pending_max=2)
    for i in range(4):
        processor.handle_event(event(i, {"a": float(i)}), now=float(i))
    assert processor.expire_pending(now=10.5) == 2  # event 0 by TTL, event 1 over the bound
    assert sorted(processor.pending) == ["2", "3"]


def test_model_error_is_a_dead_letter_not_a_crash():
    processor = make_processor()
    with pytest.raises(InvalidMessage) as caught:
        processor.handle_event(event(1, {"country": "FR"}, True))
    assert caught.value.reason == "model_error"
    processor.handle_event(event(2, {"a": 1.0}, True))
    assert processor.model.samples_learned == 1


def test_learns_from_features_as_they_were_at_prediction_time():
    registry = FeatureRegistry([{"name": "n", "agg": "count"}])
    processor = StreamProcessor(OnlineModel("logreg"), registry, {}, {})
    processor.handle_event(event(1, {"a": 1.0}))
    processor.handle_event(event(2, {"a": 2.0}))  # the entity's count moves on to 2
    assert processor.pending["1"]["features"] == {"a": 1.0, "n": 1.0}
