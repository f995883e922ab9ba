"""Shadow and canary rollouts: routing, scoring, decisions."""

import orjson
import pytest
from river import datasets

from models.online import OnlineModel
from models.rollout import Rollout, entity_share
from streams.features import FeatureRegistry
from streams.processor import StreamProcessor

ROWS = list(datasets.Phishing())


def trained(name, rows):
    model = OnlineModel(name)
    for x, y in rows:
        model.learn(x, y, model.predict(x))
    return model


def stream(processor, rows, start=0):
    for i, (x, y) in enumerate(rows, start):
        processor.handle_event(orjson.dumps({"event_id": str(i), "entity_id": f"e{i % 7}", "ts": float(i), "features": x, "label": y}))


def test_canary_share_is_stable_per_entity_and_within_tolerance():
    rollout = Rollout(OnlineModel("logreg"), mode="canary", share=0.1)
    entities = [f"customer-{i}" for i in range(20_000)]
    chosen = [e for e in entities if rollout.answers(e)]
    assert abs(len(chosen) / len(entities) - 0.1) < 0.01  # stated tolerance: 1 point
    assert all(rollout.answers(e) for e in chosen[:100])  # same answer every time
    assert not Rollout(OnlineModel("logreg"), mode="shadow", share=1.0).answers("anyone")
    assert 0 <= entity_share("x") < 1


def test_better_challenger_is_promoted_after_min_labels():
    champion = OnlineModel("logreg")
    challenger = trained("logreg", ROWS)  # has seen everything: clearly better early on
    processor = StreamProcessor(champion, FeatureRegistry(), {}, {})
    processor.rollout = Rollout(challenger, mode="shadow", min_labels=200, margin=0.01)
    stream(processor, ROWS[:199])
    assert processor.rollout.decision() is None
    stream(processor, ROWS[199:200], start=199)
    assert processor.rollout.labels == 200
    assert processor.rollout.decision() == "promote"
    status = processor.rollout.status()
    assert status["challenger_metrics"]["accuracy"] > status["champion_metrics"]["accuracy"] + 0.01


def test_worse_challenger_is_rolled_back():
    champion = trained("logreg", ROWS[:800])
    processor = StreamProcessor(champion, FeatureRegistry(), {}, {})
    processor.rollout = Rollout(OnlineModel("hoeffding"), mode="canary", share=0.2, min_labels=300)
    stream(processor, ROWS[800:1100], start=800)
    assert processor.rollout.decision() == "rollback"


def test_failing_challenger_is_rolled_back_early():
    class Broken(OnlineModel):
        def predict(self, x):
            raise RuntimeError("broken")

    processor = StreamProcessor(OnlineModel("logreg"), FeatureRegistry(), {}, {})
    processor.rollout = Rollout(Broken("logreg"), mode="canary", share=0.5, min_labels=10_000, max_errors=5)
    stream(processor, ROWS[:5])
    assert processor.rollout.decision() == "rollback"
    assert processor.model.samples_learned == 5  # the champion was not disturbed


def test_challenger_learns_from_delayed_labels_too():
    processor = StreamProcessor(OnlineModel("logreg"), FeatureRegistry(), {}, {})
    processor.rollout = Rollout(OnlineModel("hoeffding"), min_labels=10)
    x, y = ROWS[0]
    processor.handle_event(orjson.dumps({"event_id": "a", "entity_id": "e", "ts": 1.0, "features": x}))
    processor.handle_label(orjson.dumps({"event_id": "a", "label": y}))
    assert processor.rollout.challenger.samples_learned == 1 and processor.rollout.labels == 1


def test_bad_rollout_options():
    with pytest.raises(ValueError):
        Rollout(OnlineModel("logreg"), mode="blue-green")
    with pytest.raises(ValueError):
        Rollout(OnlineModel("logreg"), share=1.5)
