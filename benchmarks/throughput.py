"""Ingestion + learning throughput: the engine side by side with the reference consumers.

    .venv/bin/python -m benchmarks.throughput [--events 100000] [--model logreg --model hoeffding]
                                              [--partitions 1] [--workers 1 --workers 2] [--apart]
                                              [--rounds 3]

One backlog of N labelled Phishing events (1,000 entities, key = entity id) on a fresh
topic; then, each in its own process, on that same backlog, for every model:

- `engine worker`: one stream worker with the embedded learner (what `engine run` runs
  for the stream), with W workers when --workers asks for more (scale-out: W workers in one
  group and the learner apart, `engine learn`); with --apart, also one worker with the
  learner apart (two processes: the learner predicts each labelled event itself, right
  before learning it), and `engine run` with LEARNER=apart (the same, supervised, beside a
  serving process);
- `engine run`: the same plus a serving process, which replicates the feature changelog;
- `aiokafka`, `aiokafka-changelog`, `quix`: benchmarks/throughput_baselines.py;
- with --learner, the learner's own ceiling: `engine learn` alone on an examples topic
  already holding N examples.

Before any path is timed, an untimed engine worker runs over a backlog of its own: a broker
just started is slow for its first minutes, and only the first paths timed would pay for
it. The engine is timed from its first batch of examples on the examples topic to its last
(their Kafka timestamps: each batch is stamped when it is flushed), the others from their
first record received to their last event learned. With the learner apart, the examples
topic shows when the workers were done, so the run is timed to the learner's first
publication of a model that learned every event (`workers_events_per_second`: the workers'
own rate). Results: benchmarks/results/throughput.json.

A small shared machine (2 cores) moves a path's rate by 10-20 % from one minute to the
next, so a ratio of two paths timed minutes apart can be off by as much. With --rounds N
every path runs N times, interleaved (every path once, then every path again), each ratio
is taken between paths of the same round, and the report gives the median of the rounds'
ratios beside each round's.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import platform
import statistics
import sys
import tempfile
import time
import uuid
from collections.abc import Iterator, Sequence
from pathlib import Path

from aiokafka import AIOKafkaConsumer, AIOKafkaProducer, TopicPartition

from benchmarks.process_cpu import CpuMeter
from benchmarks.throughput_baselines import PATHS, produce_backlog, run_path
from engine.harness import KAFKA_BOOTSTRAP, EngineProcess, delete_topics, remove_topics, unique_env
from streams.model_topic import decode_version

RESULTS = Path(__file__).parent / "results"


async def _wait_for_records(
    consumer: AIOKafkaConsumer, topic: str, expected: int, timeout: float, engines: Sequence[EngineProcess]
) -> TopicPartition:
    """Waits until partition 0 of `topic` holds `expected` records (the consumer assigned to
    it). An engine of `engines` that exits before they are all there ends the wait, with its log."""
    tp = TopicPartition(topic, 0)
    deadline = time.monotonic() + timeout
    end = 0
    while True:
        for engine in engines:
            if engine.process is not None and engine.process.poll() is not None:
                raise RuntimeError(
                    f"engine {' '.join(engine.command)} exited with {engine.process.returncode} before"
                    f" {expected} examples were logged:\n{engine.log_tail()}"
                )
        if consumer.partitions_for_topic(topic):
            consumer.assign([tp])
            end = (await consumer.end_offsets([tp]))[tp]
            if end >= expected:
                return tp
        else:
            await consumer._client.force_metadata_update()
        if time.monotonic() > deadline:
            raise TimeoutError(f"only {end} of {expected} records on {topic} after {timeout} s")
        await asyncio.sleep(0.05)  # the end of the CPU window (process_cpu) follows this closely


async def examples_rate(
    bootstrap: str, topic: str, expected: int, timeout: float, engines: Sequence[EngineProcess] = ()
) -> dict:
    """Waits for `expected` examples on the examples topic, then times them by their stamps.
    An engine of `engines` that exits before they are all there ends the wait, with its log."""
    consumer = AIOKafkaConsumer(bootstrap_servers=bootstrap, enable_auto_commit=False, group_id=None)
    await consumer.start()
    try:
        tp = await _wait_for_records(consumer, topic, expected, timeout, engines)
        first_flush_end, after_first = await _first_flush(consumer, tp)
        last = await _record_at(consumer, tp, expected - 1)
        # The first batch was stamped when it was done: time from there, for the records of
        # the batches after it (counting the first batch's too would credit its processing
        # time to the rest: by its share of the backlog, more with larger batches).
        counted = expected - after_first
        seconds = (last.timestamp - first_flush_end) / 1000
        return {
            "events_per_second": round(counted / seconds, 1),
            "seconds": round(seconds, 3),
            "events_timed": counted,
            "first_stamp_ms": first_flush_end,
        }
    finally:
        await consumer.stop()


async def first_record(topic: str, timeout: float, engines: Sequence[EngineProcess] = ()) -> None:
    """Waits for the first record on `topic` (an engine's first batch of examples)."""
    consumer = AIOKafkaConsumer(bootstrap_servers=KAFKA_BOOTSTRAP, enable_auto_commit=False, group_id=None)
    await consumer.start()
    try:
        await _wait_for_records(consumer, topic, 1, timeout, engines)
    finally:
        await consumer.stop()


async def learned_rate(
    bootstrap: str, models_topic: str, examples: dict, expected: int, timeout: float, models: int = 1
) -> dict:
    """With the learner apart, the examples topic shows when the workers were done, not when
    the learner was: times the learners from the first batch of examples (`examples`, what
    `examples_rate` answered) until each of the `models` learners published a model that had
    learned all `expected`. A publication follows learning within one publish interval (at
    least MODEL_PUBLISH_MIN_SECONDS), so this errs slow by up to that."""
    tp = TopicPartition(models_topic, 0)
    consumer = AIOKafkaConsumer(bootstrap_servers=bootstrap, enable_auto_commit=False, group_id=None)
    await consumer.start()
    try:
        consumer.assign([tp])
        consumer.seek(tp, (await consumer.beginning_offsets([tp]))[tp])
        done: dict[bytes, int] = {}  # champion key (a named model's is prefixed) -> when it had learned all
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            for record in (await consumer.getmany(tp, timeout_ms=1000)).get(tp, []):
                if not record.key.endswith(b"champion") or not record.value or record.key in done:
                    continue
                if decode_version(record.value).samples_learned >= expected:
                    done[record.key] = record.timestamp
            if len(done) >= models:
                seconds = (max(done.values()) - examples["first_stamp_ms"]) / 1000
                counted = examples["events_timed"]
                return {"events_per_second": round(counted / seconds, 1), "seconds": round(seconds, 3)}
        raise TimeoutError(f"{len(done)} of {models} models learned {expected} on {models_topic} in {timeout} s")
    finally:
        await consumer.stop()


# A worker sends a batch's examples within milliseconds, and the next batch only after
# processing it (tens of milliseconds at the least over a backlog): a gap this long between
# two examples' stamps is where the first batch ends.
FLUSH_GAP_MS = 20


async def _first_flush(consumer: AIOKafkaConsumer, tp: TopicPartition) -> tuple[int, int]:
    """The stamp of the first batch's last example, and the offset after that batch."""
    consumer.seek(tp, 0)
    previous = None
    while True:
        records = (await consumer.getmany(tp, timeout_ms=1000)).get(tp, [])
        if not records:
            raise RuntimeError(f"no batch boundary on {tp.topic}: one batch held every event; time more events")
        for record in records:
            if previous is not None and record.timestamp - previous.timestamp > FLUSH_GAP_MS:
                return previous.timestamp, record.offset
            previous = record


async def _record_at(consumer: AIOKafkaConsumer, tp: TopicPartition, offset: int):
    consumer.seek(tp, offset)
    while True:
        batch = (await consumer.getmany(tp, timeout_ms=1000, max_records=1)).get(tp, [])
        if batch:
            return batch[0]


def run_engine(
    command: tuple[str, ...],
    topic: str,
    events: int,
    model: str,
    partitions: int,
    workers: int,
    workdir: Path,
    named_models: int = 0,
    apart: bool = False,
    extra_env: dict[str, str] | None = None,
) -> dict:
    """`named_models`: that many named models of `model` (MODELS), each learning the stream;
    timed on the first one's examples topic (the worker sends every model's examples of a
    batch together). With more than one worker, or `apart`, the workers run apart from the
    learner (`engine learn`) and the run is timed to the learner's last example learned."""
    env = unique_env(MODEL=model, EVENTS_TOPIC=topic, TOPIC_PARTITIONS=partitions, REDIS_URL="", LOG_LEVEL="warning")
    env.update(extra_env or {})
    if named_models:
        env["MODELS"] = ",".join(f"m{i}={model}" for i in range(named_models))
    processes = []
    folder = Path(tempfile.mkdtemp(prefix="throughput-", dir=workdir))
    apart = apart or workers > 1
    timed_on_learner = apart or env.get("LEARNER") == "apart"
    if not apart:
        processes.append(EngineProcess(env, folder, command).launch())
    else:
        processes.append(EngineProcess(env, folder / "learner", ("learn",)).launch())
        for i in range(workers):
            processes.append(EngineProcess({**env, "WORKER_ID": str(i)}, folder / f"worker-{i}", ("worker",)).launch())
    try:
        settings = processes[0].settings
        examples_topic = settings.for_model(settings.model).examples_topic
        # CPU is read from the first batch of examples on: start-up (imports, connections) is not ingestion.
        asyncio.run(first_record(examples_topic, timeout=300, engines=processes))
        meter = CpuMeter(process.process.pid for process in processes if process.process is not None)
        started = meter.read()
        rate = asyncio.run(examples_rate(KAFKA_BOOTSTRAP, examples_topic, events, timeout=900, engines=processes))
        counted = rate["events_timed"]
        if timed_on_learner:
            workers_rate = rate
            learners = max(1, named_models)
            rate = asyncio.run(learned_rate(KAFKA_BOOTSTRAP, settings.models_topic, rate, events, 300, learners))
            rate["workers_events_per_second"] = workers_rate["events_per_second"]
        rate["cpu"] = CpuMeter.usage(started, meter.read(), counted)
    finally:
        for process in processes:
            process.stop()
        remove_topics(processes)
    rate.pop("first_stamp_ms", None)
    name = f"engine {' '.join(command)}" if not apart else f"engine, {workers} worker{'s' * (workers > 1)} + learner"
    if extra_env:
        name += "".join(f" {key}={value}" for key, value in extra_env.items())
    if named_models:
        name += f", {named_models} named models"
    result = {"path": name, "model": model, "events": events, **rate}
    if timed_on_learner:
        result["model_version_lag"] = asyncio.run(model_version_lag(KAFKA_BOOTSTRAP, settings.models_topic))
    return result


async def model_version_lag(bootstrap: str, topic: str) -> dict:
    """With workers apart from the learner, each predicts with the latest model version it
    holds: how many samples behind the learner's model that version was, over the run (every
    publication on the models topic carries the lag of the predictions it scored)."""
    tp = TopicPartition(topic, 0)
    consumer = AIOKafkaConsumer(bootstrap_servers=bootstrap, enable_auto_commit=False, group_id=None)
    await consumer.start()
    try:
        consumer.assign([tp])
        end = (await consumer.end_offsets([tp]))[tp]
        consumer.seek(tp, (await consumer.beginning_offsets([tp]))[tp])
        means, peak, examples = [], 0, 0
        position = 0
        while position < end:
            for record in (await consumer.getmany(tp, timeout_ms=1000)).get(tp, []):
                position = record.offset + 1
                if not record.key.endswith(b"champion") or not record.value:
                    continue
                lag = decode_version(record.value).info.prediction_model_lag
                if lag:
                    means.append((lag["mean_samples"], lag["examples"]))
                    peak = max(peak, lag["max_samples"])
                    examples += lag["examples"]
        mean = sum(m * n for m, n in means) / examples if examples else None
        return {"mean_samples": round(mean, 1) if mean is not None else None, "max_samples": peak, "examples": examples}
    finally:
        await consumer.stop()


async def fill_examples(topic: str, events: int) -> None:
    """The examples a stream worker would log for the benchmark's events (labels inline)."""
    from benchmarks.throughput_baselines import _create_topic, rows
    from models.examples import Example
    from models.online import Prediction

    await _create_topic(KAFKA_BOOTSTRAP, topic, 1)
    producer = AIOKafkaProducer(bootstrap_servers=KAFKA_BOOTSTRAP, linger_ms=20, max_batch_size=1 << 20)
    await producer.start()
    try:
        for i, (event, y) in enumerate(rows(events)):
            example = Example(
                event["event_id"],
                event["ts"],
                event["features"],
                y,
                Prediction(True, {True: 0.5, False: 0.5}),
                1,
                ("events", 0, i),
            )
            await producer.send(topic, example.encode(), key=event["event_id"].encode(), partition=0)
        await producer.flush()
    finally:
        await producer.stop()


def learner_ceiling(model: str, events: int, workdir: Path) -> dict:
    """How many examples one learner learns per second, alone: `engine learn` started on an
    examples topic already holding them relearns them all at start, and says how fast."""
    env = unique_env(MODEL=model, REDIS_URL="", LOG_LEVEL="warning")
    process = EngineProcess(env, Path(tempfile.mkdtemp(prefix="learner-", dir=workdir)), ("learn",))
    asyncio.run(fill_examples(process.settings.examples_topic, events))
    process.launch()
    try:
        deadline = time.monotonic() + 900
        while "relearned" not in process.log_path.read_text(errors="replace"):
            if time.monotonic() > deadline:
                raise TimeoutError(process.log_tail())
            time.sleep(0.5)
    finally:
        process.stop()
        remove_topics([process])
    line = next(x for x in process.log_path.read_text(errors="replace").splitlines() if "relearned" in x)
    rate = float(line.split("(")[-1].split(" examples/s")[0])
    return {"path": "learner alone (engine learn)", "model": model, "events": events, "events_per_second": rate}


WARM_UP_EVENTS = 100_000


def warm_up_broker(model: str, workdir: Path) -> None:
    """An engine worker over a backlog of its own, untimed, before any path is timed.

    A broker just started is slow for its first minutes (its JIT compiling the request
    paths, among others): on one, the first path timed (the engine's worker) found the
    broker spending 28.9 µs of CPU an event where it spent 5.9 minutes later, and learned
    19,144 events/s against 23,025; the reference paths, timed after it, paid none of that.
    After a warm-up as large as the default backlog the first path found it at 17.5 µs, the
    second at 8.5: most of the difference, not all of it."""
    topic = f"bench-warm-up-{uuid.uuid4().hex[:8]}"
    produce_backlog(KAFKA_BOOTSTRAP, topic, WARM_UP_EVENTS)
    try:
        run_engine(("worker", "--embedded-learner"), topic, WARM_UP_EVENTS, model, 1, 1, workdir)
    finally:
        asyncio.run(delete_topics(KAFKA_BOOTSTRAP, [topic, f"{topic}.dlq"]))


def run_round(args: argparse.Namespace, model: str, topic: str, workdir: Path) -> Iterator[dict]:
    """Every path asked for, once each, on the backlog in `topic`, for one model."""
    runs: list[tuple[tuple[str, ...], int, bool, dict[str, str]]] = [
        (("worker", "--embedded-learner"), w, False, {}) for w in (args.workers or [1])
    ]
    if args.apart:
        runs.append((("worker",), 1, True, {}))
    runs.append((("run",), 1, False, {}))
    if args.apart:
        runs.append((("run",), 1, False, {"LEARNER": "apart"}))
    for command, workers, apart, extra_env in runs:
        options = {"apart": apart, "extra_env": extra_env}
        yield run_engine(command, topic, args.events, model, args.partitions, workers, workdir, **options)
    for n in filter(None, args.named_models.split(",")):
        embedded = ("worker", "--embedded-learner")
        yield run_engine(embedded, topic, args.events, model, args.partitions, 1, workdir, int(n))
        if args.apart:
            apart_run = {"named_models": int(n), "extra_env": {"LEARNER": "apart"}}
            yield run_engine(("run",), topic, args.events, model, args.partitions, 1, workdir, **apart_run)
    for path in filter(None, args.paths.split(",")):
        yield run_path(path, KAFKA_BOOTSTRAP, topic, args.events, model, args.partitions)
    if args.learner:
        yield learner_ceiling(model, args.events, workdir)


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--events", type=int, default=100_000)
    parser.add_argument(
        "--model", action="append", help="model name (repeat for several); default logreg and hoeffding"
    )
    parser.add_argument("--partitions", type=int, default=1)
    parser.add_argument("--workers", type=int, action="append", help="stream workers (scale-out); default 1")
    parser.add_argument(
        "--apart", action="store_true", help="also one worker with the learner apart (engine worker + engine learn)"
    )
    parser.add_argument(
        "--paths", default=",".join(PATHS), help="reference paths to run (comma-separated; empty: none)"
    )
    parser.add_argument("--learner", action="store_true", help="also the learner's own ceiling (engine learn alone)")
    parser.add_argument("--output", default="throughput.json", help="file name under benchmarks/results/")
    parser.add_argument(
        "--rounds",
        type=int,
        default=1,
        help="every path this many times, interleaved: ratios per round, and their median",
    )
    parser.add_argument(
        "--named-models",
        default="",
        help="also the worker with this many named models of each model (MODELS), comma-separated: 1,2,4",
    )
    args = parser.parse_args()
    if args.rounds < 1:
        parser.error("--rounds takes 1 or more")
    models = args.model or ["logreg", "hoeffding"]
    workdir = RESULTS / "work"
    workdir.mkdir(parents=True, exist_ok=True)
    warm_up_broker(models[0], workdir)
    topic = f"bench-{uuid.uuid4().hex[:8]}"
    produce_backlog(KAFKA_BOOTSTRAP, topic, args.events, args.partitions)
    results = []
    try:
        for round_number in range(1, args.rounds + 1):
            for model in models:
                for result in run_round(args, model, topic, workdir):
                    result["round"] = round_number
                    results.append(result)
                    print(json.dumps(result), flush=True)
    finally:
        asyncio.run(delete_topics(KAFKA_BOOTSTRAP, [topic, f"{topic}.dlq"]))
    report = {
        "command": " ".join(["python -m benchmarks.throughput", *sys.argv[1:]]),
        "events": args.events,
        "partitions": args.partitions,
        "rounds": args.rounds,
        "results": results,
        "ratios": ratios(results),
        "machine": f"{platform.machine()} {platform.python_implementation()} {platform.python_version()}",
        "measured_at": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()),
    }
    print(json.dumps(report["ratios"], indent=2))
    (RESULTS / args.output).write_text(json.dumps(report, indent=2) + "\n")


