"""A stream worker over many entities: its memory, its pauses and its rate, pass after pass.

    .venv/bin/python -m benchmarks.many_entities [--entities 1000000] [--passes 2] [--store rocksdb]
        [--variant TABLE_CACHE_ROWS=2000000 --variant '' --rounds 2]

One backlog of entities x passes labelled events (three numeric features, `logreg`): event
i is for entity i mod N, so the first pass creates N rows and every later pass updates
each of them once, after N - 1 other entities. `engine worker --embedded-learner` learns it
from the start. Measured from outside the process, as a user would:

- `events_per_second` per pass, from when the examples topic reached the pass's first
  example to its last;
- `longest_step_seconds`: the longest time the examples topic did not grow while events
  were waiting (polled every 20 ms); it grows a batch at a time (`median_step_seconds`),
  and `stalls` lists the steps over 3x the median: e.g. a full garbage collection walking
  every row;
- `peak_rss_mb`: the worker's peak resident memory (VmHWM) at the end;
- `full_collections`: the worker's full garbage collections, from its own
  `rtml_gc_pause_seconds` (how many, their total, how many over 0.1 s).

Results: benchmarks/results/many-entities.json (--output to write elsewhere).
"""

from __future__ import annotations

import argparse
import asyncio
import itertools
import json
import platform
import shlex
import statistics
import sys
import tempfile
import time
import uuid
from pathlib import Path

import orjson
from aiokafka import AIOKafkaConsumer, AIOKafkaProducer, TopicPartition
from prometheus_client import CollectorRegistry
from prometheus_client.multiprocess import MultiProcessCollector

from benchmarks.feature_flood import peak_rss_mb
from benchmarks.throughput_baselines import _create_topic
from engine.harness import KAFKA_BOOTSTRAP, EngineProcess, delete_topics, remove_topics, unique_env
from engine.process import GC_FLUSH_SECONDS
from streams.changelog import send_records

RESULTS = Path(__file__).parent / "results"
POLL_SECONDS = 0.02
STALL_FACTOR = 3


def event(i: int, entities: int, ts: float) -> tuple[bytes, bytes]:
    entity = f"en-{i % entities}"
    x = {"a": (i % 97) / 97, "b": (i % 13) / 13, "c": float(i % 2)}
    value = {"event_id": f"ev-{i}", "entity_id": entity, "ts": ts, "features": x, "label": i % 2}
    return entity.encode(), orjson.dumps(value)


async def publish(topic: str, events: int, entities: int) -> None:
    producer = AIOKafkaProducer(bootstrap_servers=KAFKA_BOOTSTRAP, max_batch_size=1 << 20, acks=1)
    await producer.start()
    try:
        start = time.time() - 3600
        chunk = 50_000
        for first in range(0, events, chunk):
            records = [event(i, entities, start + i * 1e-4) for i in range(first, min(events, first + chunk))]
            sent = await send_records(producer, topic, 0, records)
            await asyncio.gather(*(future for future, _ in sent))
    finally:
        await producer.stop()


async def watch(topic: str, events: int, entities: int, timeout: float) -> dict:
    """Polls the examples topic's end until it holds `events` examples."""
    consumer = AIOKafkaConsumer(bootstrap_servers=KAFKA_BOOTSTRAP, enable_auto_commit=False, group_id=None)
    await consumer.start()
    tp = TopicPartition(topic, 0)
    marks: list[tuple[float, int]] = []  # (time, end offset) whenever the end moved
    try:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if not consumer.partitions_for_topic(topic):
                await consumer._client.force_metadata_update()
                await asyncio.sleep(0.2)
                continue
            end = (await consumer.end_offsets([tp]))[tp]
            now = time.monotonic()
            if end > (marks[-1][1] if marks else 0):
                marks.append((now, end))
            if end >= events:
                break
            await asyncio.sleep(POLL_SECONDS)
        else:
            raise TimeoutError(f"fewer than {events} examples on {topic} after {timeout} s")
    finally:
        await consumer.stop()
    # From the first example on: before it, the worker was starting.
    gaps = [later[0] - earlier[0] for earlier, later in itertools.pairwise(marks)]
    passes = []
    for start in range(0, events, entities):
        first = next(t for t, end in marks if end > start)
        last = next(t for t, end in marks if end >= min(events, start + entities))
        passes.append(round(min(entities, events - start) / max(last - first, 1e-9), 1))
    # A backlog is learned a batch at a time, so the topic grows in steps: a stall is a gap
    # well past the usual step.
    usual = statistics.median(gaps) if gaps else 0.0
    stalls = [
        (marks[i][1], round(marks[i][0] - marks[0][0], 2), round(gap, 3))
        for i, gap in enumerate(gaps)
        if gap > STALL_FACTOR * usual
    ]
    return {
        "events_per_second_by_pass": passes,
        "median_step_seconds": round(usual, 3),
        "longest_step_seconds": round(max(gaps, default=0.0), 3),
        # Each: (examples before it, seconds since the first example, its length).
        "stalls": stalls,
    }


