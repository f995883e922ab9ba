"""A stream worker's CPU per event, in process, without Kafka: our work beside River's.

    .venv/bin/python -m benchmarks.worker_cpu [--events 50000] [--model logreg] [--rounds 3] [--profile]
    .venv/bin/python -m benchmarks.worker_cpu --models 1,2,4   (named models: results/worker-cpu-models.json)
    .venv/bin/python -m benchmarks.worker_cpu --learner        (the learner apart: results/learner-cpu-MODEL.json)

Runs the worker's per-batch work on the throughput benchmark's backlog (labelled Phishing
events, 1,000 entities, batches of STREAM_BATCH_SIZE's default) exactly as a worker with
the embedded learner does between fetching a batch and handing its records to the
producer: validate, update the entities' rows, predict, learn, check the model, encode the
examples and the changed rows, append to the training log and the offline feature log,
and build the offline log's Arrow table (what the worker's thread does before Parquet
writes the file, which is left out).
Kafka's own work (fetching, sending) is left out, as is the publishing of model versions.

Beside it, River alone on the same rows (decode with orjson, `predict_proba_one`, then
`learn_one`) and River with the progressive metrics the engine keeps; `our_work_over_river`
is (engine - River with metrics) / River with metrics. CPU time of the process, the fastest
of interleaved rounds (this machine's noise only ever adds time), with the heap frozen after
start-up as a worker freezes it. With --profile, cProfile's top functions by own time.

With --learner, `engine learn`'s share instead: the same events as the examples a worker
apart logs for them (labelled, unpredicted), learned a fetch at a time as `engine learn`
learns them (decode, predict, learn, check the model, the training log's rows); Kafka's
fetch, publications and snapshots left out. With the learner apart it is the slower of the
two processes, so its CPU per event bounds what any split of the worker over two cores
can reach.
"""

from __future__ import annotations

import argparse
import cProfile
import json
import pstats
import sys
import time
from pathlib import Path
from typing import Any

import orjson

from benchmarks.throughput_baselines import rows
from engine.learning import LearningService, learn_records
from engine.process import collect_young_less_often, freeze_heap
from engine.settings import Settings
from engine.worker_modes import EmbeddedLearner
from models.examples import Example, encode_examples
from models.factory import build_model, get_spec
from models.learner import Learner
from models.named import NamedModel
from models.online import OnlineModel, Prediction, metrics_for, update_metrics
from streams.batch_consumer import Record
from streams.events import EventProcessor, ModelLane
from streams.features import FeatureRegistry
from streams.offline_store import OfflineFeatureLog
from streams.records import Contract

BATCH = Settings.from_env({}).stream_batch_size  # what a worker asks of each fetch by default
RESULTS = Path(__file__).parent / "results"


class MemoryRows:
    """A table as TableWriter keeps it: the store at once, the changed rows encoded per batch."""

    def __init__(self) -> None:
        self.data: dict[str, Any] = {}
        self.staged: dict[str, Any] = {}

    def get(self, key: str, partition: int | None = None) -> Any:
        return self.data.get(key)

    def set(self, partition: int, key: str, value: Any) -> None:
        self.data[key] = value
        self.staged[key] = value

    def encode_staged(self) -> list[tuple[bytes, bytes]]:
        staged, self.staged = self.staged, {}
        return [(orjson.dumps(key), orjson.dumps(value)) for key, value in staged.items()]


def backlog(events: int) -> list[list[Record]]:
    encoded = [orjson.dumps({**event, "label": y}) for event, y in rows(events)]
    records = [Record("events", 0, i, None, value, (), None) for i, value in enumerate(encoded)]
    return [records[i : i + BATCH] for i in range(0, len(records), BATCH)]


