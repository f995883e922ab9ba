"""Reference consumers that the throughput benchmark runs side by side with the engine.

    .venv/bin/python -m benchmarks.throughput_baselines PATH --bootstrap 127.0.0.1:9092 \\
        --topic T --events N --model logreg [--partitions P]

prints one JSON line {"path", "model", "events", "events_per_second", "seconds", ...} and
exits once N events were processed. PATH is one of:

- `aiokafka`: the plainest loop that does the job. AIOKafkaConsumer, fresh group id,
  auto_offset_reset="earliest", enable_auto_commit=False, max_poll_records=1000;
  `getmany()` in a loop, each partition's record list handled in order, then
  `consumer.commit()` once per fetch. Per-entity state is a plain dict in memory.
- `aiokafka-changelog`: the same loop, plus durable state the cheap way: per fetch, one
  record per entity changed in that fetch (key = entity id, value = orjson of its dict)
  to a compacted changelog topic with as many partitions as the events topic (written
  to the event's partition), sent with an AIOKafkaProducer (linger_ms=5, acks=1) without
  awaiting each send; all the fetch's delivery futures are gathered before its offsets
  are committed.
- `quix`: Quix Streams (`quixstreams==3.28.1`, the `bench` extra). Application with
  broker_address, a fresh consumer_group, auto_offset_reset="earliest", state_dir in a
  temporary folder, loglevel="WARNING" (logging only); everything else is Quix's
  default: at-least-once, commit_interval=5.0 s, commit_every=0, changelog topics on,
  RocksDB state, consumer_poll_timeout=1.0, librdkafka's own fetch settings.
  `app.topic(T, value_deserializer="json")` (Quix decodes with orjson),
  `sdf.update(fn, stateful=True)` with `state.get/set` of the entity's dict (Quix keys
  state by the message key, caches writes per checkpoint and, at each commit, writes one
  changelog record per changed key and flushes RocksDB). It stops with
  `app.run(count=N, collect=False)`, Quix's documented stop condition: the app stops
  after N outputs of the dataframe (one per event here) and commits its last checkpoint.

The job is the same on every path, per event: orjson-decode the value, update the
entity's dict {"count", "last_ts", "version"}, then on the one River model built by
`models.factory.build_model(name)`: `predict_proba_one(features)` then
`learn_one(features, label)`.

Fairness rules:
- same backlog (`produce_backlog`: N labelled Phishing events, key = entity id, 1000
  entities, the same rows as benchmarks/throughput.py), each path with a fresh consumer
  group reading it from the earliest offset;
- same model, same JSON decoder (orjson), same per-entity update;
- same consumer fetch size for the two aiokafka paths (max_poll_records=1000, aiokafka's
  default fetch bytes and waits). Quix runs on confluent-kafka, whose consumer has no
  per-poll record count: it polls one message at a time from librdkafka's prefetch
  queue, which is filled by a C thread outside the GIL; we keep its defaults;
- each path in its own process (`run_path`), so none benefits from another's warmed
  caches or shares its GIL.

Timing: the clock starts when the path's code receives its first record (the first
non-empty `getmany`, the first Quix callback) and stops when the N-th event's
`learn_one` returned: `events_per_second` = events / `seconds`, as the engine is timed
(first learned event to last). The work in between includes every
earlier commit (per fetch on the aiokafka paths, per 5 s checkpoint in Quix), but not
the last one; `seconds_committed` also includes it (the last fetch's changelog flush and
offset commit; Quix's final forced checkpoint: changelog produce + flush, RocksDB write,
offset commit), for a durable comparison.

From Python: `produce_backlog(bootstrap, topic, n, partitions)` makes the backlog and
`run_path(path, bootstrap, topic, events, model, partitions)` runs one path in a
subprocess and returns its JSON. From the shell, `backlog --topic T --events N` makes a
backlog, and `compare --events N --model logreg --model hoeffding` makes a fresh one,
runs every path on it for every model, prints one line each and deletes the topic.
"""

from __future__ import annotations

import argparse
import asyncio
import itertools
import json
import shutil
import subprocess
import sys
import tempfile
import time
import uuid
import warnings
from pathlib import Path
from typing import Any

