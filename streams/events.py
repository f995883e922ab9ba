"""What happens to one partition's batch of events, without Faust or Kafka.

Per event: validate, drop a duplicate, update the entity's features (the row remembers the
offset it last applied, so a replayed event is skipped: rebalances and restarts replay),
predict with the current model, and either hand the example to the learner (label inline)
or emit a prediction record for the join with its label. Per batch: one count of each
kind, a sample of values for the drift statistics.
"""

from __future__ import annotations

import time
from collections import Counter, OrderedDict
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any, Protocol

from models.drift import DriftMonitor
from models.errors import ModelError
from models.examples import INLINE, Example
from models.online import Prediction
from streams.batch_consumer import Record
from streams.dead_letters import DeadLetterReason, InvalidMessage
from streams.features import FeatureRegistry, apply_event, model_features
from streams.records import Contract, Event

RECENT_IDS_PER_ENTITY = 16


class Rows(Protocol):
    def get(self, key: str) -> Any: ...
    def set(self, partition: int, key: str, value: Any) -> None: ...


class ServingModels(Protocol):
    """The models a worker predicts with: the live learner's, or the latest published ones."""

    @property
    def version(self) -> int: ...
    @property
    def samples(self) -> int: ...
    def admit(self, x: dict[str, Any]) -> tuple[dict[str, Any], int]: ...  # the names the model sees
    def predict(self, x: dict[str, Any]) -> Prediction: ...  # raises ModelError
    def predict_challenger(self, x: dict[str, Any]) -> Prediction | None: ...


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


class EventProcessor:
    def __init__(
        self,
        contract: Contract,
        registry: FeatureRegistry,
        rows: Rows,
        models: ServingModels,
        learn: Callable[[Example], bool],
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
        self.models = models
        self.learn = learn
        self.dedupe_window = dedupe_window
        self.drift = drift
        self.drift_sample_every = drift_sample_every
        self.on_row = on_row
        # True when `models` is the learner itself: its prediction can be made again exactly.
        self.fresh_predictions = fresh_predictions
        self._recent_ids: OrderedDict[str, None] = OrderedDict()
        self._seen = 0

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
            row = self.rows.get(event.entity_id)
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
        # What the model sees, and what the example carries: a name past the model's limit
        # is left out here once, not again at every step downstream.
        x, _ = self.models.admit(model_features(event.features, state["values"]))
        try:
            prediction = self.models.predict(x)
        except ModelError as exc:
            outcome.dead_letters.append(DeadLetter(record, DeadLetterReason.MODEL_ERROR, str(exc)))
            return  # features stay as they were: this event never happened for the model
        challenger = self.models.predict_challenger(x)
        state["offset"] = record.offset
        state["recent_ids"] = [*(row or {}).get("recent_ids", ())[-(RECENT_IDS_PER_ENTITY - 1) :], event.event_id]
        self.rows.set(partition, event.entity_id, state)
        self._remember(event.event_id)
        if self.on_row is not None:
            self.on_row(event.entity_id, state)
        outcome.processed += 1
        if event.null_features:
            outcome.nulls.update(event.null_features)
        outcome.max_event_lag = max(outcome.max_event_lag, now - event.ts)
        self._sample_drift(event, prediction)
        source = (record.topic, partition, record.offset)
        if event.has_label:
            example = Example(
                event.event_id,
                event.ts,
                x,
                event.label,
                prediction,
                self.models.version,
                source,
                INLINE,
                now,
                challenger,
                self.fresh_predictions,
                self.models.samples,
            )
            self.learn(example)  # False for one learned before: nothing more to do either way
            return
        prediction_record = {
            "event_id": event.event_id,
            "entity_id": event.entity_id,
            "ts": event.ts,
            "features": x,
            "prediction": prediction.to_record(),
            "model_version": self.models.version,
            "model_samples": self.models.samples,
            "predicted_at": now,
            "source": list(source),
        }
        if challenger is not None:
            prediction_record["challenger"] = challenger.to_record()
        outcome.predictions.append((event.event_id, prediction_record))

    def _sample_drift(self, event: Event, prediction: Prediction) -> None:
        # Every event would cost as much as the model call; a steady sample estimates the same distributions.
        self._seen += 1
        if self.drift is None or self._seen % self.drift_sample_every:
            return
        score = None
        if prediction.proba:
            score = max(prediction.proba.values())
        elif isinstance(prediction.value, (int, float)) and not isinstance(prediction.value, bool):
            score = float(prediction.value)
        self.drift.observe(event.features, score)

    def _remember(self, event_id: str) -> None:
        self._recent_ids[event_id] = None
        if len(self._recent_ids) > self.dedupe_window:
            self._recent_ids.popitem(last=False)