def run(entities: int, passes: int, store: str, extra_env: dict[str, str], workdir: Path) -> dict:
    topic = f"entities-{uuid.uuid4().hex[:8]}"
    events = entities * passes
    asyncio.run(_create_topic(KAFKA_BOOTSTRAP, topic, 1))
    try:
        asyncio.run(publish(topic, events, entities))
        env = unique_env(
            MODEL="logreg", EVENTS_TOPIC=topic, TABLE_STORE=store, REDIS_URL="", LOG_LEVEL="warning", **extra_env
        )
        folder = Path(tempfile.mkdtemp(prefix=f"entities-{store}-", dir=workdir))
        # The worker's metrics in files, as under `engine run`: its collections are read from them.
        metrics_dir = folder / "metrics"
        metrics_dir.mkdir()
        env["PROMETHEUS_MULTIPROC_DIR"] = str(metrics_dir)
        worker = EngineProcess(env, folder, ("worker", "--embedded-learner")).launch()
        try:
            examples_topic = worker.settings.examples_topic
            measured = asyncio.run(watch(examples_topic, events, entities, timeout=3600))
            assert worker.process is not None
            rss = round(peak_rss_mb(worker.process.pid), 1)
            time.sleep(GC_FLUSH_SECONDS + 0.5)  # the last pauses recorded
            collections = gc_pauses(metrics_dir)
        finally:
            worker.stop()
            remove_topics([worker])
    finally:
        asyncio.run(delete_topics(KAFKA_BOOTSTRAP, [topic, f"{topic}.dlq"]))
    return {
        "entities": entities,
        "passes": passes,
        "store": store,
        **extra_env,
        "peak_rss_mb": rss,
        **measured,
        "full_collections": collections,
    }


def gc_pauses(metrics_dir: Path) -> dict:
    """The worker's full collections (rtml_gc_pause_seconds, generation 2): how many, their
    total, and how many took over 0.1 s."""
    registry = CollectorRegistry()
    MultiProcessCollector(registry, path=str(metrics_dir))
    labels = {"process": "worker", "generation": "2"}
    count = registry.get_sample_value("rtml_gc_pause_seconds_count", labels) or 0.0
    total = registry.get_sample_value("rtml_gc_pause_seconds_sum", labels) or 0.0
    quick = registry.get_sample_value("rtml_gc_pause_seconds_bucket", {**labels, "le": "0.1"}) or 0.0
    return {"count": int(count), "seconds": round(total, 3), "over_100ms": int(count - quick)}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--entities", type=int, default=1_000_000)
    parser.add_argument("--passes", type=int, default=2)
    parser.add_argument("--store", choices=("rocksdb", "memory"), default="rocksdb")
    parser.add_argument(
        "--variant",
        action="append",
        help="worker settings of one run, NAME=value[,NAME=value] ('' for the defaults); repeat to compare",
    )
    parser.add_argument("--rounds", type=int, default=1, help="the variants run this many times, alternated")
    parser.add_argument("--output", default="many-entities.json")
    args = parser.parse_args()
    variants = [dict(item.split("=", 1) for item in v.split(",") if item) for v in args.variant or [""]]
    workdir = RESULTS / "work"
    workdir.mkdir(parents=True, exist_ok=True)
    results = []
    for _ in range(args.rounds):
        for extra_env in variants:
            result = run(args.entities, args.passes, args.store, extra_env, workdir)
            print(json.dumps(result), flush=True)
            results.append(result)
    report = {
        "command": shlex.join(["python", "-m", "benchmarks.many_entities", *sys.argv[1:]]),
        "measured_at": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()),
        "machine": f"{platform.machine()} CPython {platform.python_version()}",
        "runs": results,
    }
    (RESULTS / args.output).write_text(json.dumps(report, indent=2) + "\n")


if __name__ == "__main__":
    main()
