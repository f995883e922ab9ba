"""The Open Inference Protocol's paths beside /predict, open loop, cache miss, in one run:

    .venv/bin/python -m benchmarks.oip_latency [--rate 1000] [--duration 10]

One engine (`engine run`, `logreg`, trained on Phishing); then, alternated twice so that
drift in the machine's load hits each alike: `POST /predict`, `POST /v2/models/logreg/infer`
with a JSON tensor body (vegeta), and gRPC `ModelInfer` (ghz). Every request is one row,
with a feature no other request has, so none is a cache hit. Needs infra/bench-tools.sh
(vegeta and ghz). Results: benchmarks/results/latency-oip.json.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import platform
import subprocess
import sys
import time

from benchmarks import latency
from engine.harness import ROOT
from tests.conftest import free_port

GHZ = ROOT / ".state/bin/ghz"
# ghz needs a service to call: the protocol's, over our messages (see engine/oip/grpc_predict_v2.proto).
SERVICE_PROTO = ROOT / "benchmarks/oip_service.proto"


def v2_body(body: dict) -> dict:
    """A /predict body as a one-row v2 inference request with JSON tensors."""
    inputs = [{"name": "entity_id", "datatype": "BYTES", "shape": [1], "data": [body["entity_id"]]}]
    inputs += [{"name": k, "datatype": "FP64", "shape": [1], "data": [float(v)]} for k, v in body["features"].items()]
    return {"inputs": inputs}


def ghz_data(body: dict) -> dict:
    """The same row as a ModelInferRequest in protobuf's JSON mapping; ghz fills in the
    request number, so that every request has a value of its own (a cache miss)."""
    inputs = [{"name": "entity_id", "datatype": "BYTES", "shape": [1], "contents": {"bytes_contents": ["ZTE="]}}]
    for name, value in body["features"].items():
        if name == "request_jitter":
            value = "{{.RequestNumber}}e-9"
        inputs.append({"name": name, "datatype": "FP64", "shape": [1], "contents": {"fp64_contents": [value]}})
    return {"model_name": "logreg", "inputs": inputs}


def ghz(port: int, data: dict, rate: int, duration: float) -> dict:
    command = [
        str(GHZ),
        "--insecure",
        "--proto",
        str(SERVICE_PROTO),
        "--import-paths",
        str(ROOT),
        "--call",
        "inference.GRPCInferenceService.ModelInfer",
        "--data",
        json.dumps(data),
        f"--rps={rate}",
        f"--duration={duration}s",
        "--connections=4",
        "--concurrency=32",
        "--format=json",
        f"127.0.0.1:{port}",
    ]
    if latency.PIN_LOAD_GENERATOR:
        command = ["taskset", "-c", "1", *command]
    out = subprocess.run(command, capture_output=True, check=True, env={**os.environ, "GOMAXPROCS": "1"}).stdout
    report = json.loads(out)
    by_percent = {d["percentage"]: d["latency"] / 1e6 for d in report["latencyDistribution"]}
    # ghz ends its run by closing the connections under the calls still in flight: those come
    # back Unavailable ("use of closed network connection") and are not the server's.
    cut = sum(n for e, n in report.get("errorDistribution", {}).items() if "use of closed network connection" in e)
    errors = sum(n for code, n in report.get("statusCodeDistribution", {}).items() if code != "OK") - cut
    return {
        "requests": report["count"],
        "errors": errors,
        "throughput_rps": round(report["rps"], 1),
        "p50_ms": round(by_percent[50], 3),
        "p95_ms": round(by_percent[95], 3),
        "p99_ms": round(by_percent[99], 3),
        "cut_at_the_end": cut,
    }


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--rate", type=int, default=1000)
    parser.add_argument("--duration", type=float, default=10.0)
    args = parser.parse_args()
    for tool in (latency.VEGETA, GHZ):
        if not tool.exists():
            sys.exit(f"{tool.name} is missing: run infra/bench-tools.sh")
    work = latency.RESULTS / "work"
    work.mkdir(parents=True, exist_ok=True)
    n = int(args.rate * (args.duration + 2) * 1.2)
    grpc_port = free_port()
    engine = latency.engine_process(work, GRPC_PORT=grpc_port).start()
    results = []
    try:
        asyncio.run(latency._train(engine))
        engine.wait_until(lambda: engine.samples_learned() >= 1250, what="the model trained")
        for round_ in range(2):
            start = (round_ + 1) * 1000 * n
            bodies = latency.unique_bodies(n, start=start)
            predict = latency.targets_file(work / "oip-predict.jsonl", f"{engine.base_url}/predict", bodies)
            results.append(latency.measure("/predict, cache miss", predict, args.rate, args.duration))
            v2 = latency.targets_file(
                work / "oip-v2.jsonl",
                f"{engine.base_url}/v2/models/logreg/infer",
                [v2_body(b) for b in latency.unique_bodies(n, start=start + n)],
            )
            results.append(latency.measure("v2 REST infer (JSON), cache miss", v2, args.rate, args.duration))
            data = ghz_data(latency.unique_bodies(1, start=start + 2 * n)[0])
            ghz(grpc_port, data, args.rate, 2)  # warm-up, as measure() does
            result = {"scenario": "v2 gRPC ModelInfer, cache miss", "rate": args.rate, "duration_s": args.duration}
            result.update(ghz(grpc_port, data, args.rate, args.duration))
            print(
                f"{result['scenario']:<34} rate {args.rate:>5}/s  p50 {result['p50_ms']:>8.3f} ms  "
                f"p99 {result['p99_ms']:>8.3f} ms  errors {result['errors']}",
                flush=True,
            )
            results.append(result)
    finally:
        engine.stop()
    rounds = [results[i : i + 3] for i in range(0, len(results), 3)]
    report = {
        "command": " ".join(["python -m benchmarks.oip_latency", *sys.argv[1:]]),
        "measured_at": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()),
        "machine": f"{platform.machine()}, {os.cpu_count()} cores, CPython {platform.python_version()}",
        "results": results,
        "p99_rest_minus_predict_ms": [round(r[1]["p99_ms"] - r[0]["p99_ms"], 3) for r in rounds],
        "p99_grpc_minus_predict_ms": [round(r[2]["p99_ms"] - r[0]["p99_ms"], 3) for r in rounds],
    }
    (latency.RESULTS / "latency-oip.json").write_text(json.dumps(report, indent=2) + "\n")
    print(json.dumps({k: v for k, v in report.items() if k.startswith("p99")}))


if __name__ == "__main__":
    main()
