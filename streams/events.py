"""What happens to one partition's batch of events, without Faust or Kafka.

Per event: validate, drop a duplicate, update the entity's features (the row remembers the
offset it last applied, so a replayed event is skipped: rebalances and restarts replay),
predict with each model, and either hand each model its example (label inline: the model's
target of it) or emit one prediction record, with every model's prediction, for the join
with its label. Per batch: one count of each kind, a sample of values for the drift
statistics.
"""

from __future__ import annotations

import time
from collections import Counter
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any, Protocol

from models.drift import DriftMonitor
from models.errors import ModelError
from models.examples import INLINE, Example
from models.named import MISSING, NamedModel
from models.online import Prediction
from models.recent_ids import RecentIds
from streams.batch_consumer import Record
from streams.dead_letters import DeadLetterReason, InvalidMessage
from streams.features import FeatureRegistry, apply_event, model_features
from streams.records import Contract, Event

RECENT_IDS_PER_ENTITY = 16
UNPREDICTED = Prediction(None)  # a labelled event's, where the learner apart predicts it


class Rows(Protocol):
    def get(self, key: str, partition: int | None = None) -> Any: ...  # partition: where to look first
    def set(self, partition: int, key: str, value: Any) -> None: ...


class ServingModels(Protocol):
    """The models a worker predicts with: the live learner's, or the latest published ones."""

    # False when the learner is apart: it predicts each labelled event itself, right before
    # learning it (exact progressive validation), and the worker leaves it unpredicted.
    predicts_labelled: bool

    @property
    def version(self) -> int: ...
    @property
    def samples(self) -> int: ...
    def admit(self, x: dict[str, Any]) -> tuple[dict[str, Any], int]: ...  # the names the model sees
    def predict(self, x: dict[str, Any]) -> Prediction: ...  # raises ModelError
    def predict_challenger(self, x: dict[str, Any]) -> Prediction | None: ...
    def learn(self, example: Example) -> bool: ...  # False for an example learned before


@dataclass(frozen=True, slots=True)
class ModelLane:
    """One named model as the stream sees it: what it predicts with and learns."""

    model: NamedModel
    models: ServingModels

    @property
    def name(self) -> str:
        return self.model.name


def prediction_entry(lane: ModelLane, x: dict[str, Any], shared: dict[str, Any], prediction: Prediction) -> dict:
    """One model's part of a prediction record: its answer, and its features when its
    feature-name limit left some of the shared ones out."""
    entry: dict[str, Any] = {
        "prediction": prediction.to_record(),
        "model_version": lane.models.version,
        "model_samples": lane.models.samples,
    }
    if x is not shared:
        entry["features"] = x
    return entry


@dataclass(frozen=True, slots=True)
class DeadLetter:
    record: Record
    reason: DeadLetterReason
    detail: str
    value: bytes | None = None  # what to send instead of the record's own bytes


@dataclass
class EventOutcome:
    processed: int = 0
    replayed: int = 0
    predictions: list[tuple[str, dict[str, Any]]] = field(default_factory=list)  # (event id, record)
    dead_letters: list[DeadLetter] = field(default_factory=list)
    nulls: Counter = field(default_factory=Counter)
    max_event_lag: float = 0.0
    missing_targets: Counter = field(default_factory=Counter)  # by model: labels without its target


