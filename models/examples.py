"""A labelled example: what the model learns from, and what the examples log carries.

It holds the features *as they were when the prediction was made* and that prediction,
so learning from it later leaks nothing, and the progressive metrics score what users
were actually answered.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any, cast

import msgspec
import orjson

from models.online import Prediction

INLINE = "inline"
LABELS_TOPIC = "labels_topic"

Source = tuple[str, int, int]  # (topic, partition, offset) of the record that completed the example


# A struct: built in C (0.1 µs against a dataclass's 0.27), not tracked by the collector
# (it refers to no container that refers back to it). Treat instances as immutable all the
# same; `msgspec.structs.replace` gives a changed copy.
class Example(msgspec.Struct, gc=False):
    event_id: str
    ts: float
    features: dict[str, Any]
    label: Any
    prediction: Prediction
    model_version: int
    source: Source
    label_source: str = INLINE
    predicted_at: float = 0.0
    challenger: Prediction | None = None
    # The prediction was made by the learner's own model right before it learned this
    # example (labels inline, in the process that learns): it can be made again exactly.
    fresh: bool = False
    # How many samples the predicting model had learned: the learner's own count minus this
    # is how far behind the model that answered was (0 when the learner predicts itself).
    model_samples: int = 0
    # The prediction is what an HTTP client was answered (POST /predict with an event_id),
    # not one the stream made: it is scored in the served metrics, not the stream's.
    served: bool = False
    # No one predicted it yet (a labelled event, from a worker apart from the learner): the
    # learner predicts it right before learning it, as progressive validation does, and
    # learns the example with that prediction (`fresh`); its logs keep this one as it came.
    learner_predicts: bool = False

    def encode(self, features: msgspec.Raw | None = None) -> bytes:
        """The example as the examples topic and the training log hold it: `to_record`'s
        document, key for key, encoded from a struct without building the dicts.
        `features`: this example's features already encoded (see `encode_examples`)."""
        prediction = self.prediction
        challenger = self.challenger
        return _ENCODER.encode(
            _ExampleRecord(
                self.event_id,
                self.ts,
                # A Raw is written as the JSON it holds, in the dict's place (the field is typed
                # for decoding).
                self.features if features is None else cast(dict[str, Any], features),
                self.label,
                _PredictionRecord(prediction.value, _pairs(prediction.proba)),
                self.model_version,
                self.source,
                self.label_source,
                self.predicted_at,
                None if challenger is None else _PredictionRecord(challenger.value, _pairs(challenger.proba)),
                self.fresh,
                self.model_samples,
                self.served,
                self.learner_predicts,
            )
        )

    def to_record(self) -> dict[str, Any]:
        record = {
            "event_id": self.event_id,
            "ts": self.ts,
            "features": self.features,
            "label": self.label,
            "prediction": self.prediction.to_record(),
            "model_version": self.model_version,
            "source": list(self.source),
            "label_source": self.label_source,
            "predicted_at": self.predicted_at,
        }
        if self.challenger is not None:
            record["challenger"] = self.challenger.to_record()
        if self.fresh:
            record["fresh"] = True
        if self.model_samples:
            record["model_samples"] = self.model_samples
        if self.served:
            record["served"] = True
        if self.learner_predicts:
            record["learner_predicts"] = True
        return record

    @classmethod
    def decode(cls, raw: bytes) -> Example:
        """The example an examples-topic record holds: `from_record(orjson.loads(raw))`,
        decoded in C straight into the record's shape (0.9 against 2.0 µs an example, on
        the learner's hot path). A record of another shape (one written before a field it
        requires existed) goes the general way."""
        try:
            record = _DECODER.decode(raw)
        except (msgspec.DecodeError, ValueError):
            return cls.from_record(orjson.loads(raw))
        challenger = record.challenger
        return cls(
            record.event_id,
            record.ts,
            record.features,
            record.label,
            record.prediction.to_prediction(),
            record.model_version,
            record.source,
            record.label_source,
            record.predicted_at,
            None if challenger is None else challenger.to_prediction(),
            record.fresh,
            record.model_samples,
            record.served,
            record.learner_predicts,
        )

    @classmethod
    def from_record(cls, record: dict[str, Any]) -> Example:
        topic, partition, offset = record["source"]
        challenger = record.get("challenger")
        return cls(
            event_id=record["event_id"],
            ts=record["ts"],
            features=record["features"],
            label=record["label"],
            prediction=Prediction.from_record(record["prediction"]),
            model_version=record["model_version"],
            source=(topic, partition, offset),
            label_source=record.get("label_source", INLINE),
            predicted_at=record.get("predicted_at", 0.0),
            challenger=None if challenger is None else Prediction.from_record(challenger),
            fresh=record.get("fresh", False),
            model_samples=record.get("model_samples", 0),
            served=record.get("served", False),
            learner_predicts=record.get("learner_predicts", False),
        )


# The encoded example, field for field as `Example.to_record` writes it (the fields with a
# default are left out at their default, as there). Building and encoding this struct costs
# less than building the record's dicts and encoding those (1.17 against 1.85 µs an example),
# and its bytes are exactly as long as the document: nothing to copy down
# (models/json_bytes.py).
class _PredictionRecord(msgspec.Struct, gc=False):
    value: Any
    proba: list[tuple[Any, Any]] | None  # Any: decoded as written (an int stays an int)

    def to_prediction(self) -> Prediction:
        pairs = self.proba
        return Prediction(self.value, None if pairs is None else {label: p for label, p in pairs})


class _ExampleRecord(msgspec.Struct, omit_defaults=True, gc=False):
    event_id: str
    ts: float
    features: dict[str, Any]
    label: Any
    prediction: _PredictionRecord
    model_version: int
    source: Source
    label_source: str
    predicted_at: float
    challenger: _PredictionRecord | None = None
    fresh: bool = False
    model_samples: int = 0
    served: bool = False
    learner_predicts: bool = False


def encode_examples(learned: Sequence[Sequence[Example]]) -> list[list[bytes]]:
    """Each model's examples of a batch, encoded. Several models learning one event admit
    its features alike, into the same dict: that dict is encoded once and its JSON spliced
    into every model's example (the features are about half of an example's encoding)."""
    if len(learned) == 1:
        return [[example.encode() for example in learned[0]]]
    # By identity: every example, so every dict, lives until the batch is encoded.
    encoded_features: dict[int, msgspec.Raw] = {}
    encoded = []
    for examples in learned:
        values = []
        for example in examples:
            features = encoded_features.get(id(example.features))
            if features is None:
                features = encoded_features[id(example.features)] = msgspec.Raw(_ENCODER.encode(example.features))
            values.append(example.encode(features))
        encoded.append(values)
    return encoded


def _pairs(proba: dict[Any, float] | None) -> list[tuple[Any, float]] | None:
    """Class labels may be booleans or numbers: probabilities are [label, p] pairs."""
    return None if proba is None else list(proba.items())


def _plain(value: Any) -> Any:
    """NumPy numbers and arrays, which River may answer, as the Python values they hold."""
    tolist = getattr(value, "tolist", None)
    if tolist is None:
        raise NotImplementedError(f"cannot encode {type(value).__name__} in an example")
    return tolist()


_ENCODER = msgspec.json.Encoder(enc_hook=_plain)
_DECODER = msgspec.json.Decoder(_ExampleRecord)
