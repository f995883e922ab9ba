"""FastROCAUC gives River's ROCAUC, digit for digit."""

import random

import pytest
from river import metrics

from models.fast_metrics import FastROCAUC


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