import orjson
from aiokafka import AIOKafkaConsumer, AIOKafkaProducer

from benchmarks.process_cpu import cpu_figures
from engine.harness import create_topics, delete_topics, topic_names
from engine.publish import dataset_events
from models.factory import build_model

PATHS = ("aiokafka", "aiokafka-changelog", "quix")
ROOT = Path(__file__).resolve().parent.parent
MAX_POLL_RECORDS = 1000
FETCH_TIMEOUT_MS = 500
STALL_SECONDS = 120.0  # give up when no record arrives for this long


# --- the backlog --------------------------------------------------------------------


def rows(n: int) -> list[tuple[dict, object]]:
    """The rows of benchmarks/throughput.py: the Phishing dataset cycled, unique ids."""
    base = list(dataset_events("Phishing", entities=1000))
    out = []
    for i, (event, y) in enumerate(itertools.islice(itertools.cycle(base), n)):
        out.append(({**event, "event_id": f"bench-{i}", "ts": event["ts"] + i * 1e-3}, y))
    return out


async def _create_topic(bootstrap: str, topic: str, partitions: int, configs: dict[str, str] | None = None) -> None:
    await create_topics(bootstrap, [topic], partitions, configs)


async def produce_backlog_async(bootstrap: str, topic: str, n: int, partitions: int) -> int:
    await _create_topic(bootstrap, topic, partitions)
    producer = AIOKafkaProducer(bootstrap_servers=bootstrap, linger_ms=20, max_batch_size=1 << 20)
    await producer.start()
    try:
        for event, y in rows(n):
            await producer.send(topic, orjson.dumps({**event, "label": y}), key=event["entity_id"].encode())
        await producer.flush()
    finally:
        await producer.stop()
    return n


def produce_backlog(bootstrap: str, topic: str, n: int, partitions: int = 1) -> int:
    """Creates `topic` with `partitions` partitions (it must not exist yet) and fills it
    with the benchmark's N labelled events, keyed by entity id. Returns N."""
    return asyncio.run(produce_backlog_async(bootstrap, topic, n, partitions))


# --- running a path in its own process ----------------------------------------------


def run_path(
    path: str,
    bootstrap: str,
    topic: str,
    events: int,
    model: str,
    partitions: int | None = None,
    timeout: float = 900.0,
) -> dict:
    """Runs one path in a fresh Python process on the backlog in `topic` and returns its
    JSON result. Raises RuntimeError with the tail of its stderr when it fails."""
    if path not in PATHS:
        raise ValueError(f"unknown path {path!r}; choose one of {PATHS}")
    cmd = [sys.executable, "-m", "benchmarks.throughput_baselines", path, "--bootstrap", bootstrap]
    cmd += ["--topic", topic, "--events", str(events), "--model", model]
    if partitions is not None:
        cmd += ["--partitions", str(partitions)]
    proc = subprocess.run(cmd, cwd=ROOT, capture_output=True, text=True, timeout=timeout)
    lines = [line for line in proc.stdout.splitlines() if line.startswith("{")]
    if proc.returncode != 0 or not lines:
        raise RuntimeError(f"{path} exited {proc.returncode}:\n{proc.stderr[-4000:]}")
    return json.loads(lines[-1])


# --- the paths ----------------------------------------------------------------------


def _result(
    path: str,
    model: str,
    events: int,
    started: float,
    processed: float,
    committed: float,
    entities: int,
    cpu_seconds: float,
    main_thread_cpu_seconds: float,
) -> dict:
    """`cpu_seconds`: the process's CPU (every thread, librdkafka's too) from its first
    record to its last event learned, reported as the engine's processes are (process_cpu);
    `main_thread_cpu_seconds`: the share of it on the thread that runs Python."""
    seconds = processed - started
    return {
        "path": path,
        "model": model,
        "events": events,
        "events_per_second": round(events / seconds, 1),
        "seconds": round(seconds, 4),
        "seconds_committed": round(committed - started, 4),
        "entities": entities,
        "cpu": {path: cpu_figures(cpu_seconds, main_thread_cpu_seconds, events, seconds)},
    }


