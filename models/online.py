"""The live model: a River estimator with its progressive metrics and a concept-drift detector.

Metrics follow `river.evaluate.progressive_val_score` to the letter: each metric is
updated with the prediction made *before* the model saw the label (label metrics with
the predicted class, probability metrics with the class probabilities), a prediction of
None or {} is not scored, and the model learns from the features as they were then.
"""

from __future__ import annotations

import math
import numbers
import pickle
from collections.abc import Iterable
from typing import Any

import msgspec
from river import drift, dummy, metrics, stats

from models import pickling
from models.errors import ModelError
from models.factory import Task, get_spec
from models.fast_metrics import FastLogLoss, FastROCAUC

Features = dict[str, Any]


_CLASS_TYPES = (bool, str, int, type(None))


class Prediction(msgspec.Struct, gc=False):  # a struct, as models/examples.py's Example; immutable by convention
    """What the model answered before it knew the label."""

    value: Any
    proba: dict[Any, float] | None = None

    def to_record(self) -> dict[str, Any]:
        """JSON-safe: class labels may be booleans or numbers, so probabilities are pairs."""
        proba = None if self.proba is None else [[label, p] for label, p in self.proba.items()]
        return {"value": self.value, "proba": proba}

    @classmethod
    def from_record(cls, data: dict[str, Any] | None) -> Prediction:
        if data is None:
            return cls(None)
        pairs = data.get("proba")
        return cls(value=data.get("value"), proba=None if pairs is None else {label: p for label, p in pairs})

    def non_finite(self) -> str | None:
        """Why this answer is unusable (NaN or infinite numbers), or None when it is fine."""
        value = self.value
        kind = type(value)
        # A class (bool, str, int) needs no check; numbers.Real, an ABC check that costs a
        # microsecond, only for what is neither: River answers NumPy floats too.
        is_number = kind is float or (kind not in _CLASS_TYPES and isinstance(value, numbers.Real))
        if is_number and not math.isfinite(value):
            return f"prediction {value}"
        if self.proba:
            try:
                # A sum is finite only when every term is: one C call for the common case.
                if math.isfinite(sum(self.proba.values())):
                    return None
            except TypeError:  # a None among them
                pass
            bad = {label: p for label, p in self.proba.items() if p is None or not math.isfinite(p)}
            if bad:
                return f"probabilities {bad}"
        return None


def metrics_for(task: Task) -> dict[str, metrics.base.Metric]:
    if task is Task.BINARY:
        return {"accuracy": metrics.Accuracy(), "roc_auc": FastROCAUC(), "log_loss": FastLogLoss()}
    if task is Task.MULTICLASS:
        return {"accuracy": metrics.Accuracy(), "macro_f1": metrics.MacroF1(), "cross_entropy": metrics.CrossEntropy()}
    return {"mae": metrics.MAE(), "rmse": metrics.RMSE(), "r2": metrics.R2()}


_WANTS_PROBA: dict[type, bool] = {}


def update_metrics(scores: dict[str, metrics.base.Metric], task: Task, y: Any, prediction: Prediction) -> None:
    """Scores one prediction as progressive_val_score does: label metrics get the predicted
    class, probability metrics the class probabilities, and None or {} is not scored."""
    value = prediction.value
    if task is Task.REGRESSION:
        if value is not None:
            for metric in scores.values():
                metric.update(y, value)
        return
    proba = prediction.proba
    # Whether each kind of answer is scored, decided once for every metric.
    value_scored = value is not None and value != {}
    proba_scored = proba is not None and proba != {}
    for metric in scores.values():
        wants_proba = _WANTS_PROBA.get(type(metric))
        if wants_proba is None:
            assert isinstance(metric, metrics.base.ClassificationMetric)  # what metrics_for gives a classifier
            wants_proba = _WANTS_PROBA[type(metric)] = not metric.requires_labels
        if wants_proba:
            if proba_scored:
                metric.update(y, proba)
        elif value_scored:
            metric.update(y, value)


DEFAULT_MAX_FEATURES = 10_000


