"""Gradual rollout of a challenger next to the serving champion.

Shadow: the challenger predicts on every event and learns from every label, scored next to
the champion, but never answers a request. Canary: the same, and it also answers a set share
of entities, chosen by a hash of the entity id so each entity always meets the same model.
After `min_labels` labels the one with the better primary metric wins by `margin`: the
challenger is promoted, or the rollout is rolled back (also at once if the challenger errs).
"""

from __future__ import annotations

import hashlib
from dataclasses import dataclass, field
from typing import Any

from models.online import PRIMARY_METRIC, OnlineModel, Prediction, improvement, metrics_for, update_metrics

MODES = ("shadow", "canary")


def entity_share(entity_id: str) -> float:
    """A stable number in [0, 1) per entity."""
    digest = hashlib.blake2b(entity_id.encode(), digest_size=8).digest()
    return int.from_bytes(digest, "big") / 2**64


def canary_answers(mode: str | None, share: float, entity_id: str) -> bool:
    """Whether a rollout's challenger answers this entity: a canary, for the entities whose
    hash falls below its share (the same entities in every process)."""
    return mode == "canary" and entity_share(entity_id) < share


@dataclass
class Rollout:
    challenger: OnlineModel
    mode: str = "shadow"
    share: float = 0.0
    min_labels: int = 1000
    margin: float = 0.0
    max_errors: int = 10
    labels: int = 0
    errors: int = 0
    champion_scores: dict[str, Any] = field(default_factory=dict)
    challenger_scores: dict[str, Any] = field(default_factory=dict)

    def __post_init__(self) -> None:
        if self.mode not in MODES:
            raise ValueError(f"mode must be one of {MODES}")
        if not 0.0 <= self.share <= 1.0:
            raise ValueError("share must be between 0 and 1")
        self.champion_scores = metrics_for(self.challenger.task)
        self.challenger_scores = metrics_for(self.challenger.task)

    def answers(self, entity_id: str) -> bool:
        return canary_answers(self.mode, self.share, entity_id)

    def predict(self, x: dict[str, Any]) -> Prediction | None:
        try:
            return self.challenger.predict(x)
        except Exception:  # noqa: BLE001 - a failing challenger is counted and rolled back, not fatal
            self.errors += 1
            return None

    def learn(self, x: dict[str, Any], y: Any, champion: Prediction, challenger: Prediction | None) -> None:
        """Scores both on the label when both predicted it (the comparison stays like for
        like), and the challenger learns from every label either way."""
        if challenger is not None:
            self.labels += 1
            update_metrics(self.champion_scores, self.challenger.task, y, champion)
            update_metrics(self.challenger_scores, self.challenger.task, y, challenger)
        try:
            self.challenger.learn(x, y, challenger or Prediction(None))
        except Exception:  # noqa: BLE001 - counted; enough of them roll the challenger back
            self.errors += 1

    @property
    def primary_metric(self) -> str:
        return PRIMARY_METRIC[self.challenger.task]

    def decision(self) -> str | None:
        """'promote', 'rollback' or None (not enough evidence yet)."""
        if self.errors >= self.max_errors:
            return "rollback"
        if self.labels < self.min_labels:
            return None
        name = self.primary_metric
        gain = improvement(name, self.challenger_scores[name].get(), self.champion_scores[name].get())
        return "promote" if gain > self.margin else "rollback"

    def status(self) -> dict[str, Any]:
        return {
            "version": self.challenger.version,
            "name": self.challenger.name,
            "mode": self.mode,
            "share": self.share,
            "labels": self.labels,
            "min_labels": self.min_labels,
            "margin": self.margin,
            "errors": self.errors,
            "champion_metrics": {k: float(m.get()) for k, m in self.champion_scores.items()},
            "challenger_metrics": {k: float(m.get()) for k, m in self.challenger_scores.items()},
        }
