"""Feature and prediction drift: Kolmogorov-Smirnov statistic of a recent window against a
reference window (the first values seen), per numeric feature and for the predictions."""

from __future__ import annotations

from collections import deque
from collections.abc import Mapping
from typing import Any

import numpy as np


def ks_statistic(reference: np.ndarray, recent: np.ndarray) -> float:
    """Two-sample KS: the largest gap between the two empirical CDFs."""
    reference, recent = np.sort(reference), np.sort(recent)
    points = np.concatenate([reference, recent])
    cdf_reference = np.searchsorted(reference, points, side="right") / reference.size
    cdf_recent = np.searchsorted(recent, points, side="right") / recent.size
    return float(np.max(np.abs(cdf_reference - cdf_recent)))


class KSDrift:
    def __init__(self, window: int = 500) -> None:
        self.window = window
        self._reference: list[float] = []
        self._recent: deque[float] = deque(maxlen=window)

    def update(self, value: float) -> None:
        if len(self._reference) < self.window:
            self._reference.append(value)
        else:
            self._recent.append(value)

    def statistic(self) -> float | None:
        """None until both windows are full: a half-empty window would cry wolf."""
        if len(self._recent) < self.window:
            return None
        return ks_statistic(np.asarray(self._reference), np.asarray(self._recent))


class DriftMonitor:
    def __init__(self, window: int = 500, max_features: int = 200) -> None:
        self.window = window
        self.max_features = max_features
        self.features: dict[str, KSDrift] = {}
        self.prediction = KSDrift(window)
        self._cursor = 0

    def observe(self, features: Mapping[str, Any], score: float | None) -> None:
        for name, value in features.items():
            if isinstance(value, bool) or not isinstance(value, (int, float)):
                continue
            detector = self.features.get(name)
            if detector is None:
                if len(self.features) >= self.max_features:
                    continue
                detector = self.features[name] = KSDrift(self.window)
            detector.update(float(value))
        if score is not None:
            self.prediction.update(float(score))

    def statistics(self) -> tuple[dict[str, float], float | None]:
        per_feature = {name: ks for name, d in self.features.items() if (ks := d.statistic()) is not None}
        return per_feature, self.prediction.statistic()

    def next_statistics(self, budget: int = 3) -> tuple[dict[str, float], float | None]:
        """Like `statistics`, for the next `budget` features in turn: the gauges refresh a few
        at a time, since all of them at once held the event loop up for milliseconds."""
        names = list(self.features)
        chosen = [names[(self._cursor + i) % len(names)] for i in range(min(budget, len(names)))]
        self._cursor = (self._cursor + len(chosen)) % len(names) if names else 0
        per_feature = {name: ks for name in chosen if (ks := self.features[name].statistic()) is not None}
        return per_feature, self.prediction.statistic()
