"""The event and label contracts, and their validation.

A message that breaks the contract raises `InvalidMessage` with a machine-readable
`reason` (one of `REASONS`); the stream sends it to the dead-letter topic and goes on.
"""

from __future__ import annotations

import math
import re
from dataclasses import dataclass
from datetime import datetime
from typing import Any, Mapping

import orjson

REASONS = (
    "oversized",
    "not_json",
    "not_object",
    "missing_field",
    "wrong_type",
    "non_finite",
    "out_of_range",
    "duplicate_event",
    "unknown_event",
    "model_error",
)

NO_LABEL = object()
_NON_FINITE_LITERAL = re.compile(rb"(?<![\w\"])-?(NaN|Infinity)(?![\w\"])")


class InvalidMessage(ValueError):
    def __init__(self, reason: str, detail: str) -> None:
        assert reason in REASONS, reason
        super().__init__(f"{reason}: {detail}")
        self.reason = reason
        self.detail = detail


@dataclass(frozen=True, slots=True)
class Event:
    event_id: str
    entity_id: str
    ts: float
    features: dict[str, Any]
    label: Any = NO_LABEL
    null_features: tuple[str, ...] = ()

    @property
    def has_label(self) -> bool:
        return self.label is not NO_LABEL


@dataclass(frozen=True, slots=True)
class Label:
    event_id: str
    label: Any
    ts: float | None = None


def _load_object(raw: bytes, max_bytes: int) -> dict[str, Any]:
    if len(raw) > max_bytes:
        raise InvalidMessage("oversized", f"{len(raw)} bytes > limit {max_bytes}")
    try:
        data = orjson.loads(raw)
    except orjson.JSONDecodeError as exc:
        # JSON has no NaN or infinity; producers that emit them (Python's json does) get told so.
        if "infinity" in str(exc) or _NON_FINITE_LITERAL.search(raw):
            raise InvalidMessage("non_finite", f"NaN or infinite number: {exc}") from None
        raise InvalidMessage("not_json", str(exc)) from None
    if not isinstance(data, dict):
        raise InvalidMessage("not_object", f"expected a JSON object, got {type(data).__name__}")
    return data


def _identifier(data: Mapping[str, Any], name: str) -> str:
    if name not in data:
        raise InvalidMessage("missing_field", name)
    value = data[name]
    if isinstance(value, bool) or not isinstance(value, (str, int)) or value == "":
        raise InvalidMessage("wrong_type", f"{name} must be a non-empty string or an integer")
    return str(value)


def _timestamp(value: Any, name: str) -> float:
    """Event time as epoch seconds; accepts a number or an ISO-8601 string."""
    if isinstance(value, bool):
        raise InvalidMessage("wrong_type", f"{name} must be epoch seconds or an ISO-8601 string")
    if isinstance(value, (int, float)):
        if not math.isfinite(value):
            raise InvalidMessage("non_finite", name)
        return float(value)
    if isinstance(value, str):
        try:
            return datetime.fromisoformat(value).timestamp()
        except ValueError:
            raise InvalidMessage("wrong_type", f"{name} is not an ISO-8601 time: {value!r}") from None
    raise InvalidMessage("wrong_type", f"{name} must be epoch seconds or an ISO-8601 string")


def _label(value: Any) -> Any:
    if value is None or isinstance(value, (dict, list)):
        raise InvalidMessage("wrong_type", "label must be a number, a string or a boolean")
    if isinstance(value, float) and not math.isfinite(value):
        raise InvalidMessage("non_finite", "label")
    return value


def validate_features(
    features: Any, ranges: Mapping[str, tuple[float, float]], field: str = "features"
) -> tuple[dict[str, Any], tuple[str, ...]]:
    """Checks feature values; returns the usable features and the names that were null.

    Null means missing: River models handle absent features, so nulls are dropped and counted.
    """
    if not isinstance(features, dict):
        raise InvalidMessage("wrong_type", f"{field} must be an object of name -> number/string/boolean")
    clean: dict[str, Any] = {}
    nulls: list[str] = []
    for name, value in features.items():
        if value is None:
            nulls.append(name)
            continue
        if isinstance(value, float):
            if not math.isfinite(value):
                raise InvalidMessage("non_finite", f"{field}.{name}")
        elif not isinstance(value, (int, str, bool)):
            raise InvalidMessage("wrong_type", f"{field}.{name} must be a number, a string or a boolean")
        bounds = ranges.get(name)
        if bounds is not None:
            if isinstance(value, (str, bool)):
                raise InvalidMessage("wrong_type", f"{field}.{name} must be a number")
            low, high = bounds
            if not low <= value <= high:
                raise InvalidMessage("out_of_range", f"{field}.{name}={value} outside [{low}, {high}]")
        clean[name] = value
    return clean, tuple(nulls)


def parse_event(raw: bytes, max_bytes: int, ranges: Mapping[str, tuple[float, float]]) -> Event:
    data = _load_object(raw, max_bytes)
    event_id = _identifier(data, "event_id")
    entity_id = _identifier(data, "entity_id")
    if "ts" not in data:
        raise InvalidMessage("missing_field", "ts")
    ts = _timestamp(data["ts"], "ts")
    if "features" not in data:
        raise InvalidMessage("missing_field", "features")
    features, nulls = validate_features(data["features"], ranges)
    label = _label(data["label"]) if data.get("label") is not None else NO_LABEL
    return Event(event_id, entity_id, ts, features, label, nulls)


def parse_label(raw: bytes, max_bytes: int) -> Label:
    data = _load_object(raw, max_bytes)
    event_id = _identifier(data, "event_id")
    if "label" not in data:
        raise InvalidMessage("missing_field", "label")
    label = _label(data["label"])
    ts = _timestamp(data["ts"], "ts") if data.get("ts") is not None else None
    return Label(event_id, label, ts)