def run_engine(batches: list[list[Record]], model_name: str, offline_dir: str, models: int = 1) -> float:
    """`models`: how many named models (each `model_name`, each its own learner) learn the stream."""
    learners = [Learner(OnlineModel(model_name)) for _ in range(models)]
    rows_table = MemoryRows()
    offline = OfflineFeatureLog(offline_dir)
    training_log: list[bytes] = []
    contract = Contract(task=get_spec(model_name).task)
    settings = Settings.from_env({"STATE_DIR": offline_dir, "REDIS_URL": ""})
    lanes = []
    for i, learner in enumerate(learners):
        named = NamedModel(f"{model_name}-{i}", model_name, scoped=models > 1)
        # The worker's own half of the learner: what it predicts with and hands examples to.
        mode = EmbeddedLearner(LearningService(settings.for_model(named), learner, FeatureRegistry()))
        lanes.append(ModelLane(named, mode))
    processor = EventProcessor(
        contract, FeatureRegistry(), rows_table, lanes, on_row=offline.append, fresh_predictions=True
    )
    started = time.process_time()
    for batch in batches:
        outcome = processor.process(0, batch)
        [orjson.dumps(record) for _, record in outcome.predictions]
        outcomes = [learner.end_batch() for learner in learners]
        for encoded in encode_examples([outcome.learned for outcome in outcomes]):
            training_log.extend(encoded)
        rows_table.encode_staged()
        offline.take().table()
    return time.process_time() - started


def example_batches(batches: list[list[Record]]) -> list[list[bytes]]:
    """The examples a worker with the learner apart logs for these events, as the learner
    fetches them (a batch per fetch of STREAM_BATCH_SIZE records)."""
    logged = []
    for batch in batches:
        values = []
        for record in batch:
            event = orjson.loads(record.value)
            example = Example(
                event["event_id"],
                event["ts"],
                event["features"],
                event["label"],
                Prediction(None),
                0,
                (record.topic, record.partition, record.offset),
                learner_predicts=True,
            )
            values.append(example.encode())
        logged.append(values)
    return logged


def run_learner(batches: list[list[bytes]], model_name: str) -> float:
    learner = Learner(OnlineModel(model_name))
    training_log: list[bytes] = []
    started = time.process_time()
    for batch in batches:
        _, values = learn_records(learner, batch)
        training_log.extend(values)
    return time.process_time() - started


def run_river(batches: list[list[Record]], model_name: str, with_metrics: bool, models: int = 1) -> float:
    """`models`: how many models (each `model_name`) predict and learn every event in turn,
    decoded once: River's own work for several models on one stream."""
    task = get_spec(model_name).task
    lanes = []
    for _ in range(models):
        model = build_model(model_name)
        lanes.append((model.predict_proba_one, model.learn_one, metrics_for(task)))
    loads = orjson.loads
    started = time.process_time()
    for batch in batches:
        for record in batch:
            event = loads(record.value)
            x, y = event["features"], event["label"]
            for predict, learn, scores in lanes:
                proba = predict(x)
                if with_metrics:
                    update_metrics(scores, task, y, Prediction(max(proba, key=proba.get) if proba else None, proba))
                learn(x, y)
    return time.process_time() - started


def main() -> None:
    import tempfile

    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--events", type=int, default=50_000)
    parser.add_argument("--model", default="logreg")
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--profile", action="store_true")
    parser.add_argument(
        "--models",
        default="",
        help="comma-separated counts of named models learning the stream, e.g. 1,2,4: what each extra one costs",
    )
    parser.add_argument("--learner", action="store_true", help="the learner apart's work instead of the worker's")
    args = parser.parse_args()
    batches = backlog(args.events)
    examples = example_batches(batches) if args.learner else []
    # As a worker does once started: what lives as long as the process is out of the collector's way.
    freeze_heap()
    collect_young_less_often(BATCH)  # as a worker collects
    if args.models:
        report = compare_model_counts(batches, args, [int(n) for n in args.models.split(",")])
        print(json.dumps(report, indent=2))
        RESULTS.joinpath("worker-cpu-models.json").write_text(json.dumps(report, indent=2) + "\n")
        return
    if args.learner:
        report = learner_cost(batches, examples, args)
        print(json.dumps(report, indent=2))
        RESULTS.joinpath(f"learner-cpu-{args.model}.json").write_text(json.dumps(report, indent=2) + "\n")
        return
    if args.profile:
        profiler = cProfile.Profile()
        profiler.enable()
    # Interleaved rounds, the fastest of each kind: this machine's noise only ever adds time.
    river, river_scored, engine = [], [], []
    for _ in range(args.rounds):
        river.append(run_river(batches, args.model, with_metrics=False))
        river_scored.append(run_river(batches, args.model, with_metrics=True))
        with tempfile.TemporaryDirectory() as offline_dir:
            engine.append(run_engine(batches, args.model, offline_dir))
    if args.profile:
        profiler.disable()
        pstats.Stats(profiler).sort_stats("tottime").print_stats(30)
    per_event = 1e6 / args.events
    print(
        json.dumps(
            {
                "command": "python -m benchmarks.worker_cpu " + " ".join(sys.argv[1:]),
                "model": args.model,
                "events": args.events,
                "microseconds_per_event": {
                    "river": round(min(river) * per_event, 1),
                    "river_with_metrics": round(min(river_scored) * per_event, 1),
                    "engine": round(min(engine) * per_event, 1),
                },
                "our_work_over_river": round((min(engine) - min(river_scored)) / min(river_scored), 2),
            },
            indent=2,
        )
    )


