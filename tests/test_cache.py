"""The L1 cache's bounds, and the Redis tier against the real local Redis."""

import asyncio
import time
import uuid

import pytest
from prometheus_client import REGISTRY

from engine.cache import L1_ENTRY_OVERHEAD_BYTES, L1Cache, PredictionCache, RedisCache
from tests.conftest import REDIS_URL


def entry_bytes(key, value):
    return len(key) + len(value) + L1_ENTRY_OVERHEAD_BYTES


def test_l1_entries_expire_after_the_ttl():
    l1 = L1Cache(max_entries=10, ttl_seconds=10)
    l1.set("a", b"1", now=0)
    assert l1.get("a", now=10) == b"1"
    assert l1.get("a", now=10.5) is None
    assert len(l1) == 0 and l1.bytes == 0


def test_l1_evicts_the_least_recently_used_entry():
    l1 = L1Cache(max_entries=2, ttl_seconds=10)
    l1.set("a", b"1", now=0)
    l1.set("b", b"2", now=0)
    assert l1.get("a", now=1) == b"1"  # now "b" is the least recently used
    l1.set("c", b"3", now=1)
    assert l1.get("b", now=1) is None
    assert (l1.get("a", now=1), l1.get("c", now=1)) == (b"1", b"3")


def test_l1_is_bounded_in_bytes_least_recently_used_first():
    value = b"v" * 1000
    l1 = L1Cache(max_entries=100, ttl_seconds=10, max_bytes=3 * entry_bytes("k0", value))
    for i in range(3):
        l1.set(f"k{i}", value, now=0)
    assert len(l1) == 3 and l1.bytes == l1.max_bytes
    l1.get("k0", now=0)
    l1.set("k3", value, now=0)
    assert [l1.get(f"k{i}", now=0) is not None for i in range(4)] == [True, False, True, True]
    assert l1.bytes <= l1.max_bytes


def test_l1_replacing_an_entry_counts_only_the_new_value():
    l1 = L1Cache(max_entries=10, ttl_seconds=10)
    l1.set("a", b"x" * 500, now=0)
    l1.set("a", b"y", now=0)
    assert l1.bytes == entry_bytes("a", b"y") and len(l1) == 1


def test_l1_skips_an_entry_larger_than_the_whole_budget():
    l1 = L1Cache(max_entries=10, ttl_seconds=10, max_bytes=entry_bytes("small", b"1") + 10)
    l1.set("small", b"1", now=0)
    l1.set("huge", b"x" * 1000, now=0)
    assert l1.get("huge", now=0) is None
    assert l1.get("small", now=0) == b"1"  # nothing was evicted for it


def cache_errors():
    return REGISTRY.get_sample_value("rtml_cache_errors_total")


async def write(key, value, ttl_seconds):
    writer = RedisCache(REDIS_URL, ttl_seconds, timeout_seconds=0.5)
    writer.set_soon(key, value)
    await writer.close()  # waits for the background write


@pytest.mark.integration
async def test_redis_round_trip_between_two_clients():
    key = f"rtml:test:{uuid.uuid4().hex}"
    await write(key, b"answer", ttl_seconds=5)
    reader = RedisCache(REDIS_URL, ttl_seconds=5, timeout_seconds=0.5)
    try:
        assert await reader.get(key) == b"answer"
        assert await reader.get(f"{key}:other") is None
        assert reader.available
    finally:
        await reader.close()


@pytest.mark.integration
async def test_redis_entries_expire_after_the_ttl():
    key = f"rtml:test:{uuid.uuid4().hex}"
    await write(key, b"answer", ttl_seconds=0.5)
    cache = RedisCache(REDIS_URL, ttl_seconds=0.5, timeout_seconds=0.5)
    try:
        assert await cache.get(key) == b"answer"
        await asyncio.sleep(0.8)
        assert await cache.get(key) is None
    finally:
        await cache.close()


@pytest.mark.integration
async def test_a_dead_redis_is_skipped_quickly_for_the_back_off():
    cache = RedisCache("redis://127.0.0.1:1/0", ttl_seconds=5, timeout_seconds=0.05, backoff_seconds=30)
    errors = cache_errors() or 0.0
    try:
        started = time.monotonic()
        assert await cache.get("k") is None
        assert time.monotonic() - started < 1.0  # refused or timed out, never a hang
        assert not cache.available
        assert cache_errors() == errors + 1
        assert await cache.get("k") is None  # skipped during the back-off: no second error
        cache.set_soon("k", b"v")
        assert cache_errors() == errors + 1
    finally:
        await cache.close()


def test_without_redis_the_in_process_cache_still_serves(tmp_path):
    from engine.runtime import build_cache
    from engine.settings import Settings

    cache, redis = build_cache(
        Settings.from_env({"REDIS_URL": "", "CACHE_L1_ENTRIES": "1000", "STATE_DIR": str(tmp_path)})
    )
    assert redis is None and cache is not None and cache.l1 is not None


class FakeRedis:
    """Stands for RedisCache: records its use, answers misses, takes a known round trip."""

    def __init__(self, round_trip_seconds):
        self.round_trip_seconds = round_trip_seconds
        self.available = True
        self.asked = 0
        self.written = 0

    async def get(self, key):
        self.asked += 1
        return None

    def set_soon(self, key, value):
        self.written += 1


async def test_redis_is_asked_only_when_it_answers_faster_than_the_model():
    redis = FakeRedis(round_trip_seconds=130e-6)
    cache = PredictionCache(None, redis)
    cache.record_prediction(5e-6)  # a linear model: Redis would cost more than it saves
    await cache.get("k")
    cache.put("k", b"v")
    assert (redis.asked, redis.written) == (0, 0)
    for _ in range(50):
        cache.record_prediction(400e-6)  # a forest
    await cache.get("k")
    cache.put("k", b"v")
    assert (redis.asked, redis.written) == (1, 1)


async def test_redis_always_or_never_when_told():
    always, never = FakeRedis(1.0), FakeRedis(0.0)
    for redis, mode in ((always, "always"), (never, "never")):
        cache = PredictionCache(None, redis, mode)
        cache.record_prediction(1e-6 if mode == "always" else 10.0)
        await cache.get("k")
    assert (always.asked, never.asked) == (1, 0)
