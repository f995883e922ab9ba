"""FastROCAUC and FastLogLoss give River's ROCAUC and LogLoss, digit for digit."""

import math
import random

import pytest
from river import metrics

from models.fast_metrics import FastLogLoss, FastROCAUC


def probabilities(rng):
    edges = [0.0, 1.0, 1 / 9, 2 / 9, 0.5, 1 - 1e-7, 1e-7, 1e-300]  # on and around the thresholds
    for _ in range(3000):
        p = rng.choice(edges) if rng.random() < 0.2 else rng.random()
        yield rng.random() < 0.4, p


@pytest.mark.parametrize("seed", range(5))
@pytest.mark.parametrize("n_thresholds", [10, 3, 50])
def test_same_value_as_river_after_every_update(seed, n_thresholds):
    rng = random.Random(seed)
    river, fast = metrics.ROCAUC(n_thresholds=n_thresholds), FastROCAUC(n_thresholds=n_thresholds)
    for i, (y, p) in enumerate(probabilities(rng)):
        y_pred = {True: p, False: 1 - p} if i % 3 else p  # River takes a dict or a number
        river.update(y, y_pred)
        fast.update(y, y_pred)
        if i % 97 == 0:
            assert fast.get() == river.get()
    assert fast.get() == river.get()


def test_missing_true_probability_and_revert_match_river():
    river, fast = metrics.ROCAUC(), FastROCAUC()
    for metric in (river, fast):
        metric.update(True, {False: 1.0})
        metric.update(False, {True: 0.3, False: 0.7})
        metric.update(True, {True: 0.8, False: 0.2})
        metric.revert(False, {True: 0.3, False: 0.7})
    assert fast.get() == river.get()


@pytest.mark.parametrize("seed", range(5))
def test_log_loss_same_value_as_river_after_every_update(seed):
    rng = random.Random(seed)
    river, fast = metrics.LogLoss(), FastLogLoss()
    for i, (y, p) in enumerate(probabilities(rng)):
        y_pred = {True: p, False: 1 - p} if i % 3 else p
        w = 1.0 if i % 5 else rng.choice([0.5, 2.0, 3])  # weights, an integer one too
        river.update(y, y_pred, w)
        fast.update(y, y_pred, w)
        assert fast.get() == river.get()


def test_log_loss_at_the_clamps_and_reverted_matches_river():
    river, fast = metrics.LogLoss(), FastLogLoss()
    for metric in (river, fast):
        metric.update(True, {False: 1.0})  # no probability for True: 0, clamped
        metric.update(False, {True: 1})  # an integer probability
        metric.update(True, 0)
        metric.update(False, 1e-300)
        metric.update(True, {True: 0.8, False: 0.2})
        metric.revert(False, 1e-300)
    assert fast.get() == river.get()
    river.update(True, float("nan"))
    fast.update(True, float("nan"))
    assert math.isnan(fast.get()) and math.isnan(river.get())
