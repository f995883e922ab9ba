"""Shadow and canary rollouts: routing, scoring, decisions."""

import pytest
from river import datasets

from models.online import OnlineModel
from models.rollout import Rollout, entity_share
from tests.helpers import event, label, trained

ROWS = list(datasets.Phishing())


def stream(pipeline, rows, start=0):
    pipeline.send_events([event(i, f"e{i % 7}", x, ts=float(i), label=y) for i, (x, y) in enumerate(rows, start)])


def pipeline_with(pipeline_factory, champion, rollout):
    pipeline = pipeline_factory()
    pipeline.learner.replace_model(champion)
    pipeline.learner.rollout = rollout
    return pipeline


def test_canary_share_is_stable_per_entity_and_within_tolerance():
    rollout = Rollout(OnlineModel("logreg"), mode="canary", share=0.1)
    entities = [f"customer-{i}" for i in range(20_000)]
    chosen = [e for e in entities if rollout.answers(e)]
    assert abs(len(chosen) / len(entities) - 0.1) < 0.01  # stated tolerance: 1 point
    assert all(rollout.answers(e) for e in chosen[:100])  # same answer every time
    assert not Rollout(OnlineModel("logreg"), mode="shadow", share=1.0).answers("anyone")
    assert 0 <= entity_share("x") < 1


def test_better_challenger_is_promoted_after_min_labels(pipeline_factory):
    challenger = trained(ROWS)  # has seen everything: clearly better early on
    rollout = Rollout(challenger, mode="shadow", min_labels=200, margin=0.01)
    pipeline = pipeline_with(pipeline_factory, OnlineModel("logreg"), rollout)
    stream(pipeline, ROWS[:199])
    assert rollout.decision() is None
    stream(pipeline, ROWS[199:200], start=199)
    assert rollout.labels == 200
    assert rollout.decision() == "promote"
    status = rollout.status()
    assert status["challenger_metrics"]["accuracy"] > status["champion_metrics"]["accuracy"] + 0.01


def test_worse_challenger_is_rolled_back(pipeline_factory):
    rollout = Rollout(OnlineModel("hoeffding"), mode="canary", share=0.2, min_labels=300)
    pipeline = pipeline_with(pipeline_factory, trained(ROWS[:800]), rollout)
    stream(pipeline, ROWS[800:1100], start=800)
    assert rollout.decision() == "rollback"


def test_failing_challenger_is_rolled_back_early(pipeline_factory):
    class Broken(OnlineModel):
        def predict(self, x):
            raise RuntimeError("broken")

    rollout = Rollout(Broken("logreg"), mode="canary", share=0.5, min_labels=10_000, max_errors=5)
    pipeline = pipeline_with(pipeline_factory, OnlineModel("logreg"), rollout)
    stream(pipeline, ROWS[:5])
    assert rollout.decision() == "rollback"
    assert pipeline.model.samples_learned == 5  # the champion was not disturbed


def test_challenger_learns_from_delayed_labels_too(pipeline_factory):
    rollout = Rollout(OnlineModel("hoeffding"), min_labels=10)
    pipeline = pipeline_with(pipeline_factory, OnlineModel("logreg"), rollout)
    x, y = ROWS[0]
    pipeline.send_events([event("a", "e", x, ts=1.0)])
    pipeline.send_labels([label("a", y)])
    assert rollout.challenger.samples_learned == 1 and rollout.labels == 1


def test_bad_rollout_options():
    with pytest.raises(ValueError):
        Rollout(OnlineModel("logreg"), mode="blue-green")
    with pytest.raises(ValueError):
        Rollout(OnlineModel("logreg"), share=1.5)
