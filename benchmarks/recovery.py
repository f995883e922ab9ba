"""How soon a stream worker killed with kill -9 processes events again, by table size and store.

    .venv/bin/python -m benchmarks.recovery [--entities 100000 --entities 1000000] \\
                                            [--store rocksdb --store memory] [--after 2000]

Per table size N, one backlog of N labelled events, each for an entity of its own (three
numeric features, `logreg`); then for each store (TABLE_STORE):

1. `engine worker --embedded-learner` learns the backlog: the feature table holds N rows,
   and its changelog N records; the run waits for the consumer group's committed offset;
2. the worker is killed with SIGKILL, and `--after` more events (for entities already in
   the table, so their rows are read back) are published while it is down;
3. a new worker starts at once, with the same state directory and worker id (what
   `engine run` does after a crash).

Timed from the kill: `processing_again_seconds`, until the first of the new events is
learned (its example is on the examples topic), and `caught_up_seconds`, until the last
one is. Both include the new process's start-up (imports, joining the group), which no
store can avoid: `startup_floor_seconds` is the same restart with a table of one row.
Results: benchmarks/results/recovery.json.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import platform
import sys
import tempfile
import time
import uuid
from pathlib import Path

import orjson
from aiokafka import AIOKafkaConsumer, AIOKafkaProducer, TopicPartition

from benchmarks.throughput_baselines import _create_topic
from engine.harness import KAFKA_BOOTSTRAP, EngineProcess, delete_topics, remove_topics, unique_env

RESULTS = Path(__file__).parent / "results"
POLL_SECONDS = 0.05


def event(i: int, entity: int, ts: float) -> bytes:
    x = {"a": (i % 97) / 97, "b": (i % 13) / 13, "c": float(i % 2)}
    return orjson.dumps({"event_id": f"ev-{i}", "entity_id": f"en-{entity}", "ts": ts, "features": x, "label": i % 2})


async def publish(topic: str, start: int, count: int, entities: int) -> None:
    producer = AIOKafkaProducer(bootstrap_servers=KAFKA_BOOTSTRAP, linger_ms=50, max_batch_size=1 << 20)
    await producer.start()
    try:
        now = time.time()
        for i in range(start, start + count):
            # The backlog: entity i; later events: entities already in the table, spread over it.
            entity = i if i < entities else (i * 7919) % entities
            await producer.send(topic, event(i, entity, now - 3600 + i * 1e-4), key=f"en-{entity}".encode())
        await producer.flush()
    finally:
        await producer.stop()


async def examples_end(consumer: AIOKafkaConsumer, tp: TopicPartition) -> int:
    return (await consumer.end_offsets([tp]))[tp]


async def wait_examples(topic: str, at_least: int, timeout: float) -> None:
    consumer = AIOKafkaConsumer(bootstrap_servers=KAFKA_BOOTSTRAP, enable_auto_commit=False, group_id=None)
    await consumer.start()
    tp = TopicPartition(topic, 0)
    try:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if consumer.partitions_for_topic(topic) and await examples_end(consumer, tp) >= at_least:
                return
            await consumer._client.force_metadata_update()
            await asyncio.sleep(0.5)
        raise TimeoutError(f"fewer than {at_least} examples on {topic} after {timeout} s")
    finally:
        await consumer.stop()


async def wait_committed(group: str, topic: str, offset: int, timeout: float) -> None:
    consumer = AIOKafkaConsumer(bootstrap_servers=KAFKA_BOOTSTRAP, enable_auto_commit=False, group_id=group)
    await consumer.start()
    try:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if (await consumer.committed(TopicPartition(topic, 0)) or 0) >= offset:
                return
            await asyncio.sleep(0.5)
        raise TimeoutError(f"the worker did not commit offset {offset} of {topic} in {timeout} s")
    finally:
        await consumer.stop()


async def time_recovery(topic: str, before: int, after: int, killed_at: float, timeout: float) -> dict:
    """Seconds from the kill until the examples topic holds one more example, then `after` more."""
    consumer = AIOKafkaConsumer(bootstrap_servers=KAFKA_BOOTSTRAP, enable_auto_commit=False, group_id=None)
    await consumer.start()
    tp = TopicPartition(topic, 0)
    again = None
    try:
        while time.monotonic() - killed_at < timeout:
            end = await examples_end(consumer, tp)
            if again is None and end > before:
                again = time.monotonic() - killed_at
            if end >= before + after:
                return {
                    "processing_again_seconds": round(again or 0.0, 2),
                    "caught_up_seconds": round(time.monotonic() - killed_at, 2),
                }
            await asyncio.sleep(POLL_SECONDS)
        raise TimeoutError(f"not caught up {timeout} s after the kill")
    finally:
        await consumer.stop()


def run_one(entities: int, store: str, after: int, backlog_topic: str, workdir: Path) -> dict:
    env = unique_env(MODEL="logreg", EVENTS_TOPIC=backlog_topic, TABLE_STORE=store, REDIS_URL="", LOG_LEVEL="warning")
    folder = Path(tempfile.mkdtemp(prefix=f"recovery-{store}-", dir=workdir))
    worker = EngineProcess(env, folder, ("worker", "--embedded-learner")).launch()
    settings = worker.settings
    try:
        started = time.monotonic()
        asyncio.run(wait_examples(settings.examples_topic, entities, timeout=3600))
        learned_seconds = time.monotonic() - started
        asyncio.run(wait_committed(settings.app_id, backlog_topic, entities, timeout=120))
        worker.kill()
        killed_at = time.monotonic()
        asyncio.run(publish(backlog_topic, entities, after, entities))
        worker.launch()
        timing = asyncio.run(time_recovery(settings.examples_topic, entities, after, killed_at, timeout=3600))
    finally:
        worker.stop()
        remove_topics([worker])
    return {"entities": entities, "store": store, "learned_seconds": round(learned_seconds, 1), **timing}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--entities", type=int, action="append", help="table sizes (repeat); default 100k and 1M")
    parser.add_argument("--store", action="append", choices=("rocksdb", "memory"), help="default both")
    parser.add_argument("--after", type=int, default=2000, help="events published while the worker is down")
    parser.add_argument("--output", default="recovery.json")
    args = parser.parse_args()
    sizes = args.entities or [100_000, 1_000_000]
    stores = args.store or ["rocksdb", "memory"]
    workdir = RESULTS / "work"
    workdir.mkdir(parents=True, exist_ok=True)
    results = []
    # One entity first: the restart's floor (a new process starting and joining the group).
    for entities in [1, *sizes]:
        for store in stores if entities > 1 else stores[:1]:
            # A backlog per run: each worker publishes its own events after the kill.
            topic = f"recovery-{uuid.uuid4().hex[:8]}"
            asyncio.run(_create_topic(KAFKA_BOOTSTRAP, topic, 1))
            try:
                asyncio.run(publish(topic, 0, entities, entities))
                result = run_one(entities, store, args.after, topic, workdir)
            finally:
                asyncio.run(delete_topics(KAFKA_BOOTSTRAP, [topic, f"{topic}.dlq"]))
            print(json.dumps(result), flush=True)
            results.append(result)
    floor = results[0]["processing_again_seconds"]
    report = {
        "command": " ".join(["python -m benchmarks.recovery", *sys.argv[1:]]),
        "measured_at": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()),
        "machine": f"{platform.machine()} CPython {platform.python_version()}",
        "after": args.after,
        "startup_floor_seconds": floor,
        "runs": results[1:],
    }
    (RESULTS / args.output).write_text(json.dumps(report, indent=2) + "\n")
    print(json.dumps(report, indent=2))


if __name__ == "__main__":
    main()
