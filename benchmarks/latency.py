"""Open-loop latency of POST /predict, with vegeta, side by side with a bare Starlette +
River endpoint and with chantilly, in one run.

    make bench-latency            # or: .venv/bin/python -m benchmarks.latency [--rate 1000] [--duration 10]
                                  #     [--ingest-rate 2000 --ingest-rate 5000]

Scenarios (each after a 2 s warm-up at the same rate):
  engine cache miss, idle       every request has features never seen before
  ... closed loop               16 connections as fast as they are answered (max throughput)
  engine cache hit, idle        the same request again and again (L1)
  engine fallback, idle         an untrained Hoeffding tree: every answer is the prior/default
  engine cache miss, ingesting  while a producer publishes --ingest-rate events/s to the engine
  bare Starlette + River        the ceiling for this stack
  chantilly                     River's own deployment tool, at --chantilly-rate (it serves ~100/s)

Prints and saves p50/p95/p99/p99.9, achieved throughput and errors to
benchmarks/results/latency.json and a plot to benchmarks/results/latency.png.
"""

from __future__ import annotations

import argparse
import asyncio
import base64
import csv
import io
import json
import multiprocessing
import os
import platform
import shutil
import subprocess
import sys
import tempfile
import time
import uuid
from pathlib import Path

import aiohttp
import httpx
import numpy as np
import orjson
from aiokafka import AIOKafkaProducer

from engine.harness import ROOT, EngineProcess, remove_topics, unique_env
from engine.publish import dataset_events

RESULTS = Path(__file__).parent / "results"
# Closed loop: short, and with enough distinct bodies that the engine never sees one twice.
CLOSED_LOOP_SECONDS = 3
FRESHNESS_GIVE_UP_SECONDS = 10
FRESHNESS_POLL_SECONDS = 0.001  # the measurement's resolution: about 1 ms plus one request (see freshness)
CLOSED_LOOP_BODIES = 30_000
PIN_LOAD_GENERATOR = os.cpu_count() and os.cpu_count() >= 2 and shutil.which("taskset") is not None
VEGETA = ROOT / ".state/bin/vegeta"
CHANTILLY_PYTHON = ROOT / ".state/chantilly-venv/bin/python"


def targets_file(path: Path, url: str, bodies: list[dict]) -> Path:
    with open(path, "wb") as out:
        for body in bodies:
            target = {
                "method": "POST",
                "url": url,
                "body": base64.b64encode(orjson.dumps(body)).decode(),
                "header": {"Content-Type": ["application/json"]},
            }
            out.write(orjson.dumps(target) + b"\n")
    return path


def with_event_ids(bodies: list[dict], tag: str) -> list[dict]:
    """The same requests, each with an event_id of its own: served predictions to be logged."""
    return [{**body, "event_id": f"{tag}-{i}"} for i, body in enumerate(bodies)]


def served_log_cost(engine: EngineProcess, work: Path, rate: int, duration: float, n_requests: int) -> list[dict]:
    """/predict with an event_id (logged for its label) against /predict without, cache miss,
    alternated twice so that drift in the machine's load hits both alike."""
    url = f"{engine.base_url}/predict"
    results = []
    for round_ in range(2):
        start = (round_ + 1) * 100 * n_requests
        plain = targets_file(work / "plain.jsonl", url, unique_bodies(n_requests, start=start))
        bodies = with_event_ids(unique_bodies(n_requests, start=start + n_requests), f"s{round_}")
        logged = targets_file(work / "logged.jsonl", url, bodies)
        results.append(measure("engine cache miss, idle", plain, rate, duration))
        results.append(measure("engine cache miss with event_id, idle", logged, rate, duration))
    return results


def unique_bodies(n: int, chantilly: bool = False, start: int = 0) -> list[dict]:
    """Phishing rows with a tiny per-request jitter, so no two requests share a cache key."""
    rows = [event for event, _ in dataset_events("Phishing", entities=500)]
    bodies = []
    for i in range(start, start + n):
        event = rows[i % len(rows)]
        features = {**event["features"], "request_jitter": i * 1e-9}
        bodies.append({"features": features} if chantilly else {"entity_id": event["entity_id"], "features": features})
    return bodies


