"""The objects one engine process shares between the stream and the API."""

from __future__ import annotations

import asyncio
import json
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Mapping

from engine.cache import L1Cache, PredictionCache, RedisCache
from engine.serving import DeadlineBreaker, Predictor
from engine.settings import Settings
from models.online import OnlineModel
from models.registry import ModelRegistry
from models.snapshots import SnapshotStore
from streams.features import FeatureRegistry
from streams.offline_store import OfflineFeatureLog


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
    feature_registry: FeatureRegistry
    entities: Mapping[str, Any] = field(default_factory=dict)
    pending: Mapping[str, Any] = field(default_factory=dict)
    stream_ready: Any = None  # callable -> bool, set when a stream app runs in this process
    offline_log: OfflineFeatureLog | None = None
    redis: RedisCache | None = None
    predictor: Predictor | None = None
    model_registry: ModelRegistry | None = None
    snapshots: SnapshotStore | None = None
    processor: Any = None  # the stream's processor, when a stream runs in this process
    stream_lock: asyncio.Lock = field(default_factory=asyncio.Lock)
    write_snapshot: Any = None

    def adopt_model(self, new: OnlineModel) -> None:
        self.model = new
        if self.processor is not None:
            self.processor.model = new
        if self.predictor is not None:
            self.predictor.model = new

    async def serve_model(self, change: Any) -> OnlineModel:
        """Runs change(live model) -> new model between two stream batches, then serves it:
        the stream learns into it, /predict answers with it, and a snapshot records it."""
        async with self.stream_lock:
            new = change(self.model)
            self.adopt_model(new)
            if self.write_snapshot is not None:
                self.write_snapshot()
        return new

    def current_rollout(self) -> Any:
        return self.processor.rollout if self.processor is not None else None

    @classmethod
    def from_settings(cls, settings: Settings) -> "Runtime":
        return cls(
            settings=settings,
            model=OnlineModel(settings.model_name, fallback_name=settings.fallback_model),
            feature_registry=load_feature_registry(settings.feature_definitions),
        )

    async def start_serving(self) -> None:
        """Builds the cache and predictor on the running event loop (the Redis client needs it)."""
        s = self.settings
        l1 = L1Cache(s.cache_l1_entries, s.cache_ttl_seconds) if s.cache_l1_entries > 0 else None
        if s.redis_url:
            self.redis = RedisCache(s.redis_url, s.cache_ttl_seconds, s.redis_timeout_seconds, s.redis_backoff_seconds)
        cache = PredictionCache(l1, self.redis) if (l1 or self.redis) else None
        breaker = DeadlineBreaker(s.predict_deadline_seconds, s.breaker_cooldown_seconds)
        self.predictor = Predictor(self.model, self.entities, cache, breaker, self.current_rollout)

    async def stop_serving(self) -> None:
        if self.redis is not None:
            await self.redis.close()

    def is_stream_ready(self) -> bool:
        return bool(self.stream_ready and self.stream_ready())
