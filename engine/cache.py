"""Two-tier prediction cache: a bounded in-process L1 in front of Redis (L2).

Redis is optional at every moment: a failed or slow call marks it down for a short
back-off, requests skip it meanwhile (no waiting on a dead server), and it is tried
again after the back-off. Users see uncached answers, never errors.
"""

from __future__ import annotations

import asyncio
import hashlib
import logging
import time
from collections import OrderedDict
from typing import Any, cast

import orjson
import redis.asyncio as aioredis
from redis.exceptions import RedisError

from engine import metrics

log = logging.getLogger(__name__)


def cache_key(
    model_name: str,
    model_version: int,
    model_state: int,
    entity_id: str,
    feature_version: int | None,
    features: dict[str, Any],
) -> str:
    """Everything that can change an answer is in the key: model version and learned state,
    the entity's feature-state version and the request's own features."""
    digest = hashlib.blake2b(orjson.dumps(features, option=orjson.OPT_SORT_KEYS), digest_size=16).hexdigest()
    return f"rtml:pred:{model_name}:{model_version}:{model_state}:{entity_id}:{feature_version}:{digest}"


# What an entry costs beyond its key and value: the ordered dict's slot and link, the tuple,
# the expiry float and the two object headers (about 170 bytes measured with tracemalloc).
L1_ENTRY_OVERHEAD_BYTES = 200


class L1Cache:
    """In-process LRU cache with a TTL, bounded in entries and in bytes."""

    def __init__(self, max_entries: int, ttl_seconds: float, max_bytes: int = 64 * 1024 * 1024) -> None:
        self.max_entries = max_entries
        self.ttl_seconds = ttl_seconds
        self.max_bytes = max_bytes
        self.bytes = 0
        self._entries: OrderedDict[str, tuple[float, bytes]] = OrderedDict()

    def get(self, key: str, now: float | None = None) -> bytes | None:
        entry = self._entries.get(key)
        if entry is None:
            return None
        expires, value = entry
        if expires < (time.monotonic() if now is None else now):
            self._remove(key)
            return None
        self._entries.move_to_end(key)
        return value

    def set(self, key: str, value: bytes, now: float | None = None) -> None:
        if key in self._entries:
            self._remove(key)
        size = _entry_bytes(key, value)
        if size > self.max_bytes:
            return  # it would evict everything else and still not fit
        self._entries[key] = ((time.monotonic() if now is None else now) + self.ttl_seconds, value)
        self.bytes += size
        while len(self._entries) > self.max_entries or self.bytes > self.max_bytes:
            self._remove(next(iter(self._entries)))

    def _remove(self, key: str) -> None:
        _, value = self._entries.pop(key)
        self.bytes -= _entry_bytes(key, value)

    def __len__(self) -> int:
        return len(self._entries)


def _entry_bytes(key: str, value: bytes) -> int:
    return len(key) + len(value) + L1_ENTRY_OVERHEAD_BYTES