def attack(targets: Path, rate: int, duration: float, connections: int | None = None) -> dict:
    """rate 0 is closed loop: 16 connections sending as fast as answers come back.
    `connections` caps the open loop's concurrency (chantilly breaks with more than one)."""
    if not rate:
        pacing = ["-rate=0", "-workers=16", "-max-workers=16"]
    elif connections:
        pacing = [f"-rate={rate}/s", f"-workers={connections}", f"-max-workers={connections}"]
    else:
        pacing = [f"-rate={rate}/s", "-workers=32", "-max-workers=256"]
    command = [
        str(VEGETA),
        "attack",
        f"-targets={targets}",
        "-format=json",
        *pacing,
        f"-duration={duration}s",
        "-timeout=5s",
    ]
    # The load generator gets one core of its own; the server under test gets the other.
    if PIN_LOAD_GENERATOR:
        command = ["taskset", "-c", "1", *command]
    raw = subprocess.run(command, capture_output=True, check=True, env={**os.environ, "GOMAXPROCS": "1"}).stdout
    encoded = subprocess.run([str(VEGETA), "encode", "-to=csv"], input=raw, capture_output=True, check=True).stdout
    latencies, errors, statuses = [], 0, {}
    first = last = None
    for row in csv.reader(io.StringIO(encoded.decode())):
        timestamp_ns, code, latency_ns = int(row[0]), int(row[1]), int(row[2])
        statuses[code] = statuses.get(code, 0) + 1
        if code != 200 or row[5]:
            errors += 1
        latencies.append(latency_ns / 1e6)
        end = timestamp_ns + latency_ns
        first = timestamp_ns if first is None else min(first, timestamp_ns)
        last = end if last is None else max(last, end)
    lat = np.array(latencies)
    ok = len(latencies) - errors
    return {
        "requests": len(latencies),
        "errors": errors,
        "status_codes": {str(k): v for k, v in sorted(statuses.items())},
        "throughput_rps": round(ok / ((last - first) / 1e9), 1) if ok else 0.0,
        "p50_ms": round(float(np.percentile(lat, 50)), 3),
        "p95_ms": round(float(np.percentile(lat, 95)), 3),
        "p99_ms": round(float(np.percentile(lat, 99)), 3),
        "p99_9_ms": round(float(np.percentile(lat, 99.9)), 3),
        "max_ms": round(float(lat.max()), 3),
    }


WARM_UP_SECONDS = 2
OVERSHOOT = 1.2  # vegeta and ghz send a little more than rate x duration


def targets_size(rate: int, duration: float) -> int:
    """How many distinct requests a file needs for a run and its warm-up."""
    return int(rate * (duration + WARM_UP_SECONDS) * OVERSHOOT)


def warm_up_size(rate: int) -> int:
    """How many requests a warm-up sends."""
    return int(rate * WARM_UP_SECONDS * OVERSHOOT)


def warm_up_targets(targets: Path, rate: int) -> Path:
    """The file's last targets, as many as a warm-up sends: vegeta starts every attack at the
    file's first target, so a warm-up on the run's own targets made its first two seconds
    cache hits. Files are sized for the run and the warm-up (`targets_size`)."""
    lines = targets.read_bytes().splitlines(keepends=True)
    warm = targets.with_name(f"{targets.stem}-warm-up{targets.suffix}")
    warm.write_bytes(b"".join(lines[-warm_up_size(rate) :]))
    return warm


def measure(name: str, targets: Path, rate: int, duration: float, connections: int | None = None) -> dict:
    if rate:  # warm-up; a closed loop runs after the open ones and would replay its bodies as cache hits
        attack(warm_up_targets(targets, rate), rate, WARM_UP_SECONDS, connections)
    result = {"scenario": name, "rate": rate, "duration_s": duration, **attack(targets, rate, duration, connections)}
    if connections:
        result["connections"] = connections
    print(
        f"{name:<34} rate {rate or 'max':>5}/s  p50 {result['p50_ms']:>8.3f} ms  p99 {result['p99_ms']:>8.3f} ms  "
        f"p99.9 {result['p99_9_ms']:>8.3f} ms  {result['throughput_rps']:>8.1f} req/s  errors {result['errors']}",
        flush=True,
    )
    return result


async def _train(engine: EngineProcess) -> None:
    producer = AIOKafkaProducer(bootstrap_servers=engine.settings.kafka_bootstrap, linger_ms=5)
    await producer.start()
    try:
        for event, y in dataset_events("Phishing", entities=500):
            await producer.send(
                engine.settings.events_topic, orjson.dumps({**event, "label": y}), key=event["entity_id"].encode()
            )
        await producer.flush()
    finally:
        await producer.stop()


