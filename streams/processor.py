"""What happens to each event and label, independent of Faust.

The agents in `streams/app.py` feed raw bytes here and send what is rejected to the
dead-letter topics. `entities` and `pending` are mutable mappings: Faust tables in the
engine (so they are changelogged and recovered), plain dicts in unit tests and replays.
"""

from __future__ import annotations

import time
from collections import OrderedDict
from dataclasses import dataclass
from typing import Any, MutableMapping

from engine import metrics
from models.drift import DriftMonitor
from models.online import OnlineModel, Prediction
from models.rollout import Rollout
from models.training_log import TrainingLog
from streams.features import FeatureRegistry, apply_event, model_features
from streams.offline_store import OfflineFeatureLog
from streams.records import Event, InvalidMessage, Label, parse_event, parse_label


@dataclass(frozen=True)
class EventResult:
    event: Event
    features: dict[str, Any]
    prediction: Prediction
    learned: bool


def _proba_to_json(proba: dict[Any, float] | None) -> list[list[Any]] | None:
    # Class labels may be booleans or numbers: a JSON object would turn them into strings.
    return None if proba is None else [[label, p] for label, p in proba.items()]


def _proba_from_json(pairs: list[list[Any]] | None) -> dict[Any, float] | None:
    return None if pairs is None else {label: p for label, p in pairs}


def _drift_score(prediction: Prediction) -> float | None:
    """The number whose distribution is watched: the model's confidence, or the predicted value."""
    if prediction.proba:
        return max(prediction.proba.values())
    value = prediction.value
    return float(value) if isinstance(value, (int, float)) and not isinstance(value, bool) else None