class RedisCache:
    def __init__(self, url: str, ttl_seconds: float, timeout_seconds: float, backoff_seconds: float = 1.0) -> None:
        self.ttl_ms = max(1, int(ttl_seconds * 1000))
        self.timeout_seconds = timeout_seconds
        self.backoff_seconds = backoff_seconds
        self._client = aioredis.Redis.from_url(
            url, socket_timeout=timeout_seconds, socket_connect_timeout=timeout_seconds, retry=None
        )
        self._down_until = 0.0
        self._pending_writes: set[asyncio.Task] = set()
        self.round_trip_seconds: float | None = None  # moving average of successful calls

    def _timed(self, started: float) -> None:
        elapsed = time.perf_counter() - started
        previous = self.round_trip_seconds
        self.round_trip_seconds = elapsed if previous is None else 0.9 * previous + 0.1 * elapsed

    @property
    def available(self) -> bool:
        return time.monotonic() >= self._down_until

    def _mark_down(self, exc: BaseException) -> None:
        if self.available:
            log.warning("Redis cache unavailable (%s); serving without L2 for %.1f s", exc, self.backoff_seconds)
        self._down_until = time.monotonic() + self.backoff_seconds
        metrics.CACHE_ERRORS.inc()

    async def get(self, key: str) -> bytes | None:
        if not self.available:
            return None
        try:
            started = time.perf_counter()
            # Without decode_responses Redis answers bytes; redis-py types `get` as bytes | str either way.
            value = await asyncio.wait_for(self._client.get(key), self.timeout_seconds)
            self._timed(started)
            return cast(bytes | None, value)
        except (TimeoutError, RedisError, OSError) as exc:
            self._mark_down(exc)
            return None

    def set_soon(self, key: str, value: bytes) -> None:
        """Writes in the background: a cache fill must not add to the request's latency."""
        if not self.available:
            return
        task = asyncio.ensure_future(self._set(key, value))
        self._pending_writes.add(task)
        task.add_done_callback(self._pending_writes.discard)

    async def _set(self, key: str, value: bytes) -> None:
        try:
            await asyncio.wait_for(self._client.set(key, value, px=self.ttl_ms), self.timeout_seconds)
        except (TimeoutError, RedisError, OSError) as exc:
            self._mark_down(exc)

    async def ping(self) -> bool:
        try:
            started = time.perf_counter()
            answered = bool(await asyncio.wait_for(self._client.ping(), self.timeout_seconds))
            self._timed(started)
            return answered
        except (TimeoutError, RedisError, OSError):
            return False

    async def close(self) -> None:
        if self._pending_writes:
            await asyncio.gather(*self._pending_writes, return_exceptions=True)
        await self._client.aclose()


L2_MODES = ("auto", "always", "never")


class PredictionCache:
    """L1, then Redis (L2). In `auto` mode Redis is asked only when it pays: when the model
    predicts slower than a Redis round trip (a forest: hundreds of µs; a linear model:
    a few µs against ~130 µs, and a network call's tail on every request)."""

    def __init__(self, l1: L1Cache | None, l2: RedisCache | None, l2_mode: str = "auto") -> None:
        if l2_mode not in L2_MODES:
            raise ValueError(f"l2_mode must be one of {L2_MODES}")
        self.l1 = l1
        self.l2 = l2
        self.l2_mode = l2_mode
        self.predict_seconds: float | None = None  # moving average, from the Predictor

    def record_prediction(self, seconds: float) -> None:
        previous = self.predict_seconds
        self.predict_seconds = seconds if previous is None else 0.9 * previous + 0.1 * seconds

    @property
    def l2_pays(self) -> bool:
        if self.l2 is None or self.l2_mode == "never":
            return False
        if self.l2_mode == "always":
            return True
        round_trip, predict = self.l2.round_trip_seconds, self.predict_seconds
        # Until both are known, ask Redis: its answers measure its round trip.
        return round_trip is None or predict is None or predict > round_trip

    async def get(self, key: str) -> tuple[bytes | None, str | None]:
        if self.l1 is not None:
            value = self.l1.get(key)
            if value is not None:
                metrics.CACHE_LOOKUPS_OF("l1", "hit").inc()
                return value, "l1"
            metrics.CACHE_LOOKUPS_OF("l1", "miss").inc()
        if self.l2 is not None and self.l2.available and self.l2_pays:
            value = await self.l2.get(key)
            if value is not None:
                metrics.CACHE_LOOKUPS_OF("l2", "hit").inc()
                if self.l1 is not None:
                    self.l1.set(key, value)
                return value, "l2"
            metrics.CACHE_LOOKUPS_OF("l2", "miss").inc()
        return None, None

    def put(self, key: str, value: bytes) -> None:
        if self.l1 is not None:
            self.l1.set(key, value)
        if self.l2 is not None and self.l2_pays:
            self.l2.set_soon(key, value)