class Ingest(multiprocessing.Process):
    """Publishes labelled events at a fixed rate until stopped, from a process of its own: in a
    thread of this one it would take the GIL from the freshness probes and delay them."""

    def __init__(self, bootstrap: str, topic: str, rate: int) -> None:
        super().__init__(daemon=True)
        self.bootstrap, self.topic, self.rate = bootstrap, topic, rate
        self.stop_flag = multiprocessing.Event()
        self._sent = multiprocessing.Value("q", 0)

    @property
    def sent(self) -> int:
        return int(self._sent.value)

    def run(self) -> None:
        asyncio.run(self._run())

    async def _run(self) -> None:
        rows = list(dataset_events("Phishing", entities=500))
        producer = AIOKafkaProducer(bootstrap_servers=self.bootstrap, linger_ms=5)
        await producer.start()
        started = time.perf_counter()
        sent = 0
        try:
            while not self.stop_flag.is_set():
                event, y = rows[sent % len(rows)]
                body = {**event, "event_id": f"ingest-{sent}", "label": y}
                await producer.send(self.topic, orjson.dumps(body), key=event["entity_id"].encode())
                sent += 1
                if sent % 100 == 0:
                    self._sent.value = sent
                ahead = started + sent / self.rate - time.perf_counter()
                if ahead > 0:
                    await asyncio.sleep(ahead)
        finally:
            self._sent.value = sent
            await producer.stop()


def wait_http(url: str, timeout: float = 60.0, method: str = "GET", **kwargs) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        try:
            httpx.request(method, url, timeout=1.0, **kwargs)
            return
        except httpx.HTTPError:
            time.sleep(0.2)
    raise RuntimeError(f"{url} did not answer")


def plot(results: list[dict], path: Path) -> None:
    import textwrap

    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    # Eleven scenarios side by side: names wrapped narrow enough not to run into each other.
    names = [
        "\n".join(textwrap.wrap(r["scenario"].replace(", ", " · "), 16)) + f"\n({r['rate'] or 'max'}/s)"
        for r in results
    ]
    quantiles = [("p50_ms", "p50"), ("p95_ms", "p95"), ("p99_ms", "p99"), ("p99_9_ms", "p99.9")]
    fig, ax = plt.subplots(figsize=(15, 6.5))
    width = 0.2
    for i, (key, label) in enumerate(quantiles):
        ax.bar([j + i * width for j in range(len(results))], [r[key] for r in results], width, label=label)
    ax.set_xticks([j + 1.5 * width for j in range(len(results))], names, fontsize=8)
    ax.set_yscale("log")
    ax.set_ylabel("latency (ms, log scale)")
    ax.set_title("POST /predict latency (vegeta; open loop at a fixed rate, or closed loop at max)")
    ax.legend()
    ax.grid(axis="y", which="both", alpha=0.3)
    fig.tight_layout()
    fig.savefig(path, dpi=110)


def engine_process(work: Path, **settings: object) -> EngineProcess:
    return EngineProcess(
        unique_env(LOG_LEVEL="warning", **settings), Path(tempfile.mkdtemp(prefix="engine-", dir=work))
    )


