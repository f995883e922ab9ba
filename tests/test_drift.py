import random

import numpy as np
import pytest

from models.drift import DriftMonitor, KSDrift, ks_statistic


def test_ks_of_identical_and_disjoint_samples():
    a = np.arange(100.0)
    assert ks_statistic(a, a.copy()) == 0.0
    assert ks_statistic(a, a + 1000) == 1.0


def test_ks_matches_a_known_value():
    # Reference {1,2,3,4}, recent {3,4,5,6}: the CDFs differ most at 2 (0.5 vs 0).
    assert ks_statistic(np.array([1.0, 2, 3, 4]), np.array([3.0, 4, 5, 6])) == pytest.approx(0.5)


def test_shifted_feature_drifts_and_stable_one_does_not():
    rng = random.Random(1)
    monitor = DriftMonitor(window=300)
    for i in range(600):
        shift = 0.0 if i < 300 else 2.0
        monitor.observe({"stable": rng.gauss(0, 1), "shifted": rng.gauss(shift, 1), "name": "x"}, score=0.5)
    per_feature, prediction = monitor.statistics()
    assert per_feature["shifted"] > 0.5
    assert per_feature["stable"] < 0.15
    assert "name" not in per_feature
    assert prediction == 0.0


def test_no_statistic_until_both_windows_are_full():
    drift = KSDrift(window=10)
    for i in range(15):
        drift.update(float(i))
    assert drift.statistic() is None


def test_next_statistics_visits_every_feature_a_few_at_a_time():
    monitor = DriftMonitor(window=10)
    for i in range(20):
        monitor.observe({f"f{j}": float(i + j) for j in range(7)}, score=0.1)
    seen = {}
    for _ in range(3):  # 3 + 3 + 1 features, then round again
        per_feature, prediction = monitor.next_statistics(budget=3)
        assert len(per_feature) <= 3 and prediction == 0.0
        seen.update(per_feature)
    assert seen == monitor.statistics()[0]
