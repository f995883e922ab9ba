"""Where a stream worker's CPU goes, sampled with py-spy over one backlog.

    .venv/bin/python -m benchmarks.profile_worker [--events 100000] [--model logreg] [--named-models N] [--gil]

Fills a fresh topic with N labelled Phishing events, starts `engine worker --embedded-learner`
on it, attaches py-spy (on-CPU samples only) from its first example until every example is
logged, and sorts the samples two ways:

- by the file of the innermost frame (self time): River, our packages, Faust and aiokafka,
  the event loop, everything else;
- by what the stack passes through (inclusive): the River calls, the per-event path
  (`EventProcessor.process` without the River calls inside it), the learner, the sends.

With --gil only the samples of the thread holding the GIL count: the worker's one core,
without the time its other threads spend in C with the GIL released (Parquet, RocksDB);
each sample is read with the worker paused, the only way its stacks come out whole (see
main). Without it, every thread is sampled without pausing, and River's share comes out
far too low: use --gil for `engine_work_over_river`.

With --named-models N the worker runs N named models of `--model` (MODELS), each its own
learner; timed on the first one's examples (results: profile-worker-N-models.json).

Results: benchmarks/results/profile-worker.json. py-spy needs ptrace rights (root, or
kernel.yama.ptrace_scope = 0).
"""

from __future__ import annotations

import argparse
import asyncio
import json
import platform
import signal
import subprocess
import sys
import tempfile
import time
import uuid
from collections import Counter
from pathlib import Path

from benchmarks.throughput import RESULTS, examples_rate, first_record
from benchmarks.throughput_baselines import produce_backlog
from engine.harness import KAFKA_BOOTSTRAP, ROOT, EngineProcess, delete_topics, remove_topics, unique_env

PY_SPY = Path(sys.executable).parent / "py-spy"

# (bucket, substring of a frame's full file path), first match wins.
SELF_BUCKETS = [
    ("river", "/river/"),
    ("faust and mode", "/faust/"),
    ("faust and mode", "/mode/"),
    ("aiokafka client", "/aiokafka/"),
    ("asyncio", "/asyncio/"),
    ("prometheus_client", "/prometheus_client/"),
    ("ours: streams/", f"{ROOT}/streams/"),
    ("ours: models/", f"{ROOT}/models/"),
    ("ours: engine/", f"{ROOT}/engine/"),
]
PER_EVENT_PATH = f"process ({ROOT}/streams/events.py:"
# (name, substrings of a raw frame "function (path:line)"), counted once per sample.
INCLUSIVE = {
    "river (all calls)": ("/river/",),
    "per-event path: EventProcessor.process": (PER_EVENT_PATH,),
    "learner: learn a batch of examples": (f"{ROOT}/models/learner.py:",),
    "poisoned-model guard: checkpoints and state checks": ("_take_checkpoint (", f"{ROOT}/models/guard.py:"),
    "snapshots and model publications": (f"{ROOT}/models/snapshots.py:", f"{ROOT}/models/offload.py:"),
    "offline feature log (Parquet)": (f"{ROOT}/models/parquet_log.py:", f"{ROOT}/streams/offline_store.py:"),
    "changelog writes": (f"{ROOT}/streams/changelog.py:",),
    "sends (aiokafka producer)": ("/aiokafka/producer/",),
    "fetch (aiokafka fetcher)": ("/aiokafka/consumer/fetcher.py:",),
    "prometheus_client": ("/prometheus_client/",),
}


def frame_file(frame: str) -> str:
    """py-spy's raw frames read "function (path:line)"."""
    start = frame.rfind("(")
    return frame[start + 1 :] if start >= 0 else frame