def compare_model_counts(batches: list[list[Record]], args: argparse.Namespace, counts: list[int]) -> dict:
    """The engine with 1, 2, 4... named models (each `--model`, each its own learner) beside
    River with metrics alone: each extra model should cost no more than its own River work."""
    import tempfile

    counts = sorted({1, *counts})  # one model: what each extra one is counted from
    river: dict[int, list[float]] = {n: [] for n in counts}
    engine: dict[int, list[float]] = {n: [] for n in counts}
    for _ in range(args.rounds):
        for n in counts:
            river[n].append(run_river(batches, args.model, with_metrics=True, models=n))
            with tempfile.TemporaryDirectory() as offline_dir:
                engine[n].append(run_engine(batches, args.model, offline_dir, models=n))
    per_event = 1e6 / args.events
    river_us = {n: min(times) * per_event for n, times in river.items()}
    engine_us = {n: min(times) * per_event for n, times in engine.items()}

    def each_extra(us: dict[int, float]) -> dict[str, float]:
        return {str(n): round((us[n] - us[1]) / (n - 1), 1) for n in counts if n != 1}

    extra, river_extra = each_extra(engine_us), each_extra(river_us)
    return {
        **_run_facts(args),
        "microseconds_per_event": {
            "river_with_metrics": round(river_us[1], 1),
            **{f"river_with_metrics_{n}_models": round(us, 1) for n, us in river_us.items() if n != 1},
            **{f"engine_{n}_models": round(us, 1) for n, us in engine_us.items()},
        },
        "each_extra_model_microseconds_from_1": extra,
        # Against one model's River work (the measure), and against what River alone
        # adds per extra model when the models take every event in turn (its calls and
        # metrics, the event decoded once: how the engine runs them).
        "each_extra_model_over_river": {n: round(us / river_us[1], 2) for n, us in extra.items()},
        "river_each_extra_model_microseconds_from_1": river_extra,
        "each_extra_model_over_rivers_extra": {n: round(extra[n] / river_extra[n], 2) for n in extra},
    }


def _run_facts(args: argparse.Namespace) -> dict:
    """What a results file says of the run it holds."""
    return {
        "command": "python -m benchmarks.worker_cpu " + " ".join(sys.argv[1:]),
        "model": args.model,
        "events": args.events,
        "rounds": args.rounds,
        "measured_at": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()),
    }


def learner_cost(batches: list[list[Record]], examples: list[list[bytes]], args: argparse.Namespace) -> dict:
    """The learner apart's CPU per event beside River's on the same events, interleaved rounds."""
    river, river_scored, learner = [], [], []
    for _ in range(args.rounds):
        river.append(run_river(batches, args.model, with_metrics=False))
        river_scored.append(run_river(batches, args.model, with_metrics=True))
        learner.append(run_learner(examples, args.model))
    per_event = 1e6 / args.events
    return {
        **_run_facts(args),
        "microseconds_per_event": {
            "river": round(min(river) * per_event, 1),
            "river_with_metrics": round(min(river_scored) * per_event, 1),
            "learner": round(min(learner) * per_event, 1),
        },
        "learner_work_over_river": round((min(learner) - min(river_scored)) / min(river_scored), 2),
    }


if __name__ == "__main__":
    main()
