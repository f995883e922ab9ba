"""Declared features: validation ranges for raw features and per-entity streaming aggregates.

A definition is a plain dict (from a JSON file or `register_feature`):

    {"name": "amount", "kind": "raw", "min": 0, "max": 100000}
    {"name": "amount_mean_1h", "kind": "aggregate", "source": "amount", "agg": "mean", "window_seconds": 3600}
    {"name": "events_10m", "kind": "aggregate", "agg": "count", "window_seconds": 600}
    {"name": "gap", "kind": "aggregate", "agg": "seconds_since_last"}

Entity state is a JSON-serialisable dict, so it lives in a changelogged Faust table and
the same functions rebuild it offline.
"""

from __future__ import annotations

import math
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from typing import Any

from models.errors import EngineError

AGGREGATIONS = ("count", "sum", "mean", "min", "max", "last", "seconds_since_last")
NEEDS_SOURCE = {"sum", "mean", "min", "max", "last"}
MAX_HISTORY = 10_000  # per entity and source: bounds memory when windows are long and entities hot


class FeatureDefinitionError(EngineError, ValueError):
    pass


@dataclass(frozen=True)
class FeatureDefinition:
    name: str
    kind: str  # "raw" or "aggregate"
    source: str | None = None
    agg: str | None = None
    window_seconds: float | None = None
    min: float | None = None
    max: float | None = None

    @classmethod
    def from_dict(cls, data: Mapping[str, Any]) -> FeatureDefinition:
        if not isinstance(data, Mapping):
            raise FeatureDefinitionError("a feature definition must be an object")
        unknown = set(data) - {"name", "kind", "source", "agg", "window_seconds", "min", "max"}
        if unknown:
            raise FeatureDefinitionError(f"unknown keys in feature definition: {sorted(unknown)}")
        name = data.get("name")
        if not isinstance(name, str) or not name:
            raise FeatureDefinitionError("feature definition needs a non-empty string 'name'")
        kind = data.get("kind", "aggregate" if "agg" in data else "raw")
        definition = cls(
            name=name,
            kind=kind,
            source=data.get("source"),
            agg=data.get("agg"),
            window_seconds=None if data.get("window_seconds") is None else float(data["window_seconds"]),
            min=data.get("min"),
            max=data.get("max"),
        )
        definition.check()
        return definition

    def check(self) -> None:
        if self.kind == "raw":
            for bound in (self.min, self.max):
                if bound is not None and (isinstance(bound, bool) or not isinstance(bound, (int, float))):
                    raise FeatureDefinitionError(f"{self.name}: min/max must be numbers")
            return
        if self.kind != "aggregate":
            raise FeatureDefinitionError(f"{self.name}: kind must be 'raw' or 'aggregate'")
        if self.agg not in AGGREGATIONS:
            raise FeatureDefinitionError(f"{self.name}: agg must be one of {AGGREGATIONS}")
        if self.agg in NEEDS_SOURCE and not self.source:
            raise FeatureDefinitionError(f"{self.name}: agg {self.agg!r} needs a 'source' feature")
        if self.window_seconds is not None and not (self.window_seconds > 0 and math.isfinite(self.window_seconds)):
            raise FeatureDefinitionError(f"{self.name}: window_seconds must be a positive number")