class StreamProcessor:
    def __init__(
        self,
        model: OnlineModel,
        registry: FeatureRegistry,
        entities: MutableMapping[str, Any],
        pending: MutableMapping[str, Any],
        *,
        max_message_bytes: int = 65536,
        dedupe_window: int = 100_000,
        pending_ttl_seconds: float = 86_400.0,
        pending_max: int = 1_000_000,
        early_label_grace_seconds: float = 30.0,
        offline_log: OfflineFeatureLog | None = None,
        training_log: TrainingLog | None = None,
    ) -> None:
        self.model = model
        self.registry = registry
        self.entities = entities
        self.pending = pending
        self.max_message_bytes = max_message_bytes
        self.dedupe_window = dedupe_window
        self.pending_ttl_seconds = pending_ttl_seconds
        self.pending_max = pending_max
        self.early_label_grace_seconds = early_label_grace_seconds
        self.offline_log = offline_log
        self.training_log = training_log
        self.drift = DriftMonitor()
        self.rollout: Rollout | None = None
        self._recent_event_ids: OrderedDict[str, None] = OrderedDict()
        # Labels published right after their event can overtake it (two topics); they wait here.
        self._early_labels: OrderedDict[str, tuple[Label, bytes, float]] = OrderedDict()

    def handle_event(self, raw: bytes, now: float | None = None) -> EventResult:
        now = time.time() if now is None else now
        event = parse_event(raw, self.max_message_bytes, self.registry.ranges)
        if event.event_id in self._recent_event_ids or event.event_id in self.pending:
            raise InvalidMessage("duplicate_event", f"event_id {event.event_id} was already processed")
        self._remember(event.event_id)
        for name in event.null_features:
            metrics.FEATURE_NULLS.labels(name).inc()
        metrics.EVENT_TIME_LAG.observe(max(0.0, now - event.ts))

        state = apply_event(self.entities.get(event.entity_id), event.ts, event.features, self.registry.aggregates)
        self.entities[event.entity_id] = state
        if self.offline_log is not None:
            self.offline_log.append(event.entity_id, state)
        features = model_features(event.features, state["values"])
        prediction = self._guarded(self.model.predict, features)
        challenger = self.rollout.predict(features) if self.rollout is not None else None
        self.drift.observe(event.features, _drift_score(prediction))
        metrics.EVENTS_PROCESSED.inc()

        label = event.label if event.has_label else None
        if not event.has_label and event.event_id in self._early_labels:
            label = self._early_labels.pop(event.event_id)[0].label
        if event.has_label or label is not None:
            self._learn(event.ts, features, label, prediction, challenger)
            metrics.LABELS_LEARNED.labels("inline" if event.has_label else "labels_topic").inc()
            return EventResult(event, features, prediction, learned=True)

        self.pending[event.event_id] = {
            "features": features,
            "value": prediction.value,
            "proba": _proba_to_json(prediction.proba),
            "predicted_at": now,
            "ts": event.ts,
        }
        if challenger is not None:
            self.pending[event.event_id]["challenger"] = [challenger.value, _proba_to_json(challenger.proba)]
        return EventResult(event, features, prediction, learned=False)

    def handle_label(self, raw: bytes, now: float | None = None) -> bool:
        """Learns from a label; returns False when it waits for an event not seen yet."""
        now = time.time() if now is None else now
        label = parse_label(raw, self.max_message_bytes)
        entry = self.pending.get(label.event_id)
        if entry is None:
            if label.event_id in self._recent_event_ids:
                raise InvalidMessage("duplicate_event", f"event {label.event_id} already has its label")
            self._early_labels[label.event_id] = (label, raw, now + self.early_label_grace_seconds)
            return False
        del self.pending[label.event_id]
        prediction = Prediction(entry["value"], _proba_from_json(entry["proba"]))
        challenger = None
        if "challenger" in entry:
            challenger = Prediction(entry["challenger"][0], _proba_from_json(entry["challenger"][1]))
        self._learn(entry.get("ts", entry["predicted_at"]), entry["features"], label.label, prediction, challenger)
        metrics.LABELS_LEARNED.labels("labels_topic").inc()
        metrics.LABEL_DELAY.observe(max(0.0, now - entry["predicted_at"]))
        return True

    def expire_pending(self, now: float | None = None) -> int:
        """Drops predictions past their TTL or over the bound, counted; returns how many."""
        now = time.time() if now is None else now
        horizon = now - self.pending_ttl_seconds
        expired = [event_id for event_id, entry in self.pending.items() if entry["predicted_at"] < horizon]
        for event_id in expired:
            del self.pending[event_id]
        metrics.PENDING_EXPIRED.labels("ttl").inc(len(expired))
        overflow = max(0, len(self.pending) - self.pending_max)
        if overflow:
            oldest = sorted(self.pending.items(), key=lambda item: item[1]["predicted_at"])[:overflow]
            for event_id, _ in oldest:
                del self.pending[event_id]
            metrics.PENDING_EXPIRED.labels("bound").inc(overflow)
        metrics.PENDING_SIZE.set(len(self.pending))
        return len(expired) + overflow

    def expire_early_labels(self, now: float | None = None) -> list[bytes]:
        """Returns the raw labels whose event never came within the grace period."""
        now = time.time() if now is None else now
        orphans = []
        while self._early_labels:
            event_id, (_, raw, deadline) = next(iter(self._early_labels.items()))
            if deadline > now:
                break
            del self._early_labels[event_id]
            orphans.append(raw)
        return orphans

    def checkpoint(self) -> dict[str, Any]:
        """Everything a snapshot needs to resume exactly here (tables included: after a crash
        they come back from their changelogs at a later point than the snapshot)."""
        return {
            "entities": dict(self.entities.items()),
            "pending": dict(self.pending.items()),
            "recent_event_ids": list(self._recent_event_ids),
            "early_labels": list(self._early_labels.items()),
            "drift": self.drift,
            "rollout": self.rollout,
        }

    def restore(self, state: dict[str, Any]) -> None:
        """Resets in-memory state to a checkpoint. The tables are reset by `restore_tables`,
        once they have been recovered and can take writes."""
        self._recent_event_ids = OrderedDict((event_id, None) for event_id in state["recent_event_ids"])
        self._early_labels = OrderedDict(state["early_labels"])
        self.drift = state["drift"]
        self.rollout = state.get("rollout")

    def restore_tables(self, state: dict[str, Any]) -> None:
        for table, wanted in ((self.entities, state["entities"]), (self.pending, state["pending"])):
            for key in [key for key in table.keys() if key not in wanted]:
                del table[key]
            for key, value in wanted.items():
                table[key] = value

    def _learn(
        self, ts: float, features: dict[str, Any], label: Any, prediction: Prediction, challenger: Prediction | None
    ) -> None:
        self._guarded(self.model.learn, features, label, prediction)
        if self.rollout is not None:
            self.rollout.learn(features, label, prediction, challenger)
        if self.training_log is not None:
            self.training_log.append(ts, features, label)

    @staticmethod
    def _guarded(call: Any, *args: Any) -> Any:
        # A model that cannot take these features (a string into a scaler, say) must not stop the stream.
        try:
            return call(*args)
        except Exception as exc:  # noqa: BLE001 - any model failure is a dead letter, not a crash
            raise InvalidMessage("model_error", f"{type(exc).__name__}: {exc}") from exc

    def _remember(self, event_id: str) -> None:
        self._recent_event_ids[event_id] = None
        if len(self._recent_event_ids) > self.dedupe_window:
            self._recent_event_ids.popitem(last=False)
