"""A flood of new feature names against the stream worker: memory and ingestion rate.

    .venv/bin/python -m benchmarks.feature_flood [--events 20000] [--names-per-event 50]

Two backlogs of N labelled Phishing events on fresh topics: one as the dataset has them,
one where every event also carries `--names-per-event` names never seen before (an id put
into a feature name by mistake: N × 50 = 1,000,000 new names by default). Each is ingested
by `engine worker --embedded-learner` (what `engine run` runs for the stream) with the
default limits; the worker's peak resident memory (VmHWM) and its learning rate are
reported side by side. Results: benchmarks/results/feature-flood.json.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import platform
import tempfile
import threading
import time
import uuid
from pathlib import Path

import orjson
from aiokafka import AIOKafkaProducer

from benchmarks.throughput import examples_rate
from benchmarks.throughput_baselines import _create_topic, rows
from engine.harness import KAFKA_BOOTSTRAP, EngineProcess, remove_topics, unique_env

RESULTS = Path(__file__).parent / "results"


async def produce(topic: str, events: int, names_per_event: int) -> None:
    await _create_topic(KAFKA_BOOTSTRAP, topic, 1)
    producer = AIOKafkaProducer(bootstrap_servers=KAFKA_BOOTSTRAP, linger_ms=20, max_batch_size=1 << 20)
    await producer.start()
    try:
        for i, (event, y) in enumerate(rows(events)):
            features = dict(event["features"])
            for j in range(names_per_event):
                features[f"user_{i}_{j}"] = 1.0
            value = orjson.dumps({**event, "features": features, "label": y})
            await producer.send(topic, value, key=event["entity_id"].encode())
        await producer.flush()
    finally:
        await producer.stop()


def peak_rss_mb(pid: int) -> float:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmHWM:"):
            return int(line.split()[1]) / 1024
    raise RuntimeError("no VmHWM in /proc status")


def run(events: int, names_per_event: int, workdir: Path) -> dict:
    topic = f"flood-{uuid.uuid4().hex[:8]}"
    asyncio.run(produce(topic, events, names_per_event))
    env = unique_env(MODEL="logreg", EVENTS_TOPIC=topic, REDIS_URL="", LOG_LEVEL="warning")
    folder = Path(tempfile.mkdtemp(prefix="flood-", dir=workdir))
    engine = EngineProcess(env, folder, ("worker", "--embedded-learner")).launch()
    assert engine.process is not None
    peak = [0.0]
    done = threading.Event()

    def watch() -> None:  # VmHWM is the peak already; read it until the end in case the process goes
        while not done.is_set():
            try:
                peak[0] = max(peak[0], peak_rss_mb(engine.process.pid))
            except (OSError, RuntimeError):
                return
            time.sleep(0.2)

    watcher = threading.Thread(target=watch, daemon=True)
    watcher.start()
    try:
        rate = asyncio.run(
            examples_rate(KAFKA_BOOTSTRAP, engine.settings.examples_topic, events, timeout=900, engines=[engine])
        )
        peak[0] = max(peak[0], peak_rss_mb(engine.process.pid))
    finally:
        done.set()
        engine.stop()
        remove_topics([engine])
    return {"new_names_per_event": names_per_event, "events": events, **rate, "peak_rss_mb": round(peak[0], 1)}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--events", type=int, default=20_000)
    parser.add_argument("--names-per-event", type=int, default=50)
    parser.add_argument("--output", default="feature-flood.json")
    args = parser.parse_args()
    workdir = Path(tempfile.mkdtemp(prefix="feature-flood-"))
    normal = run(args.events, 0, workdir)
    print(json.dumps(normal), flush=True)
    flood = run(args.events, args.names_per_event, workdir)
    print(json.dumps(flood), flush=True)
    report = {
        "command": f"python -m benchmarks.feature_flood --events {args.events} "
        f"--names-per-event {args.names_per_event}",
        "machine": {"arch": platform.machine(), "python": platform.python_version()},
        "runs": [normal, flood],
        "rss_growth_mb": round(flood["peak_rss_mb"] - normal["peak_rss_mb"], 1),
        "rate_ratio": round(flood["events_per_second"] / normal["events_per_second"], 3),
    }
    RESULTS.mkdir(exist_ok=True)
    (RESULTS / args.output).write_text(json.dumps(report, indent=2) + "\n")
    print(json.dumps({k: report[k] for k in ("rss_growth_mb", "rate_ratio")}))


if __name__ == "__main__":
    main()