class FeatureRegistry:
    """The declared features; aggregates are computed in declaration order."""

    def __init__(self, definitions: Iterable[FeatureDefinition | Mapping[str, Any]] = ()) -> None:
        self._definitions: dict[str, FeatureDefinition] = {}
        for definition in definitions:
            self.register(definition)

    def register(self, definition: FeatureDefinition | Mapping[str, Any]) -> FeatureDefinition:
        if not isinstance(definition, FeatureDefinition):
            definition = FeatureDefinition.from_dict(definition)
        definition.check()  # a definition built in code is held to the same rules as one read from JSON
        if definition.name in self._definitions and self._definitions[definition.name] != definition:
            raise FeatureDefinitionError(f"feature {definition.name!r} is already registered differently")
        self._definitions[definition.name] = definition
        return definition

    @property
    def definitions(self) -> list[FeatureDefinition]:
        return list(self._definitions.values())

    @property
    def ranges(self) -> dict[str, tuple[float, float]]:
        return {
            d.name: (-math.inf if d.min is None else d.min, math.inf if d.max is None else d.max)
            for d in self._definitions.values()
            if d.kind == "raw" and (d.min is not None or d.max is not None)
        }

    @property
    def aggregates(self) -> list[FeatureDefinition]:
        return [d for d in self._definitions.values() if d.kind == "aggregate"]


def new_entity_state() -> dict[str, Any]:
    return {"version": 0, "updated_at": None, "last_ts": None, "history": {}, "values": {}}


def _history_key(definition: FeatureDefinition) -> str:
    return definition.source or ""


def apply_event(
    state: Mapping[str, Any] | None,
    ts: float,
    features: Mapping[str, Any],
    aggregates: list[FeatureDefinition],
) -> dict[str, Any]:
    """Returns the entity's state after one event, with its materialised feature values.

    Pure: the same events in the same order give the same state online and offline.
    Windows end at the event's own time and include the event.
    """
    previous = new_entity_state() if state is None else state
    if not aggregates:  # the common case without declared aggregates: nothing to keep or compute
        last = previous["last_ts"]
        return {
            "version": previous["version"] + 1,
            "updated_at": ts,
            "last_ts": ts if last is None or ts > last else last,
            "history": {},
            "values": {},
        }
    history = {source: list(points) for source, points in previous["history"].items()}
    longest: dict[str, float] = {}
    for definition in aggregates:
        if definition.agg == "seconds_since_last":
            continue
        key = _history_key(definition)
        window = math.inf if definition.window_seconds is None else definition.window_seconds
        longest[key] = max(longest.get(key, 0.0), window)
    for key, window in longest.items():
        value = 1 if key == "" else features.get(key)
        if key != "" and (not isinstance(value, (int, float)) or isinstance(value, bool)):
            continue
        points = history.setdefault(key, [])
        points.append([ts, value])
        horizon = ts - window
        points[:] = [p for p in points if p[0] > horizon][-MAX_HISTORY:]

    values: dict[str, Any] = {}
    for definition in aggregates:
        if definition.agg == "seconds_since_last":
            last = previous["last_ts"]
            values[definition.name] = None if last is None else ts - last
            continue
        assert definition.agg is not None  # check() admits aggregates only with an agg of AGGREGATIONS
        window = math.inf if definition.window_seconds is None else definition.window_seconds
        points = [v for t, v in history.get(_history_key(definition), ()) if ts - window < t <= ts]
        values[definition.name] = _aggregate(definition.agg, points)
    last_ts = ts if previous["last_ts"] is None else max(ts, previous["last_ts"])
    return {
        "version": previous["version"] + 1,
        "updated_at": ts,
        "last_ts": last_ts,
        "history": history,
        "values": values,
    }


def _aggregate(agg: str, values: list[float]) -> float | None:
    if agg == "count":
        return float(len(values))
    if not values:
        return None
    if agg == "sum":
        return float(math.fsum(values))
    if agg == "mean":
        return math.fsum(values) / len(values)
    if agg == "min":
        return float(min(values))
    if agg == "max":
        return float(max(values))
    return float(values[-1])  # last


def model_features(event_features: dict[str, Any], entity_values: Mapping[str, Any]) -> dict[str, Any]:
    """What the model sees: the event's own features first (their order matters to float sums),
    then the entity's aggregates that have a value. Without aggregates, the event's own dict,
    not a copy: nothing downstream (the models, the examples, the records) changes it."""
    if not entity_values:
        return event_features
    joined = dict(event_features)
    for name, value in entity_values.items():
        if value is not None:
            joined[name] = value
    return joined