async def freshness(engine: EngineProcess, probes: int, route: str) -> dict:
    """Time from an event's publish, acknowledged by Kafka, until `route` reflects it.

    Each probe publishes one event for an entity of its own, then asks the serving process
    (GET /features, or POST /predict and its entity_known) until the update shows. The
    asking is done with aiohttp on one kept-alive connection: a request costs the probe
    about 0.35 ms end to end, where httpx's own work made it 1.1 ms and every figure
    about 1.3 ms later than the engine showed the update (benchmarks/LATENCY.md). Each
    request's own time is reported (`probe_request_p50_ms`): the measurement's resolution
    is that plus FRESHNESS_POLL_SECONDS."""
    producer = AIOKafkaProducer(bootstrap_servers=engine.settings.kafka_bootstrap, acks="all", linger_ms=0)
    await producer.start()
    seconds, requests = [], []
    tag = uuid.uuid4().hex[:6]
    json_body = {"content-type": "application/json"}
    try:
        timeout = aiohttp.ClientTimeout(total=5.0)
        async with aiohttp.ClientSession(engine.base_url, timeout=timeout) as client:
            for k in range(probes):
                entity = f"fresh-{tag}-{k}"
                body = {
                    "event_id": f"fresh-{tag}-{k}",
                    "entity_id": entity,
                    "ts": time.time(),
                    "features": {"https": 1.0},
                }
                question = orjson.dumps({"entity_id": entity, "features": {}})
                await producer.send_and_wait(engine.settings.events_topic, orjson.dumps(body), key=entity.encode())
                acked = time.perf_counter()
                while True:
                    asked = time.perf_counter()
                    if route == "/features":
                        async with client.get("/features", params={"entity_id": entity}) as response:
                            seen = orjson.loads(await response.read())["rows"][0]["known"]
                    else:
                        async with client.post("/predict", data=question, headers=json_body) as response:
                            seen = orjson.loads(await response.read())["entity_known"]
                    answered = time.perf_counter()
                    requests.append(answered - asked)
                    if seen:
                        seconds.append(answered - acked)
                        break
                    if answered - acked > FRESHNESS_GIVE_UP_SECONDS:
                        # The worker is behind the ingest rate: every later probe would wait
                        # behind the same backlog. Reported as such, not as a latency.
                        return {"probes": k + 1, "visible": len(seconds), "fell_behind": True}
                    # Asking back to back would keep a core busy (this client and the serving
                    # process) that the worker needs on a 2-core machine.
                    await asyncio.sleep(FRESHNESS_POLL_SECONDS)
                await asyncio.sleep(0.01)
    finally:
        await producer.stop()
    values = np.array(seconds) * 1000
    return {
        "probes": probes,
        "visible": len(seconds),
        "p50_ms": round(float(np.percentile(values, 50)), 2),
        "p99_ms": round(float(np.percentile(values, 99)), 2),
        "max_ms": round(float(values.max()), 2),
        "probe_request_p50_ms": round(float(np.percentile(np.array(requests) * 1000, 50)), 3),
    }


async def model_staleness(engine: EngineProcess, probes: int) -> dict:
    """Time from a label being learned (its example stamped on the examples topic) until the
    served model includes it (GET /models counts it in samples_learned)."""
    from aiokafka import AIOKafkaConsumer, TopicPartition

    producer = AIOKafkaProducer(bootstrap_servers=engine.settings.kafka_bootstrap, acks="all", linger_ms=0)
    tp = TopicPartition(engine.settings.examples_topic, 0)
    consumer = AIOKafkaConsumer(
        bootstrap_servers=engine.settings.kafka_bootstrap, enable_auto_commit=False, group_id=None
    )
    await producer.start()
    await consumer.start()
    consumer.assign([tp])
    consumer.seek(tp, (await consumer.end_offsets([tp]))[tp])
    seconds = []
    tag = uuid.uuid4().hex[:6]
    try:
        async with httpx.AsyncClient(base_url=engine.base_url, timeout=5.0) as client:
            for k in range(probes):
                body = {
                    "event_id": f"stale-{tag}-{k}",
                    "entity_id": "staleness",
                    "ts": time.time(),
                    "features": {"https": float(k % 2)},
                    "label": k % 2 == 0,
                }
                await producer.send_and_wait(engine.settings.events_topic, orjson.dumps(body), key=b"staleness")
                record = None
                while record is None:
                    for r in (await consumer.getmany(tp, timeout_ms=1000)).get(tp, []):
                        if orjson.loads(r.value)["event_id"] == body["event_id"]:
                            record = r
                learned_at, samples = record.timestamp / 1000, record.offset + 1
                while (await client.get("/models")).json()["serving"]["samples_learned"] < samples:
                    await asyncio.sleep(0.002)
                seconds.append(time.time() - learned_at)
    finally:
        await producer.stop()
        await consumer.stop()
    values = np.array(seconds) * 1000
    return {
        "probes": probes,
        "p50_ms": round(float(np.percentile(values, 50)), 2),
        "p99_ms": round(float(np.percentile(values, 99)), 2),
        "max_ms": round(float(values.max()), 2),
    }


def ingesting(
    engine: EngineProcess,
    work: Path,
    url: str,
    rate: int,
    args: argparse.Namespace,
    n_requests: int,
    start: int,
    freshness_results: list[dict],
) -> dict:
    """Cache misses at args.rate, then freshness probes, while `rate` events/s are published."""
    ingest = Ingest(engine.settings.kafka_bootstrap, engine.settings.events_topic, rate)
    ingest.start()
    try:
        bodies = unique_bodies(n_requests, start=start * n_requests)
        targets = targets_file(work / f"ingest-{rate}.jsonl", url, bodies)
        result = measure(f"engine cache miss, ingesting {rate}/s", targets, args.rate, args.duration)
        for route in ("/features", "/predict"):
            freshness_results.append(
                {
                    "scenario": f"freshness {route}, ingesting {rate}/s",
                    **asyncio.run(freshness(engine, args.probes, route)),
                }
            )
            print(freshness_results[-1], flush=True)
    finally:
        ingest.stop_flag.set()
        ingest.join()
    result["ingest_events_published"] = ingest.sent
    return result