def summarize(raw: str) -> dict:
    self_time: Counter[str] = Counter()
    inclusive: Counter[str] = Counter()
    process_with_river = 0
    total = 0
    for line in raw.splitlines():
        stack, _, count_text = line.rpartition(" ")
        if not stack or not count_text.isdigit():
            continue
        count = int(count_text)
        frames = stack.split(";")
        total += count
        leaf = frame_file(frames[-1])
        bucket = next((name for name, part in SELF_BUCKETS if part in leaf), "other")
        self_time[bucket] += count
        for name, parts in INCLUSIVE.items():
            if any(part in frame for frame in frames for part in parts):
                inclusive[name] += count
        if any(PER_EVENT_PATH in f for f in frames) and any("/river/" in f for f in frames):
            process_with_river += count

    def share(n: int) -> float:
        return round(100 * n / total, 1) if total else 0.0

    per_event_own = inclusive["per-event path: EventProcessor.process"] - process_with_river
    river = inclusive["river (all calls)"]
    return {
        "samples": total,
        "self_percent": {name: share(n) for name, n in self_time.most_common()},
        "inclusive_percent": {name: share(inclusive[name]) for name in INCLUSIVE},
        "per_event_path_without_river_percent": share(per_event_own),
        "engine_work_over_river": round((total - river) / river, 2) if river else None,
    }


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--events", type=int, default=100_000)
    parser.add_argument("--model", default="logreg")
    # 1,000 a second: at 250 a 100,000-event backlog gave about 600-1,000 samples, and the
    # ratio moved from 3.8 to 5.5 between two runs of the same code.
    parser.add_argument("--rate", type=int, default=1000, help="py-spy samples per second")
    parser.add_argument("--named-models", type=int, default=0, help="that many named models of --model (MODELS)")
    parser.add_argument("--gil", action="store_true", help="only samples of the thread holding the GIL")
    args = parser.parse_args()
    if not PY_SPY.exists():
        sys.exit("py-spy is missing: .venv/bin/pip install -e '.[bench]'")
    workdir = RESULTS / "work"
    workdir.mkdir(parents=True, exist_ok=True)
    topic = f"bench-{uuid.uuid4().hex[:8]}"
    produce_backlog(KAFKA_BOOTSTRAP, topic, args.events)
    env = unique_env(MODEL=args.model, EVENTS_TOPIC=topic, REDIS_URL="", LOG_LEVEL="warning")
    if args.named_models:
        env["MODELS"] = ",".join(f"m{i}={args.model}" for i in range(args.named_models))
    folder = Path(tempfile.mkdtemp(prefix="profile-", dir=workdir))
    worker = EngineProcess(env, folder, ("worker", "--embedded-learner")).launch()
    raw_path = folder / "worker.raw"
    spy = None
    try:
        # Sampling starts at the first example: the start-up (imports, connections) is not ingestion.
        examples_topic = worker.settings.for_model(worker.settings.model).examples_topic
        asyncio.run(first_record(examples_topic, timeout=120, engines=[worker]))
        pid = str(worker.process.pid) if worker.process else ""
        # With --gil each stack is read with the worker paused (it runs at about half its
        # rate while sampled): read without pausing, a stack is often torn, and River's short
        # calls at its top are lost to the frames below them, ours. On the worker's own work
        # in process, where River's share is known (13.4 of 30.0 µs an event, 44.6 %), paused
        # samples gave River 44.8 % and unpaused ones 13.1 %. Every thread paused 1,000 times
        # a second slowed the worker tenfold, so without --gil it is sampled unpaused, and
        # River's share is understated.
        command = [str(PY_SPY), "record", "--format", "raw", "--full-filenames"]
        command.append("--gil" if args.gil else "--nonblocking")
        spy = subprocess.Popen(
            [*command, "--rate", str(args.rate), "-o", str(raw_path), "--pid", pid],
            stdout=subprocess.DEVNULL,
            stderr=subprocess.PIPE,
        )
        rate = asyncio.run(examples_rate(KAFKA_BOOTSTRAP, examples_topic, args.events, timeout=900, engines=[worker]))
    finally:
        if spy is not None:
            spy.send_signal(signal.SIGINT)
            try:
                spy.wait(timeout=60)
            except subprocess.TimeoutExpired:
                spy.kill()
        worker.stop()
        remove_topics([worker])
        asyncio.run(delete_topics(KAFKA_BOOTSTRAP, [topic, f"{topic}.dlq"]))
    if not raw_path.exists():
        sys.exit(f"py-spy wrote no profile: {spy.stderr.read().decode(errors='replace') if spy.stderr else ''}")
    report = {
        "command": " ".join(["python -m benchmarks.profile_worker", *sys.argv[1:]]),
        "measured_at": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()),
        "machine": f"{platform.machine()} CPython {platform.python_version()}",
        "model": args.model,
        "named_models": args.named_models,
        "events": args.events,
        "events_per_second_while_profiled": rate["events_per_second"],
        **summarize(raw_path.read_text()),
    }
    output = f"profile-worker-{args.named_models}-models.json" if args.named_models else "profile-worker.json"
    (RESULTS / output).write_text(json.dumps(report, indent=2) + "\n")
    print(json.dumps(report, indent=2))


if __name__ == "__main__":
    main()