async def run_aiokafka(
    bootstrap: str, topic: str, events: int, model_name: str, changelog: bool = False, partitions: int | None = None
) -> dict:
    path = "aiokafka-changelog" if changelog else "aiokafka"
    model = build_model(model_name)
    predict, learn, loads, dumps = model.predict_proba_one, model.learn_one, orjson.loads, orjson.dumps
    run_id = uuid.uuid4().hex[:12]
    consumer = AIOKafkaConsumer(
        topic,
        bootstrap_servers=bootstrap,
        group_id=f"baseline-{path}-{run_id}",
        auto_offset_reset="earliest",
        enable_auto_commit=False,
        max_poll_records=MAX_POLL_RECORDS,
    )
    producer = None
    changelog_topic = f"{topic}-{path}-{run_id}"
    await consumer.start()
    try:
        if changelog:
            if partitions is None:
                await consumer.topics()  # loads the cluster metadata
                partitions = len(consumer.partitions_for_topic(topic) or ())
            await _create_topic(bootstrap, changelog_topic, partitions, {"cleanup.policy": "compact"})
            producer = AIOKafkaProducer(bootstrap_servers=bootstrap, linger_ms=5, acks=1)
            await producer.start()

        entities: dict[bytes, dict[str, Any]] = {}
        processed = 0
        started = processed_at = None
        cpu_started = cpu_processed = main_started = main_processed = 0.0
        last_record = time.perf_counter()
        while processed < events:
            batches = await consumer.getmany(timeout_ms=FETCH_TIMEOUT_MS)
            if not batches:
                if time.perf_counter() - last_record > STALL_SECONDS:
                    raise RuntimeError(f"{path}: no record for {STALL_SECONDS} s after {processed} events")
                continue
            if started is None:
                started, cpu_started, main_started = time.perf_counter(), time.process_time(), time.thread_time()
            changed: dict[bytes, int] = {}
            for tp, records in batches.items():
                for record in records:
                    event = loads(record.value)
                    key = record.key
                    state = entities.get(key)
                    if state is None:
                        state = entities[key] = {"count": 0, "last_ts": None, "version": 0}
                    state["count"] += 1
                    state["last_ts"] = event["ts"]
                    state["version"] += 1
                    features = event["features"]
                    predict(features)
                    learn(features, event["label"])
                    if changelog:
                        changed[key] = tp.partition
                processed += len(records)
            processed_at = last_record = time.perf_counter()
            cpu_processed, main_processed = time.process_time(), time.thread_time()
            if changelog:
                futures = [
                    await producer.send(changelog_topic, dumps(entities[key]), key=key, partition=partition)
                    for key, partition in changed.items()
                ]
                await asyncio.gather(*futures)
            await consumer.commit()
        committed_at = time.perf_counter()
        cpu, main = cpu_processed - cpu_started, main_processed - main_started
        return _result(path, model_name, processed, started, processed_at, committed_at, len(entities), cpu, main)
    finally:
        if producer is not None:
            await producer.stop()
        await consumer.stop()
        if changelog:
            try:
                await delete_topics(bootstrap, [changelog_topic])
            except Exception:  # noqa: BLE001 - tidying only
                pass