class OnlineModel:
    def __init__(
        self, name: str, version: int = 1, fallback_name: str = "", max_features: int = DEFAULT_MAX_FEATURES
    ) -> None:
        spec = get_spec(name)
        self.name = name
        self.version = version
        self.task = spec.task
        self.classifies = spec.task is not Task.REGRESSION  # asked on every call: not a property
        # The feature names this model sees, at most `max_features`: River's models and scalers
        # keep every name they are ever shown, even in predict_one, so a flood of new names (an
        # id put into a name by mistake) would grow them without bound.
        self.max_features = max_features
        self.feature_names: set[str] = set()
        # False on a published copy: it sees the names its learner admitted, and predictions
        # (HTTP clients, unlabelled events) must not add names of their own.
        self.grows_names = True
        self.features_dropped = 0  # feature values left out, past the limit
        # Any: River's estimators are duck-typed (a Pipeline is a bare Estimator with its last
        # step's methods), and only classifiers have predict_proba_one.
        self.estimator: Any = spec.build()
        self.metrics = metrics_for(spec.task)
        # What HTTP clients were answered, scored on the labels that came back for it: the
        # stream's metrics stay those of the stream alone (exact against River).
        self.served_metrics = metrics_for(spec.task)
        self.served_samples = 0
        self.samples_learned = 0
        self.drift_detector = drift.ADWIN()
        self.drifts_detected = 0
        # The last resort of the fallback chain: class frequencies, or the running mean.
        self.prior: dummy.PriorClassifier | dummy.StatisticRegressor = (
            dummy.PriorClassifier() if spec.task is not Task.REGRESSION else dummy.StatisticRegressor(stats.Mean())
        )
        # A simpler model learning from the same labels, answering when the primary cannot.
        self.fallback_name = fallback_name
        self.fallback: Any = None  # an estimator like self.estimator, if configured
        if fallback_name:
            if get_spec(fallback_name).task is not spec.task:
                raise ValueError(f"fallback model {fallback_name!r} is not a {spec.task.value} model like {name!r}")
            self.fallback = get_spec(fallback_name).build()

    @property
    def is_classifier(self) -> bool:
        return self.classifies

    def __setstate__(self, state: dict[str, Any]) -> None:
        # Snapshots and versions from before the feature-name limit load with the default one.
        state.setdefault("max_features", DEFAULT_MAX_FEATURES)
        state.setdefault("features_dropped", 0)
        state.setdefault("served_samples", 0)
        state.setdefault("grows_names", True)
        state.setdefault("classifies", state["task"] is not Task.REGRESSION)
        if "served_metrics" not in state:
            state["served_metrics"] = metrics_for(state["task"])
        if "feature_names" not in state:
            state["feature_names"] = set()
        pickling.set_attributes(self, state)  # inline, as built (models/pickling.py)

    def admit(self, x: Features) -> tuple[Features, int]:
        """x with only the names this model sees, and how many were left out (also added to
        `features_dropped`). A new name is admitted while the model knows fewer than
        `max_features`; past that, it is left out. The stream admits each event's features
        once and hands the result on, so a value left out is counted once."""
        names = self.feature_names
        if names.issuperset(x):
            return x, 0
        if len(names) >= self.max_features or not self.grows_names:
            seen = {name: value for name, value in x.items() if name in names}
        else:
            seen = {}
            grows = self.grows_names
            for name, value in x.items():
                if name in names or (grows and len(names) < self.max_features):
                    names.add(name)
                    seen[name] = value
        left_out = len(x) - len(seen)
        self.features_dropped += left_out
        return seen, left_out

    def predict(self, x: Features) -> Prediction:
        x, _ = self.admit(x)
        if not self.classifies:
            return Prediction(self.estimator.predict_one(x))
        proba = self.estimator.predict_proba_one(x)
        # Same rule as river.base.Classifier.predict_one, computed from one proba call.
        return Prediction(max(proba, key=proba.get) if proba else None, proba)

    def learn(self, x: Features, y: Any, prediction: Prediction, *, served: bool = False) -> None:
        """Learns (x, y); `prediction` is what was answered for x before the label was known,
        by the stream or (`served`) to an HTTP client."""
        x, _ = self.admit(x)
        if served:
            update_metrics(self.served_metrics, self.task, y, prediction)
            self.served_samples += 1
        else:
            self._score(y, prediction)
        self.estimator.learn_one(x, y)
        prior = self.prior
        if self.classifies:
            # PriorClassifier.learn_one's own update, without building a list for Counter.update.
            prior.counts[y] += 1  # type: ignore[union-attr]
            prior.n += 1  # type: ignore[union-attr]
        else:
            prior.learn_one(x, y)
        if self.fallback is not None:
            try:
                self.fallback.learn_one(x, y)
            except Exception:  # noqa: BLE001 - the safety net must not take the primary down with it
                pass
        self.samples_learned += 1

    def predict_fallback(self, x: Features) -> Prediction | None:
        """The fallback model's answer, or None when there is none or it cannot answer."""
        if self.fallback is None:
            return None
        x, _ = self.admit(x)
        try:
            if not self.is_classifier:
                return Prediction(value=self.fallback.predict_one(x)) if self.samples_learned else None
            proba = self.fallback.predict_proba_one(x)
        except Exception:  # noqa: BLE001 - fall through to the prior
            return None
        return Prediction(value=max(proba, key=proba.get), proba=proba) if proba else None

    def predict_prior(self) -> Prediction:
        """Majority class with class frequencies, or the mean target, of everything learned."""
        if not self.is_classifier:
            return Prediction(value=self.prior.predict_one({}) if self.samples_learned else None)
        assert isinstance(self.prior, dummy.PriorClassifier)
        proba = self.prior.predict_proba_one({})
        return Prediction(value=max(proba, key=proba.__getitem__) if proba else None, proba=proba)

    def _score(self, y: Any, prediction: Prediction) -> None:
        update_metrics(self.metrics, self.task, y, prediction)
        if prediction.value is None:
            return
        error = float(prediction.value != y) if self.classifies else abs(y - prediction.value)
        self.drift_detector.update(error)
        if self.drift_detector.drift_detected:
            self.drifts_detected += 1

    def metric_values(self) -> dict[str, float]:
        return {name: float(metric.get()) for name, metric in self.metrics.items()}

    def served_metric_values(self) -> dict[str, float]:
        return {name: float(metric.get()) for name, metric in self.served_metrics.items()}

    def checkpoint(self) -> bytes:
        return pickling.dumps(self)

    def restore(self, checkpoint: bytes, names: Iterable[str] = ()) -> None:
        """Puts this very object back in the checkpoint's state, so every holder sees it.

        The feature names it knew, and `names` (those of recent events), stay the very string
        objects they were: see `pickling.share_names`."""
        shared = [*self.__dict__.get("feature_names", ()), *names]
        self.__dict__.clear()
        self.__dict__.update(pickle.loads(checkpoint).__dict__)
        pickling.share_names([self.estimator, self.fallback, self.feature_names], shared)

    def divergence(self, inputs: Iterable[Features]) -> str | None:
        """Why the model is unusable on these inputs (an error or a non-finite answer), or None."""
        for x in inputs:
            try:
                checked_predict(self, x)
            except ModelError as exc:
                return str(exc)
        return None


def checked_predict(model: OnlineModel, x: Features) -> Prediction:
    """The model's answer for x; ModelError when predicting raised or answered a NaN or an
    infinite number. The one rule for a usable answer, wherever a model answers."""
    try:
        prediction = model.predict(x)
    except Exception as exc:
        raise ModelError(f"predicting raised {type(exc).__name__}: {exc}") from exc
    problem = prediction.non_finite()
    if problem is None and prediction.value is None and prediction.proba:
        problem = f"probabilities {prediction.proba} without a class"
    if problem is not None:
        raise ModelError(problem)
    return prediction


PRIMARY_METRIC = {Task.BINARY: "accuracy", Task.MULTICLASS: "accuracy", Task.REGRESSION: "mae"}
LOWER_IS_BETTER = {"mae", "rmse", "log_loss", "cross_entropy"}


def improvement(metric: str, candidate: float, incumbent: float) -> float:
    """How much better `candidate` scores than `incumbent` on `metric` (negative: worse).
    The one rule rollouts and retraining decide by."""
    return incumbent - candidate if metric in LOWER_IS_BETTER else candidate - incumbent
