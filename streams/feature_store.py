"""The feature store API over the online entity table."""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from typing import Any, Protocol

from streams.features import FeatureDefinition, FeatureRegistry


class Entities(Protocol):
    """Entity states by id: a FeatureReplica in serving processes, a plain mapping in tests."""

    def get(self, entity_id: str, /) -> Any: ...


class FeatureStore:
    def __init__(self, registry: FeatureRegistry, entities: Entities) -> None:
        self.registry = registry
        self.entities = entities

    def get_online_features(self, entity_ids: Iterable[str]) -> list[dict[str, Any]]:
        """One row per entity: its feature values now, with the event time of the last update."""
        rows = []
        for entity_id in entity_ids:
            state = self.entities.get(entity_id)
            rows.append(
                {
                    "entity_id": entity_id,
                    "known": state is not None,
                    "values": dict(state["values"]) if state else {},
                    "updated_at": state["updated_at"] if state else None,
                    "version": state["version"] if state else 0,
                }
            )
        return rows

    def register_feature(self, definition: FeatureDefinition | Mapping[str, Any]) -> FeatureDefinition:
        return self.registry.register(definition)