class EventProcessor:
    def __init__(
        self,
        contract: Contract,
        registry: FeatureRegistry,
        rows: Rows,
        lanes: list[ModelLane],
        *,
        dedupe_window: int = 100_000,
        drift: DriftMonitor | None = None,
        drift_sample_every: int = 16,
        on_row: Callable[[str, dict[str, Any]], None] | None = None,
        fresh_predictions: bool = False,
    ) -> None:
        self.contract = contract
        self.registry = registry
        self.rows = rows
        self.lanes = lanes
        self.dedupe_window = dedupe_window
        self.drift = drift
        self.drift_sample_every = drift_sample_every
        self.on_row = on_row
        # True when the lanes' models are the learners themselves: a prediction can be made again exactly.
        self.fresh_predictions = fresh_predictions
        self._recent_ids = RecentIds(dedupe_window)
        self._seen = 0
        self._flat = len(lanes) == 1 and not lanes[0].model.scoped

    def process(self, partition: int, records: list[Record], now: float | None = None) -> EventOutcome:
        now = time.time() if now is None else now
        outcome = EventOutcome()
        aggregates = self.registry.aggregates
        for record in records:
            try:
                event = self.contract.event(record.value or b"", now)
            except InvalidMessage as exc:
                outcome.dead_letters.append(DeadLetter(record, exc.reason, exc.detail))
                continue
            row = self.rows.get(event.entity_id, partition)
            if row is not None and row.get("offset", -1) >= record.offset:
                outcome.replayed += 1  # applied before a restart or a rebalance
                continue
            try:
                self._check_duplicate(event, row)
            except InvalidMessage as exc:
                outcome.dead_letters.append(DeadLetter(record, exc.reason, exc.detail))
                continue
            self._handle(event, record, partition, row, aggregates, now, outcome)
        return outcome

    def _check_duplicate(self, event: Event, row: Any) -> None:
        if event.event_id in self._recent_ids:
            raise InvalidMessage(DeadLetterReason.DUPLICATE_EVENT, f"event_id {event.event_id} was already processed")
        if row is not None and event.event_id in row.get("recent_ids", ()):
            raise InvalidMessage(DeadLetterReason.DUPLICATE_EVENT, f"event_id {event.event_id} was already processed")

    def _handle(
        self,
        event: Event,
        record: Record,
        partition: int,
        row: Any,
        aggregates: list,
        now: float,
        outcome: EventOutcome,
    ) -> None:
        state = apply_event(row, event.ts, event.features, aggregates)
        shared = model_features(event.features, state["values"])
        answers: list[tuple[ModelLane, dict[str, Any], Prediction, Prediction | None]] = []
        labelled = event.has_label
        for lane in self.lanes:
            models = lane.models
            # What the model sees, and what the example carries: a name past the model's limit
            # is left out here once, not again at every step downstream.
            x, _ = models.admit(shared)
            if labelled and not models.predicts_labelled:
                answers.append((lane, x, UNPREDICTED, None))
                continue
            try:
                prediction = models.predict(x)
            except ModelError as exc:
                detail = str(exc) if len(self.lanes) == 1 else f"model {lane.name}: {exc}"
                outcome.dead_letters.append(DeadLetter(record, DeadLetterReason.MODEL_ERROR, detail))
                return  # features stay as they were: this event never happened for the models
            answers.append((lane, x, prediction, models.predict_challenger(x)))
        state["offset"] = record.offset
        state["recent_ids"] = [*(row or {}).get("recent_ids", ())[-(RECENT_IDS_PER_ENTITY - 1) :], event.event_id]
        self.rows.set(partition, event.entity_id, state)
        self._recent_ids.add(event.event_id)
        if self.on_row is not None:
            self.on_row(event.entity_id, state)
        outcome.processed += 1
        if event.null_features:
            outcome.nulls.update(event.null_features)
        outcome.max_event_lag = max(outcome.max_event_lag, now - event.ts)
        # Every event would cost as much as the model call; a steady sample estimates the same distributions.
        self._seen += 1
        if self.drift is not None and not self._seen % self.drift_sample_every:
            self._sample_drift(event, answers[0][2])
        source = (record.topic, partition, record.offset)
        if event.has_label:
            for lane, x, prediction, challenger in answers:
                y = lane.model.label_of(event.label)
                if y is MISSING:
                    outcome.missing_targets[lane.name] += 1
                    continue
                example = Example(
                    event.event_id,
                    event.ts,
                    x,
                    y,
                    prediction,
                    lane.models.version,
                    source,
                    INLINE,
                    now,
                    challenger,
                    self.fresh_predictions,
                    lane.models.samples,
                    learner_predicts=prediction is UNPREDICTED,
                )
                lane.models.learn(example)  # False for one learned before: nothing more to do either way
            return
        entries = {}
        for lane, x, prediction, challenger in answers:
            entry = prediction_entry(lane, x, shared, prediction)
            if challenger is not None:
                entry["challenger"] = challenger.to_record()
            entries[lane.name] = entry
        prediction_record: dict[str, Any] = {
            "event_id": event.event_id,
            "entity_id": event.entity_id,
            "ts": event.ts,
            "features": shared,
            "predicted_at": now,
            "source": list(source),
        }
        if self._flat:
            # The single model of an engine without MODELS: the record as it always was.
            (entry,) = entries.values()
            prediction_record["features"] = entry.pop("features", shared)
            prediction_record.update(entry)
        else:
            prediction_record["models"] = entries
        outcome.predictions.append((event.event_id, prediction_record))

    def _sample_drift(self, event: Event, prediction: Prediction) -> None:
        assert self.drift is not None
        score = None
        if prediction.proba:
            score = max(prediction.proba.values())
        elif isinstance(prediction.value, (int, float)) and not isinstance(prediction.value, bool):
            score = float(prediction.value)
        self.drift.observe(event.features, score)