# The engine's paths, by the name their ratios carry: the embedded worker ("engine") against
# every other path of its round, each of the others against the reference paths only.
ENGINE_PATHS = {
    "engine worker --embedded-learner": "engine",
    "engine run": "engine run",
    "engine, 1 worker + learner": "worker + learner",
    "engine run LEARNER=apart": "engine run LEARNER=apart",
}


def ratios(results: list[dict]) -> dict:
    """Per model: the engine's paths against the other paths of the same round. With
    several rounds each figure is the median of the rounds' ratios, and "<model>, each
    round" lists them."""
    out: dict[str, dict] = {}
    for model in sorted({r["model"] for r in results}):
        by_round: dict[str, list[float]] = {}
        for round_number in sorted({r.get("round", 1) for r in results}):
            rates = {
                r["path"]: r["events_per_second"]
                for r in results
                if r["model"] == model and r.get("round", 1) == round_number
            }
            for engine_path, name in ENGINE_PATHS.items():
                engine = rates.get(engine_path)
                if not engine:
                    continue
                for path, rate in rates.items():
                    if path != engine_path and (name == "engine" or path not in ENGINE_PATHS):
                        by_round.setdefault(f"{name} / {path}", []).append(round(engine / rate, 2))
        out[model] = {key: round(statistics.median(values), 2) for key, values in by_round.items()}
        if any(len(values) > 1 for values in by_round.values()):
            out[f"{model}, each round"] = by_round
    return out


if __name__ == "__main__":
    main()
