"""Labels meet their predictions: a keyed join of the predictions and labels topics.

Both topics are keyed by event id and co-partitioned, so an event's prediction and its
label reach the same worker, whose join table (changelogged) holds whichever came first:
a prediction waits up to `PENDING_TTL_SECONDS` for its label, a label up to
`EARLY_LABEL_GRACE_SECONDS` for its prediction, then it is dead-lettered as
`unknown_event`. When they meet, the example (features as they were when the prediction
was made, so nothing leaks) goes to the learner of each model that predicted it, with the
model's target of the label. The first prediction of an event is the one kept: a replay
after a restart predicts again, possibly with a newer model.
"""

from __future__ import annotations

import time
from collections import Counter, OrderedDict
from collections.abc import Iterator
from dataclasses import dataclass, field
from typing import Any

import orjson

from models.examples import LABELS_TOPIC, Example
from models.named import MISSING
from models.online import Prediction
from streams.batch_consumer import Record
from streams.dead_letters import DeadLetterReason, InvalidMessage
from streams.events import DeadLetter, ModelLane
from streams.records import Contract


@dataclass
class JoinOutcome:
    waiting_labels: int = 0
    dead_letters: list[DeadLetter] = field(default_factory=list)
    label_delays: list[float] = field(default_factory=list)
    missing_targets: Counter = field(default_factory=Counter)  # by model: labels without its target


@dataclass
class Expiry:
    predictions: int = 0  # past their TTL
    evicted: int = 0  # over the bound, oldest first
    dead_letters: list[DeadLetter] = field(default_factory=list)  # labels whose event never came


class Join:
    def __init__(
        self,
        contract: Contract,
        table: Any,
        lanes: list[ModelLane],
        *,
        pending_ttl_seconds: float = 86_400.0,
        pending_max: int = 1_000_000,
        early_label_grace_seconds: float = 30.0,
        recent_window: int = 100_000,
    ) -> None:
        self.contract = contract
        self.table = table
        self.lanes = lanes
        self.pending_ttl_seconds = pending_ttl_seconds
        self.pending_max = pending_max
        self.early_label_grace_seconds = early_label_grace_seconds
        self.recent_window = recent_window
        self._joined: OrderedDict[str, None] = OrderedDict()

    def on_predictions(self, partition: int, records: list[Record], now: float | None = None) -> JoinOutcome:
        now = time.time() if now is None else now
        outcome = JoinOutcome()
        for record in records:
            prediction = orjson.loads(record.value or b"null")
            event_id = prediction["event_id"]
            if event_id in self._joined:
                continue  # a replayed prediction of an event already learned
            entry = self.table.get(event_id)
            if entry is None:
                self.table.set(partition, event_id, {"prediction": prediction, "at": now, "p": partition})
            elif "prediction" in entry:
                # Another model's prediction of the same event (a client asked it over HTTP):
                # kept beside the first ones, each model's first prediction wins.
                merged = _merged(entry["prediction"], prediction, self.lanes[0].name)
                if merged is not None:
                    self.table.set(partition, event_id, {**entry, "prediction": merged})
            elif "label" in entry:
                self._meet(
                    partition, prediction, entry["label"], (record.topic, partition, record.offset), now, outcome
                )
        return outcome

    def on_labels(self, partition: int, records: list[Record], now: float | None = None) -> JoinOutcome:
        now = time.time() if now is None else now
        outcome = JoinOutcome()
        for record in records:
            try:
                label = self.contract.label(record.value or b"")
                entry = self.table.get(label.event_id)
                if label.event_id in self._joined or (entry is not None and "label" in entry):
                    raise InvalidMessage(
                        DeadLetterReason.DUPLICATE_EVENT, f"event {label.event_id} already has its label"
                    )
            except InvalidMessage as exc:
                outcome.dead_letters.append(DeadLetter(record, exc.reason, exc.detail))
                continue
            source = (record.topic, partition, record.offset)
            if entry is None:
                self.table.set(
                    partition,
                    label.event_id,
                    {
                        "label": label.label,
                        "at": now,
                        "p": partition,
                        "source": list(source),
                        "raw": (record.value or b"").decode(),
                        "headers": [[k, v.decode("latin-1")] for k, v in record.headers],
                    },
                )
                outcome.waiting_labels += 1
                continue
            self._meet(partition, entry["prediction"], label.label, source, now, outcome)
        return outcome

    def _meet(
        self,
        partition: int,
        prediction: dict[str, Any],
        label: Any,
        source: tuple[str, int, int],
        now: float,
        outcome: JoinOutcome,
    ) -> None:
        event_id = prediction["event_id"]
        self.table.delete(partition, event_id)
        self._joined[event_id] = None
        if len(self._joined) > self.recent_window:
            self._joined.popitem(last=False)
        entries = _entries(prediction, self.lanes[0].name)
        learned = False
        for lane in self.lanes:
            entry = entries.get(lane.name)
            if entry is None:
                continue  # this model did not answer it (an HTTP client asked another one)
            y = lane.model.label_of(label)
            if y is MISSING:
                outcome.missing_targets[lane.name] += 1
                continue
            challenger = entry.get("challenger")
            example = Example(
                event_id=event_id,
                ts=prediction["ts"],
                features=entry.get("features", prediction["features"]),
                label=y,
                prediction=Prediction.from_record(entry["prediction"]),
                model_version=entry["model_version"],
                source=source,
                label_source=LABELS_TOPIC,
                predicted_at=entry.get("predicted_at", prediction["predicted_at"]),
                challenger=None if challenger is None else Prediction.from_record(challenger),
                model_samples=entry.get("model_samples", 0),
                served=bool(entry.get("served", prediction.get("served"))),
            )
            learned = lane.models.learn(example) or learned
        if learned:
            outcome.label_delays.append(max(0.0, now - prediction["predicted_at"]))

    def expire(self, now: float | None = None) -> Expiry:
        """Drops predictions past their TTL or over the bound; dead-letters labels past their grace."""
        now = time.time() if now is None else now
        expiry = Expiry()
        predictions: list[tuple[float, str, int]] = []
        for event_id, entry in list(self._entries()):
            if "label" in entry:
                if entry["at"] + self.early_label_grace_seconds <= now:
                    self.table.delete(entry["p"], event_id)
                    expiry.dead_letters.append(_unknown_event(entry))
            elif entry["at"] + self.pending_ttl_seconds <= now:
                self.table.delete(entry["p"], event_id)
                expiry.predictions += 1
            else:
                predictions.append((entry["at"], event_id, entry["p"]))
        overflow = len(predictions) - self.pending_max
        if overflow > 0:
            for _, event_id, partition in sorted(predictions)[:overflow]:
                self.table.delete(partition, event_id)
            expiry.evicted = overflow
        return expiry

    def pending_predictions(self) -> int:
        return sum(1 for _, entry in self._entries() if "prediction" in entry)

    def _entries(self) -> Iterator[tuple[str, dict[str, Any]]]:
        return iter(self.table.items())


