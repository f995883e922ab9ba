"""What `engine run` costs in CPU at a given ingest rate, below what it can take.

    .venv/bin/python -m benchmarks.cpu_at_rate [--rates 0,500,2000,5000] [--seconds 15]

Starts `engine run` (the defaults: `logreg`, the learner in the worker, one serving
process), trains it on Phishing, then publishes labelled events at each rate in turn (the
latency benchmark's publisher: a process of its own, batches lingering 5 ms), and reads
each process's CPU from /proc over a window of `--seconds` once the rate has held for
three: busy (CPU seconds over wall seconds, 1.0 is one core) and CPU microseconds per
event. The throughput benchmark says what an event costs when the worker is saturated;
this says what a worker keeping up costs, where each fetch brings a few events and the
work done once per fetch (the sends and their acknowledgements, the table's write, model
publications) is most of it.

Results: benchmarks/results/cpu-at-rate.json.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import platform
import sys
import time

from benchmarks.latency import RESULTS, Ingest, _train, engine_process
from benchmarks.process_cpu import CpuMeter
from engine.harness import EngineProcess, remove_topics

SETTLE_SECONDS = 3.0


def measure(engine: EngineProcess, rate: int, seconds: float) -> dict:
    """Each process's CPU over `seconds` of ingestion at `rate` events/s (0: idle)."""
    assert engine.process is not None
    meter = CpuMeter([engine.process.pid])
    ingest = Ingest(engine.settings.kafka_bootstrap, engine.settings.events_topic, rate) if rate else None
    if ingest is not None:
        ingest.start()
    try:
        time.sleep(SETTLE_SECONDS)
        sent_before = ingest.sent if ingest else 0
        start = meter.read()
        time.sleep(seconds)
        end = meter.read()
        sent = (ingest.sent if ingest else 0) - sent_before
    finally:
        if ingest is not None:
            ingest.stop_flag.set()
            ingest.join()
    wall = end.at - start.at
    usage = CpuMeter.usage(start, end, sent)
    if not sent:  # idle: busy only, there is no event to count per
        usage = {name: {"busy": figures["busy"]} for name, figures in usage.items()}
    return {"rate": rate, "events_per_second": round(sent / wall), "cpu": usage}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--rates", default="0,500,2000,5000", help="events/s, comma-separated (0: idle)")
    parser.add_argument("--seconds", type=float, default=15.0, help="each rate's measured window")
    args = parser.parse_args()
    work = RESULTS / "work"
    work.mkdir(parents=True, exist_ok=True)
    engine = engine_process(work).start()
    try:
        asyncio.run(_train(engine))
        engine.wait_until(lambda: engine.samples_learned() >= 1250, what="trained")
        results = []
        for rate in (int(r) for r in args.rates.split(",")):
            results.append(measure(engine, rate, args.seconds))
            print(json.dumps(results[-1]), flush=True)
    finally:
        engine.stop()
        remove_topics([engine])
    report = {
        "command": "python -m benchmarks.cpu_at_rate " + " ".join(sys.argv[1:]),
        "measured_at": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()),
        "machine": f"{platform.machine()} CPython {platform.python_version()}",
        "results": results,
    }
    RESULTS.joinpath("cpu-at-rate.json").write_text(json.dumps(report, indent=2) + "\n")


if __name__ == "__main__":
    main()
