"""The Open Inference Protocol's paths beside /predict, open loop, cache miss, in one run:

    .venv/bin/python -m benchmarks.oip_latency [--rate 1000] [--duration 10]

One engine (`engine run`, `logreg`, trained on Phishing); then, alternated twice so that
drift in the machine's load hits each alike: `POST /predict`, `POST /v2/models/logreg/infer`
with a JSON tensor body (vegeta), gRPC `ModelInfer` (ghz), and the same gRPC call to a bare
grpc.aio + River server (benchmarks/bare_grpc_server.py): the floor of gRPC in this stack,
the load generator's own time included. Every request is one row, with a feature no other
request has, so none is a cache hit. ghz reads its requests from a file of serialized
messages, parsed once before the run: a template rendered per request (ghz's
`{{.RequestNumber}}`) cost the generator more than the server's whole answer and showed as
milliseconds of tail. Needs infra/bench-tools.sh (vegeta and ghz). Results:
benchmarks/results/latency-oip.json.
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
from pathlib import Path

from benchmarks import latency
from engine.harness import ROOT
from engine.oip import grpc_predict_v2_pb2 as pb
from tests.conftest import free_port

GHZ = ROOT / ".state/bin/ghz"
# ghz needs a service to call: the protocol's, over our messages (see engine/oip/grpc_predict_v2.proto).
SERVICE_PROTO = ROOT / "benchmarks/oip_service.proto"
ENGINE_GRPC = "v2 gRPC ModelInfer, cache miss"
BARE_GRPC = "bare grpc.aio + River, ModelInfer"


def v2_body(body: dict) -> dict:
    """A /predict body as a one-row v2 inference request with JSON tensors."""
    inputs = [{"name": "entity_id", "datatype": "BYTES", "shape": [1], "data": [body["entity_id"]]}]
    inputs += [{"name": k, "datatype": "FP64", "shape": [1], "data": [float(v)]} for k, v in body["features"].items()]
    return {"inputs": inputs}


def ghz_requests(bodies: list[dict], path: Path) -> Path:
    """The bodies as one-row ModelInferRequests with typed contents, written as ghz reads
    several messages from a file (each prefixed with its length as a varint); ghz sends
    them in turn."""
    chunks = []
    for body in bodies:
        request = pb.ModelInferRequest(model_name="logreg")
        entity = request.inputs.add(name="entity_id", datatype="BYTES", shape=[1])
        entity.contents.bytes_contents.append(body["entity_id"].encode())
        for name, value in body["features"].items():
            request.inputs.add(name=name, datatype="FP64", shape=[1]).contents.fp64_contents.append(float(value))
        message = request.SerializeToString()
        chunks += [_varint(len(message)), message]
    path.write_bytes(b"".join(chunks))
    return path


def _varint(n: int) -> bytes:
    out = bytearray()
    while n >= 0x80:
        out.append(n & 0x7F | 0x80)
        n >>= 7
    out.append(n)
    return bytes(out)


def ghz(port: int, requests: Path, rate: int, duration: float) -> dict:
    command = [
        str(GHZ),
        "--insecure",
        "--proto",
        str(SERVICE_PROTO),
        "--import-paths",
        str(ROOT),
        "--call",
        "inference.GRPCInferenceService.ModelInfer",
        f"--binary-file={requests}",
        "--disable-template-functions",
        "--disable-template-data",
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
    kinds = dict(report.get("errorDistribution") or {})
    cut = sum(kinds.pop(e) for e in list(kinds) if "use of closed network connection" in e)
    errors = sum(n for code, n in report.get("statusCodeDistribution", {}).items() if code != "OK") - cut
    return {
        "requests": report["count"],
        "errors": errors,
        "throughput_rps": round(report["rps"], 1),
        "p50_ms": round(by_percent[50], 3),
        "p95_ms": round(by_percent[95], 3),
        "p99_ms": round(by_percent[99], 3),
        "cut_at_the_end": cut,
        **({"error_kinds": kinds} if kinds else {}),
    }


def measure_grpc(scenario: str, port: int, requests: Path, warm_up: Path, rate: int, duration: float) -> dict:
    """`warm_up`: other rows than the run's (ghz too starts every run at the file's first)."""
    ghz(port, warm_up, rate, latency.WARM_UP_SECONDS)
    result = {"scenario": scenario, "rate": rate, "duration_s": duration, **ghz(port, requests, rate, duration)}
    print(
        f"{scenario:<34} rate {rate:>5}/s  p50 {result['p50_ms']:>8.3f} ms  "
        f"p99 {result['p99_ms']:>8.3f} ms  errors {result['errors']}",
        flush=True,
    )
    return result


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
    n = latency.targets_size(args.rate, args.duration)
    grpc_port, bare_port = free_port(), free_port()
    engine = latency.engine_process(work, GRPC_PORT=grpc_port).start()
    bare = subprocess.Popen([sys.executable, "-m", "benchmarks.bare_grpc_server", str(bare_port)], cwd=ROOT)
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
            rows = latency.unique_bodies(n, start=start + 2 * n)
            warm = latency.warm_up_size(args.rate)
            requests = ghz_requests(rows[:-warm], work / "oip-grpc.bin")
            warm_up = ghz_requests(rows[-warm:], work / "oip-grpc-warm-up.bin")
            results.append(measure_grpc(ENGINE_GRPC, grpc_port, requests, warm_up, args.rate, args.duration))
            results.append(measure_grpc(BARE_GRPC, bare_port, requests, warm_up, args.rate, args.duration))
    finally:
        engine.stop()
        bare.terminate()
        bare.wait()
    rounds = [results[i : i + 4] for i in range(0, len(results), 4)]
    report = {
        "command": " ".join(["python -m benchmarks.oip_latency", *sys.argv[1:]]),
        "measured_at": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()),
        "machine": f"{platform.machine()}, {os.cpu_count()} cores, CPython {platform.python_version()}",
        "results": results,
        "p99_rest_minus_predict_ms": [round(r[1]["p99_ms"] - r[0]["p99_ms"], 3) for r in rounds],
        "p99_grpc_minus_predict_ms": [round(r[2]["p99_ms"] - r[0]["p99_ms"], 3) for r in rounds],
        # The floor: what gRPC costs in this stack (grpc.aio, ghz) with nothing of ours in it.
        "p99_bare_grpc_minus_predict_ms": [round(r[3]["p99_ms"] - r[0]["p99_ms"], 3) for r in rounds],
    }
    (latency.RESULTS / "latency-oip.json").write_text(json.dumps(report, indent=2) + "\n")
    print(json.dumps({k: v for k, v in report.items() if k.startswith("p99")}))


if __name__ == "__main__":
    main()