def _entries(record: dict[str, Any], default: str) -> dict[str, Any]:
    """Each model's part of a prediction record, by model name. The single model of an engine
    without MODELS writes its prediction at the record's top level."""
    entries = record.get("models")
    return entries if entries is not None else {default: record}


def _merged(first: dict[str, Any], later: dict[str, Any], default: str) -> dict[str, Any] | None:
    """`first` with the models only `later` predicted (each entry with its own features, time
    and served flag: they are another moment's); None when `later` adds no model."""
    known = _entries(first, default)
    added = {name: entry for name, entry in _entries(later, default).items() if name not in known}
    if not added:
        return None
    base = {
        k: v for k, v in first.items() if k in ("event_id", "entity_id", "ts", "features", "predicted_at", "source")
    }
    models = {name: _standalone(entry, first) for name, entry in known.items()}
    models.update((name, _standalone(entry, later)) for name, entry in added.items())
    return {**base, "models": models}


def _standalone(entry: dict[str, Any], record: dict[str, Any]) -> dict[str, Any]:
    """A model's entry that carries what it otherwise takes from its record."""
    part: dict[str, Any] = {
        k: entry[k] for k in ("prediction", "model_version", "model_samples", "challenger") if k in entry
    }
    part["features"] = entry.get("features", record["features"])
    part["predicted_at"] = entry.get("predicted_at", record["predicted_at"])
    if entry.get("served", record.get("served")):
        part["served"] = entry.get("served", record.get("served"))
    return part


def _unknown_event(entry: dict[str, Any]) -> DeadLetter:
    topic, partition, offset = entry["source"]
    headers = tuple((k, v.encode("latin-1")) for k, v in entry.get("headers", ()))
    record = Record(topic, partition, offset, None, entry["raw"].encode(), headers, None)
    return DeadLetter(record, DeadLetterReason.UNKNOWN_EVENT, "no event with this event_id arrived")
