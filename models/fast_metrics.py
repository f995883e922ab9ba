"""River's ROC AUC and log loss, updated in a fraction of the time, with exactly River's values.

`river.metrics.ROCAUC` keeps one confusion matrix per threshold and updates all of them
for every example: about 6 µs, a third of a logistic regression's predict-and-learn. The
counts it keeps are determined by how many thresholds the probability exceeds, so this
keeps one count per (label, that number) and rebuilds the matrices' counts when asked.
The counts are sums of the same weights, so every ratio and the integral are River's own,
digit for digit (tests/test_fast_metrics.py checks it against River on random streams).

`river.metrics.LogLoss` reaches its running mean through four calls (update, _eval, a
clamp, Mean.update with keywords): 0.8 µs an example. `FastLogLoss` does the same float
operations in the same order inline.
"""

from __future__ import annotations

from bisect import bisect_left
from math import log
from typing import Any

from river import metrics
from scipy import integrate


class FastROCAUC(metrics.ROCAUC):
    def __init__(self, n_thresholds: int = 10, pos_val: Any = True) -> None:
        super().__init__(n_thresholds=n_thresholds, pos_val=pos_val)
        self.cms = []  # not kept: `get` rebuilds their counts from the histograms
        # [positive?][k]: total weight of the examples whose probability exceeds exactly k thresholds.
        self._histograms = {True: [0.0] * (n_thresholds + 1), False: [0.0] * (n_thresholds + 1)}

    def update(self, y_true: Any, y_pred: Any, w: float = 1.0) -> None:
        p_true = y_pred.get(True, 0.0) if isinstance(y_pred, dict) else y_pred
        # The thresholds rise, so the ones exceeded (p > t) are the first bisect_left(p) of them.
        self._histograms[y_true == self.pos_val][bisect_left(self.thresholds, p_true)] += w

    def revert(self, y_true: Any, y_pred: Any, w: float = 1.0) -> None:
        p_true = y_pred.get(True, 0.0) if isinstance(y_pred, dict) else y_pred
        self._histograms[y_true == self.pos_val][bisect_left(self.thresholds, p_true)] -= w

    def get(self) -> float:
        positives, negatives = self._histograms[True], self._histograms[False]
        tprs = [0.0] * self.n_thresholds
        fprs = [0.0] * self.n_thresholds
        for i in range(self.n_thresholds):
            # Threshold i predicts "positive" for the examples that exceed more than i thresholds.
            tp = sum(positives[i + 1 :], 0.0)
            fn = sum(positives[: i + 1], 0.0)
            fp = sum(negatives[i + 1 :], 0.0)
            tn = sum(negatives[: i + 1], 0.0)
            tprs[i] = tp / (tp + fn) if tp + fn else 0.0
            fprs[i] = fp / (fp + tn) if fp + tn else 0.0
        return -integrate.trapezoid(x=fprs, y=tprs)


# River's bounds for a probability before its logarithm (ClassificationMetric._clamp_proba).
_LOWEST, _HIGHEST = 1e-15, 1 - 1e-15


class FastLogLoss(metrics.LogLoss):
    def update(self, y_true: Any, y_pred: Any, w: float = 1.0) -> None:
        p_true = y_pred.get(True, 0.0) if type(y_pred) is dict else y_pred
        # river.utils.math.clamp(p, 1e-15, 1 - 1e-15), max(min(...)): a NaN stays NaN there too.
        if p_true > _HIGHEST:
            p_true = _HIGHEST
        elif p_true < _LOWEST:
            p_true = _LOWEST
        loss = -log(p_true) if y_true else -log(1 - p_true)
        mean = self._mean  # river.stats.Mean.update
        mean.n += w
        mean._mean += (w / mean.n) * (loss - mean._mean)