def run_quix(bootstrap: str, topic: str, events: int, model_name: str) -> dict:
    # quixstreams -> confluent-kafka[schemaregistry] -> authlib warns about httpx on import
    # (and forces its warnings to "always"): record them instead of printing them.
    with warnings.catch_warnings(record=True):
        from quixstreams import Application

    model = build_model(model_name)
    predict, learn = model.predict_proba_one, model.learn_one
    state_dir = tempfile.mkdtemp(prefix="quix-baseline-")
    group = f"baseline-quix-{uuid.uuid4().hex[:12]}"
    app = Application(
        broker_address=bootstrap,
        consumer_group=group,
        auto_offset_reset="earliest",
        state_dir=state_dir,
        loglevel="WARNING",
    )
    marks: dict[str, Any] = {"count": 0, "entities": 0, "started": None, "processed": None, "committed": None}
    perf_counter, process_time, thread_time = time.perf_counter, time.process_time, time.thread_time

    def on_event(value: dict, state: Any) -> None:
        if marks["started"] is None:
            marks.update(started=perf_counter(), cpu_started=process_time(), main_started=thread_time())
        entity = state.get("entity")
        if entity is None:
            entity = {"count": 0, "last_ts": None, "version": 0}
            marks["entities"] += 1
        entity["count"] += 1
        entity["last_ts"] = value["ts"]
        entity["version"] += 1
        state.set("entity", entity)
        features = value["features"]
        predict(features)
        learn(features, value["label"])
        marks["count"] += 1
        if marks["count"] >= events:
            marks.update(processed=perf_counter(), cpu_processed=process_time(), main_processed=thread_time())
            _time_final_commit(app, marks)

    sdf = app.dataframe(app.topic(topic, value_deserializer="json"))
    sdf.update(on_event, stateful=True)
    try:
        app.run(count=events, collect=False)
    finally:
        shutil.rmtree(state_dir, ignore_errors=True)
        asyncio.run(_delete_changelogs(bootstrap, f"changelog__{group}--"))
    if marks["count"] < events:
        raise RuntimeError(f"quix stopped after {marks['count']} of {events} events")
    committed = marks["committed"] or perf_counter()
    cpu, main = marks["cpu_processed"] - marks["cpu_started"], marks["main_processed"] - marks["main_started"]
    count, started, processed, entities = marks["count"], marks["started"], marks["processed"], marks["entities"]
    return _result("quix", model_name, count, started, processed, committed, entities, cpu, main)


async def _delete_changelogs(bootstrap: str, prefix: str) -> None:
    """Removes the changelog topics Quix created for this run's consumer group."""
    try:
        await delete_topics(bootstrap, [t for t in await topic_names(bootstrap) if t.startswith(prefix)])
    except Exception:  # noqa: BLE001 - tidying only
        pass


def _time_final_commit(app: Any, marks: dict) -> None:
    """Times the forced checkpoint commit Quix makes when it stops (its last changelog
    flush and offset commit). Wraps the processing context's method on the instance only
    after the N-th event, so nothing is added to the per-event path."""
    context = app._processing_context
    commit = context.commit_checkpoint

    def timed_commit(*args: Any, **kwargs: Any) -> None:
        commit(*args, **kwargs)
        if kwargs.get("force"):
            marks["committed"] = time.perf_counter()

    context.commit_checkpoint = timed_commit


# --- command line -------------------------------------------------------------------


def compare(bootstrap: str, events: int, models: list[str], partitions: int, paths: list[str]) -> list[dict]:
    """One backlog, then every path for every model, each in its own process."""
    topic = f"bench-baselines-{uuid.uuid4().hex[:8]}"
    produce_backlog(bootstrap, topic, events, partitions)
    results = []
    try:
        for model in models:
            for path in paths:
                result = run_path(path, bootstrap, topic, events, model, partitions)
                print(json.dumps(result), flush=True)
                results.append(result)
    finally:
        asyncio.run(delete_topics(bootstrap, [topic]))
    return results


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("path", choices=(*PATHS, "backlog", "compare"))
    parser.add_argument("--bootstrap", default="127.0.0.1:9092")
    parser.add_argument("--topic", help="events topic (compare makes a fresh one)")
    parser.add_argument("--events", type=int, default=100_000)
    parser.add_argument("--model", action="append", help="model name; compare accepts several")
    parser.add_argument("--partitions", type=int, default=None)
    parser.add_argument("--paths", default=",".join(PATHS), help="compare: comma-separated paths")
    args = parser.parse_args()
    models = args.model or ["logreg"]

    if args.path == "compare":
        compare(args.bootstrap, args.events, models, args.partitions or 1, args.paths.split(","))
        return
    if not args.topic:
        parser.error("--topic is required")
    if args.path == "backlog":
        produce_backlog(args.bootstrap, args.topic, args.events, args.partitions or 1)
        print(json.dumps({"topic": args.topic, "events": args.events, "partitions": args.partitions or 1}))
        return
    if len(models) != 1:
        parser.error("one --model per path run")
    if args.path == "quix":
        result = run_quix(args.bootstrap, args.topic, args.events, models[0])
    else:
        result = asyncio.run(
            run_aiokafka(
                args.bootstrap, args.topic, args.events, models[0], args.path == "aiokafka-changelog", args.partitions
            )
        )
    print(json.dumps(result), flush=True)


if __name__ == "__main__":
    main()
