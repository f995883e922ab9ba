"""Ingestion + learning throughput: the engine end to end vs the bare River loop.

    .venv/bin/python -m benchmarks.throughput [--events 50000] [--model logreg]

Produces N labelled Phishing events (the dataset cycled, unique event ids) to a fresh
topic, starts the engine on that backlog and times from its first learned event to its
last. In the same run it times River's own predict_proba_one + learn_one loop over the
same rows and reports both and their ratio. Results: benchmarks/results/throughput.json.
"""

from __future__ import annotations

import argparse
import asyncio
import itertools
import json
import platform
import tempfile
import time
from pathlib import Path

import httpx
import orjson
from aiokafka import AIOKafkaProducer

from engine.publish import dataset_events
from models.factory import build_model
from tests.conftest import EngineProcess, unique_env

RESULTS = Path(__file__).parent / "results"


def rows(n: int) -> list[tuple[dict, object]]:
    base = list(dataset_events("Phishing", entities=1000))
    out = []
    for i, (event, y) in enumerate(itertools.islice(itertools.cycle(base), n)):
        out.append(({**event, "event_id": f"bench-{i}", "ts": event["ts"] + i * 1e-3}, y))
    return out


def bare_river(model_name: str, data: list[tuple[dict, object]]) -> float:
    model = build_model(model_name)
    started = time.perf_counter()
    for event, y in data:
        model.predict_proba_one(event["features"])
        model.learn_one(event["features"], y)
    return len(data) / (time.perf_counter() - started)


async def produce_backlog(bootstrap: str, topic: str, data: list[tuple[dict, object]]) -> None:
    producer = AIOKafkaProducer(bootstrap_servers=bootstrap, linger_ms=20, max_batch_size=1 << 20)
    await producer.start()
    try:
        for event, y in data:
            await producer.send(topic, orjson.dumps({**event, "label": y}), key=event["entity_id"].encode())
        await producer.flush()
    finally:
        await producer.stop()


def engine_rate(model_name: str, data: list[tuple[dict, object]], workdir: Path, **engine_settings: str) -> dict:
    env = unique_env(MODEL=model_name, LOG_LEVEL="warning", **engine_settings)
    engine = EngineProcess(env, Path(tempfile.mkdtemp(prefix="throughput-", dir=workdir)))
    # Create the topics, then fill them before the engine consumes: it then runs flat out.
    engine.start()
    engine.stop()
    asyncio.run(produce_backlog(env["KAFKA_BOOTSTRAP"], env["EVENTS_TOPIC"], data))
    engine.start()
    try:
        first_seen = None
        while True:
            learned = httpx.get(f"{engine.base_url}/models", timeout=5).json()["serving"]["samples_learned"]
            now = time.perf_counter()
            if first_seen is None and learned > 0:
                first_seen, first_count = now, learned
            if learned >= len(data):
                break
            time.sleep(0.02)
        elapsed = now - first_seen
        return {"events_per_second": (len(data) - first_count) / elapsed, "seconds": elapsed}
    finally:
        engine.stop()


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--events", type=int, default=50_000)
    parser.add_argument("--model", default="logreg")
    parser.add_argument("--setting", action="append", default=[], help="engine setting NAME=VALUE (repeatable)")
    args = parser.parse_args()
    data = rows(args.events)
    workdir = RESULTS / "work"
    workdir.mkdir(parents=True, exist_ok=True)

    bare = bare_river(args.model, data)
    engine = engine_rate(args.model, data, workdir, **dict(kv.split("=", 1) for kv in args.setting))
    result = {
        "model": args.model,
        "events": args.events,
        "bare_river_events_per_second": round(bare),
        "engine_events_per_second": round(engine["events_per_second"]),
        "engine_over_bare": round(engine["events_per_second"] / bare, 3),
        "bare_river_us_per_event": round(1e6 / bare, 2),
        "engine_us_per_event": round(1e6 / engine["events_per_second"], 2),
        "machine": f"{platform.machine()} {platform.python_implementation()} {platform.python_version()}",
        "measured_at": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()),
    }
    print(json.dumps(result, indent=2))
    (RESULTS / f"throughput-{args.model}.json").write_text(json.dumps(result, indent=2) + "\n")


if __name__ == "__main__":
    main()
