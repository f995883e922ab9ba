"""When does each cache tier pay? Per-call cost of an L1 lookup, a Redis GET round trip,
and a prediction by each model of the factory, measured in one run.

    .venv/bin/python -m benchmarks.cache_tiers      (needs Redis: make up)

A tier helps a model when its lookup costs less than the prediction it saves.
Results: benchmarks/results/cache_tiers.json.
"""

from __future__ import annotations

import asyncio
import json
import statistics
import time
from pathlib import Path

from river import datasets

from engine.cache import L1Cache, RedisCache, cache_key
from models.factory import MODELS
from models.online import OnlineModel

RESULTS = Path(__file__).parent / "results"
DATASET_FOR = {"binary": datasets.Phishing, "multiclass": datasets.ImageSegments, "regression": datasets.TrumpApproval}


def per_call_us(fn, repeat: int = 2000) -> float:
    """Median of 5 rounds, in microseconds per call."""
    rounds = []
    for _ in range(5):
        started = time.perf_counter()
        for _ in range(repeat):
            fn()
        rounds.append((time.perf_counter() - started) / repeat * 1e6)
    return statistics.median(rounds)


async def redis_get_us(url: str, repeat: int = 2000) -> float:
    cache = RedisCache(url, ttl_seconds=60, timeout_seconds=0.05)
    await cache._client.set("rtml:bench", b"x" * 200)
    rounds = []
    for _ in range(5):
        started = time.perf_counter()
        for _ in range(repeat):
            await cache.get("rtml:bench")
        rounds.append((time.perf_counter() - started) / repeat * 1e6)
    await cache.close()
    return statistics.median(rounds)


def main() -> None:
    l1 = L1Cache(100_000, 60)
    features = dict(next(iter(datasets.Phishing()))[0])
    key = cache_key("logreg", 1, 100, "entity-1", 3, features)
    l1.set(key, b"x" * 200)
    result = {
        "l1_lookup_with_key_us": round(
            per_call_us(lambda: l1.get(cache_key("logreg", 1, 100, "entity-1", 3, features))), 2
        ),
        "redis_get_round_trip_us": round(asyncio.run(redis_get_us("redis://127.0.0.1:6379/0")), 1),
        "predict_us": {},
    }
    for name, spec in MODELS.items():
        model = OnlineModel(name)
        rows = list(DATASET_FOR[spec.task.value]())[:1000]
        for x, y in rows:
            model.learn(x, y, model.predict(x))
        x = rows[-1][0]
        result["predict_us"][name] = round(per_call_us(lambda m=model, x=x: m.predict(x), repeat=300), 1)
    print(json.dumps(result, indent=2))
    (RESULTS / "cache_tiers.json").write_text(json.dumps(result, indent=2) + "\n")


if __name__ == "__main__":
    main()