def free_port() -> int:
    import socket

    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--rate", type=int, default=1000)
    parser.add_argument("--duration", type=float, default=10.0)
    parser.add_argument(
        "--ingest-rate",
        type=int,
        action="append",
        help="events/s published during a scenario (repeatable; default 2000 and 5000, the rates of the targets)",
    )
    parser.add_argument("--probes", type=int, default=200, help="freshness and staleness probes per scenario")
    parser.add_argument("--chantilly-rate", type=int, default=100)
    parser.add_argument(
        "--staleness-only",
        action="store_true",
        help="only the model staleness, idle, with the engine's defaults (results/latency-staleness.json)",
    )
    parser.add_argument(
        "--served-log-only",
        action="store_true",
        help="only /predict with and without an event_id, alternated twice (results/latency-served-log.json)",
    )
    args = parser.parse_args()
    # Freshness is promised at 2,000 events/s and /predict's tail at 5,000: both by default.
    ingest_rates = args.ingest_rate or [2000, 5000]
    if not VEGETA.exists():
        sys.exit("vegeta is missing: run infra/bench-tools.sh (make bench-latency does)")
    work = RESULTS / "work"
    work.mkdir(parents=True, exist_ok=True)
    n_requests = targets_size(args.rate, args.duration)
    results, freshness_results = [], []
    if args.staleness_only:
        engine = engine_process(work).start()
        try:
            asyncio.run(_train(engine))
            engine.wait_until(lambda: engine.samples_learned() >= 1250, what="the model trained")
            staleness = {"scenario": "model staleness, idle", **asyncio.run(model_staleness(engine, args.probes))}
        finally:
            engine.stop()
            remove_topics([engine])
        report = {
            "command": " ".join(["python -m benchmarks.latency", *sys.argv[1:]]),
            "measured_at": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()),
            "freshness": [staleness],
        }
        (RESULTS / "latency-staleness.json").write_text(json.dumps(report, indent=2) + "\n")
        print(json.dumps(staleness))
        return
    if args.served_log_only:
        engine = engine_process(work).start()
        try:
            asyncio.run(_train(engine))
            engine.wait_until(lambda: engine.samples_learned() >= 1250, what="the model trained")
            results = served_log_cost(engine, work, args.rate, args.duration, n_requests)
        finally:
            engine.stop()
            remove_topics([engine])
        pairs = [(results[i]["p99_ms"], results[i + 1]["p99_ms"]) for i in range(0, len(results), 2)]
        report = {
            "command": " ".join(["python -m benchmarks.latency", *sys.argv[1:]]),
            "measured_at": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()),
            "machine": f"{platform.machine()}, {os.cpu_count()} cores, CPython {platform.python_version()}",
            "results": results,
            "p99_with_event_id_minus_without_ms": [round(logged - plain, 3) for plain, logged in pairs],
        }
        (RESULTS / "latency-served-log.json").write_text(json.dumps(report, indent=2) + "\n")
        print(json.dumps({"p99_with_event_id_minus_without_ms": report["p99_with_event_id_minus_without_ms"]}))
        return

    engine = engine_process(work).start()
    try:
        asyncio.run(_train(engine))
        engine.wait_until(lambda: engine.samples_learned() >= 1250, what="the model trained")
        url = f"{engine.base_url}/predict"
        miss = targets_file(work / "miss.jsonl", url, unique_bodies(n_requests))
        hit = targets_file(work / "hit.jsonl", url, unique_bodies(1))
        results.append(measure("engine cache miss, idle", miss, args.rate, args.duration))
        bodies = with_event_ids(unique_bodies(n_requests, start=n_requests), "s")
        logged = targets_file(work / "logged.jsonl", url, bodies)
        results.append(measure("engine cache miss with event_id, idle", logged, args.rate, args.duration))
        closed = targets_file(work / "closed.jsonl", url, unique_bodies(CLOSED_LOOP_BODIES, start=10 * n_requests))
        results.append(measure("engine cache miss, closed loop", closed, 0, CLOSED_LOOP_SECONDS))
        results.append(measure("engine cache hit, idle", hit, args.rate, args.duration))
        for route in ("/features", "/predict"):
            freshness_results.append(
                {"scenario": f"freshness {route}, idle", **asyncio.run(freshness(engine, args.probes, route))}
            )
            print(freshness_results[-1], flush=True)
        freshness_results.append(
            {"scenario": "model staleness, idle", **asyncio.run(model_staleness(engine, args.probes // 4))}
        )
        print(freshness_results[-1], flush=True)
        for start, ingest_rate in enumerate(ingest_rates, start=1):
            results.append(ingesting(engine, work, url, ingest_rate, args, n_requests, start, freshness_results))
    finally:
        engine.stop()
        remove_topics([engine])

    two = engine_process(work, SERVE_PROCESSES=2).start()
    try:
        asyncio.run(_train(two))
        two.wait_until(lambda: two.samples_learned() >= 1250, what="the model trained")
        closed = targets_file(
            work / "closed2.jsonl", f"{two.base_url}/predict", unique_bodies(CLOSED_LOOP_BODIES, start=20 * n_requests)
        )
        results.append(measure("engine, 2 serving processes, closed loop", closed, 0, CLOSED_LOOP_SECONDS))
    finally:
        two.stop()
        remove_topics([two])

    fallback_engine = engine_process(work, MODEL="hoeffding").start()
    try:
        url = f"{fallback_engine.base_url}/predict"
        fallback = targets_file(work / "fallback.jsonl", url, unique_bodies(n_requests))
        results.append(measure("engine fallback (prior), idle", fallback, args.rate, args.duration))
    finally:
        fallback_engine.stop()
        remove_topics([fallback_engine])

    port = free_port()
    bare = subprocess.Popen([sys.executable, "-m", "benchmarks.bare_server", str(port)], cwd=ROOT)
    try:
        wait_http(f"http://127.0.0.1:{port}/predict", method="POST", json={"features": {}})
        bare_targets = targets_file(work / "bare.jsonl", f"http://127.0.0.1:{port}/predict", unique_bodies(n_requests))
        results.append(measure("bare Starlette + River", bare_targets, args.rate, args.duration))
        results.append(measure("bare Starlette + River, closed loop", bare_targets, 0, CLOSED_LOOP_SECONDS))
    finally:
        bare.terminate()
        bare.wait()

    if CHANTILLY_PYTHON.exists():
        port = free_port()
        chantilly = subprocess.Popen(
            [
                str(CHANTILLY_PYTHON),
                str(ROOT / "benchmarks/chantilly_server.py"),
                str(port),
                tempfile.mkdtemp(prefix="chantilly-", dir=work),
            ],
            stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL,
        )
        try:
            wait_http(f"http://127.0.0.1:{port}/api/models")
            targets = targets_file(
                work / "chantilly.jsonl",
                f"http://127.0.0.1:{port}/api/predict",
                unique_bodies(targets_size(args.chantilly_rate, args.duration), chantilly=True),
            )
            # One connection: concurrent requests corrupt its shelve store and it answers 500 from then on.
            results.append(
                measure("chantilly, 1 connection", targets, args.chantilly_rate, args.duration, connections=1)
            )
        finally:
            chantilly.terminate()
            chantilly.wait()

    by_name = {r["scenario"]: r for r in results}
    bare_max = by_name["bare Starlette + River, closed loop"]["throughput_rps"]
    summary = {
        "p99_with_event_id_minus_without_ms": round(
            by_name["engine cache miss with event_id, idle"]["p99_ms"] - by_name["engine cache miss, idle"]["p99_ms"], 3
        ),
        "engine_miss_p99_over_bare_p99": round(
            by_name["engine cache miss, idle"]["p99_ms"] / by_name["bare Starlette + River"]["p99_ms"], 2
        ),
        "engine_max_throughput_over_bare": round(
            by_name["engine cache miss, closed loop"]["throughput_rps"] / bare_max, 3
        )
        if bare_max
        else None,
        "two_serving_processes_over_bare": round(
            by_name["engine, 2 serving processes, closed loop"]["throughput_rps"] / bare_max, 3
        )
        if bare_max
        else None,
    }
    report = {
        "command": " ".join(["python -m benchmarks.latency", *sys.argv[1:]]),
        "measured_at": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()),
        "machine": f"{platform.machine()}, {os.cpu_count()} cores, CPython {platform.python_version()}",
        "results": results,
        "freshness": freshness_results,
        "ratios": summary,
    }
    (RESULTS / "latency.json").write_text(json.dumps(report, indent=2) + "\n")
    plot(results, RESULTS / "latency.png")
    print(json.dumps(summary))


if __name__ == "__main__":
    main()
