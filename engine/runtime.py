"""The objects one engine process shares between the stream and the API."""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Mapping

from engine.settings import Settings
from models.online import OnlineModel
from streams.features import FeatureRegistry


def load_feature_registry(path: str) -> FeatureRegistry:
    if not path:
        return FeatureRegistry()
    definitions = json.loads(Path(path).read_text())
    if not isinstance(definitions, list):
        raise ValueError(f"{path}: expected a JSON list of feature definitions")
    registry = FeatureRegistry()
    for definition in definitions:
        registry.register(definition)
    return registry


@dataclass
class Runtime:
    settings: Settings
    model: OnlineModel
    registry: FeatureRegistry
    entities: Mapping[str, Any] = field(default_factory=dict)
    pending: Mapping[str, Any] = field(default_factory=dict)
    stream_ready: Any = None  # callable -> bool, set when a stream app runs in this process

    @classmethod
    def from_settings(cls, settings: Settings) -> "Runtime":
        return cls(
            settings=settings,
            model=OnlineModel(settings.model_name),
            registry=load_feature_registry(settings.feature_definitions),
        )

    def is_stream_ready(self) -> bool:
        return bool(self.stream_ready and self.stream_ready())
