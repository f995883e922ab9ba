"""Where a stream worker's CPU goes, sampled with py-spy over one backlog.

    .venv/bin/python -m benchmarks.profile_worker [--events 100000] [--model logreg] [--named-models N] [--gil]

Fills a fresh topic with N labelled Phishing events, starts `engine worker --embedded-learner`
on it, attaches py-spy (on-CPU samples only) from its first example until every example is
logged, and sorts the samples two ways:

- by the file of the innermost frame (self time): River, our packages, Faust and aiokafka,
  the event loop, everything else;
- by what the stack passes through (inclusive): the River calls, the per-event path
  (`EventProcessor.process` without the River calls inside it), the learner, the sends.

With --gil only the samples of the thread holding the GIL count, each read with the
worker paused, the only way its stacks come out whole (see main); `engine_work_over_river`
then counts every thread's CPU, read from /proc over a window before sampling begins (the
main thread's, Faust's fetch thread's, the Parquet writes'), with River's share of it read
from the main thread's samples (`counted_in_full`); `engine_work_over_river_sampled` is the samples'
ratio alone, which leaves out most of the other threads' time. Without --gil every thread
is sampled without pausing, and River's share comes out far too low.

With --named-models N the worker runs N named models of `--model` (MODELS), each its own
learner; timed on the first one's examples (results: profile-worker-N-models.json).

Results: benchmarks/results/profile-worker.json (profile-worker-MODEL.json for another
model). py-spy needs ptrace rights (root, or kernel.yama.ptrace_scope = 0).
"""

from __future__ import annotations

import argparse
import asyncio
import json
import platform
import re
import signal
import subprocess
import sys
import tempfile
import time
import uuid
from collections import Counter
from pathlib import Path

from benchmarks.process_cpu import thread_cpu_seconds
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
# The window each thread's CPU is read over, unsampled, before py-spy attaches: about half
# of a 100,000-event backlog at the worker's rate (`logreg`). Over one second the Parquet
# thread's share moved from 1 to 6 % (`hoeffding`) with whether a file was written in it.
UNSAMPLED_SECONDS = 2.0
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


THREAD_FRAME = re.compile(r"^thread \((\w+)\): ?(.*)$")


def summarize(raw: str) -> dict:
    self_time: Counter[str] = Counter()
    inclusive: Counter[str] = Counter()
    by_thread: Counter[str] = Counter()
    river_by_thread: Counter[str] = Counter()
    names: dict[str, str] = {}
    process_with_river = 0
    total = 0
    for line in raw.splitlines():
        stack, _, count_text = line.rpartition(" ")
        if not stack or not count_text.isdigit():
            continue
        count = int(count_text)
        frames = stack.split(";")
        thread = THREAD_FRAME.match(frames[0])  # py-spy --threads: the sampled thread first
        if thread is not None:
            frames = frames[1:]
            by_thread[thread.group(1)] += count
            names[thread.group(1)] = thread.group(2)
            if any("/river/" in frame for frame in frames):
                river_by_thread[thread.group(1)] += count
        if not frames:
            continue
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
        "engine_work_over_river_sampled": round((total - river) / river, 2) if river else None,
        "samples_by_thread": {f"{tid} {names[tid]}": n for tid, n in by_thread.most_common()},
        "river_samples_by_thread": dict(river_by_thread),
    }


def counted_in_full(report: dict, pid: int, cpu_before: dict[int, float], cpu_after: dict[int, float]) -> dict:
    """Our work over River's with every thread's CPU counted: River's share of the process's
    CPU is its share of the main thread's samples (read with the worker paused: whole stacks)
    times the main thread's share of the process's CPU, read from /proc over a window just
    before sampling began (the sampler's pauses cost every thread CPU of their own). Whatever
    else the process spent, on any thread, is ours: Faust's fetch thread, the Parquet writes.
    The samples alone leave the other threads out: paused 1,000 times a second, Faust's fetch
    thread showed in 0.5-0.8 % of them where /proc counted it at 6-7.5 % of the worker's CPU."""
    spent = {tid: cpu_after[tid] - cpu_before.get(tid, 0.0) for tid in cpu_after}
    total = sum(seconds for seconds in spent.values() if seconds > 0)
    main_samples = next((n for key, n in report["samples_by_thread"].items() if key.split()[0] == str(pid)), 0)
    river_main = report["river_samples_by_thread"].get(str(pid), 0)
    if not total or not main_samples or not river_main:
        return {"engine_work_over_river": None}
    main_share = spent.get(pid, 0.0) / total
    river_share = main_share * river_main / main_samples
    return {
        "unsampled_cpu_percent_by_thread": {
            ("main" if tid == pid else str(tid)): round(100 * seconds / total, 1)
            for tid, seconds in sorted(spent.items(), key=lambda item: -item[1])
            if seconds > 0
        },
        "river_share_of_main_thread_percent": round(100 * river_main / main_samples, 1),
        "river_share_of_process_percent": round(100 * river_share, 1),
        "engine_work_over_river": round((1 - river_share) / river_share, 2),
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
        command = [str(PY_SPY), "record", "--format", "raw", "--full-filenames", "--threads"]
        command.append("--gil" if args.gil else "--nonblocking")
        # Each thread's CPU over a window before sampling begins (see counted_in_full).
        cpu_before = thread_cpu_seconds(int(pid))
        time.sleep(UNSAMPLED_SECONDS)
        cpu_after = thread_cpu_seconds(int(pid))
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
        "events_per_second": rate["events_per_second"],  # over the whole backlog, the sampled part at about half speed
        **summarize(raw_path.read_text()),
    }
    if args.gil:
        report.update(counted_in_full(report, int(pid), cpu_before, cpu_after))
    output = f"profile-worker-{args.named_models}-models.json" if args.named_models else "profile-worker.json"
    if args.model != "logreg":
        output = output.replace(".json", f"-{args.model}.json")
    (RESULTS / output).write_text(json.dumps(report, indent=2) + "\n")
    print(json.dumps(report, indent=2))


if __name__ == "__main__":
    main()
