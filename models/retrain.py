"""The offline batch retrainer.

Reads the training log (every labelled example the engine learned from, with the features
as they were at prediction time), splits off the most recent part by event time as a
holdout, and compares on it:

- the champion: the serving model's pipeline replayed once over the training part, which
  is what online learning produced (the live snapshot itself has already learned the
  holdout, so it cannot be scored on it fairly);
- the candidate: a model of the factory (the same pipeline by default) trained with several
  passes over the training part.

Both are scored progressively on the holdout (predict, then learn), so each ends as up to
date as the engine. The candidate is registered with the comparison, as a version whose
parent is the serving one; promoting it is a separate, explicit step.
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass
from typing import Any

from tqdm import tqdm

from models.errors import EngineError
from models.factory import get_spec
from models.online import (
    DEFAULT_MAX_FEATURES,
    PRIMARY_METRIC,
    OnlineModel,
    improvement,
    metrics_for,
    update_metrics,
)


class RetrainError(EngineError, ValueError):
    pass


@dataclass
class RetrainResult:
    candidate: OnlineModel
    report: dict[str, Any]


def _fit(model: OnlineModel, rows: Iterable[tuple[float, dict, Any]], description: str, progress: bool) -> None:
    for _, x, y in tqdm(list(rows), desc=description, disable=not progress, leave=False):
        model.learn(x, y, model.predict(x))


def _score_on_holdout(model: OnlineModel, holdout: list[tuple[float, dict, Any]], progress: bool) -> dict[str, float]:
    scores = metrics_for(model.task)  # the holdout's own metrics; the model keeps learning
    for _, x, y in tqdm(holdout, desc=f"holdout {model.name}", disable=not progress, leave=False):
        prediction = model.predict(x)
        update_metrics(scores, model.task, y, prediction)
        model.learn(x, y, prediction)
    return {name: float(metric.get()) for name, metric in scores.items()}


def retrain(
    examples: list[tuple[float, dict, Any]],
    champion_name: str,
    candidate_name: str | None = None,
    passes: int = 3,
    holdout_fraction: float = 0.2,
    progress: bool = True,
    max_features: int = DEFAULT_MAX_FEATURES,
) -> RetrainResult:
    candidate_name = candidate_name or champion_name
    if get_spec(candidate_name).task is not get_spec(champion_name).task:
        raise RetrainError(f"{candidate_name!r} and {champion_name!r} do not solve the same task")
    if not 0 < holdout_fraction < 1:
        raise RetrainError("holdout_fraction must be between 0 and 1")
    ordered = sorted(examples, key=lambda row: row[0])  # stable: learning order within one timestamp
    cut = int(len(ordered) * (1 - holdout_fraction))
    train, holdout = ordered[:cut], ordered[cut:]
    if len(train) < 20 or len(holdout) < 20:
        raise RetrainError(f"too few labelled examples to compare fairly ({len(ordered)}); need at least 100")

    champion = OnlineModel(champion_name, max_features=max_features)
    _fit(champion, train, f"champion {champion_name} (1 pass)", progress)
    candidate = OnlineModel(candidate_name, max_features=max_features)
    for n in range(passes):
        _fit(candidate, train, f"candidate {candidate_name} pass {n + 1}/{passes}", progress)

    champion_metrics = _score_on_holdout(champion, holdout, progress)
    candidate_metrics = _score_on_holdout(candidate, holdout, progress)
    primary = PRIMARY_METRIC[get_spec(champion_name).task]
    gain = improvement(primary, candidate_metrics[primary], champion_metrics[primary])
    report = {
        "champion": champion_name,
        "candidate": candidate_name,
        "passes": passes,
        "training_window": {"from": train[0][0], "to": train[-1][0], "examples": len(train)},
        "holdout_window": {"from": holdout[0][0], "to": holdout[-1][0], "examples": len(holdout)},
        "primary_metric": primary,
        "champion_metrics": champion_metrics,
        "candidate_metrics": candidate_metrics,
        "improvement": gain,
        "candidate_is_better": gain > 0,
    }
    return RetrainResult(candidate, report)
