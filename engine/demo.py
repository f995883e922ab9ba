"""`python -m engine demo`: the whole path on a real dataset, end to end.

Starts the engine, publishes River's Phishing dataset to Kafka, shows the model
learning live, queries /predict, and checks the progressive metric against River's
own `progressive_val_score` over the same data.
"""

from __future__ import annotations

import asyncio
import signal
import subprocess
import sys
import time
from pathlib import Path

import httpx
from river import evaluate, metrics

from engine.publish import dataset_events, load_dataset, publish_dataset
from engine.settings import Settings
from models.factory import build_model

DATASET = "Phishing"


def _wait_ready(base_url: str, process: subprocess.Popen, timeout: float = 120.0) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if process.poll() is not None:
            raise SystemExit(f"the engine exited with code {process.returncode}; see its log")
        try:
            if httpx.get(f"{base_url}/readyz", timeout=1.0).status_code == 200:
                return
        except httpx.HTTPError:
            pass
        time.sleep(0.2)
    raise SystemExit("the engine did not become ready in time; see its log")


async def _show_progress(base_url: str, total: int, start_count: int) -> dict:
    async with httpx.AsyncClient(base_url=base_url, timeout=5.0) as client:
        while True:
            serving = (await client.get("/models")).json()["serving"]
            learned = serving["samples_learned"] - start_count
            m = serving["metrics"]
            print(
                f"  learned {learned:>5}/{total}   accuracy {m['accuracy']:.4f}   "
                f"ROC AUC {m['roc_auc']:.4f}   log loss {m['log_loss']:.4f}",
                flush=True,
            )
            if learned >= total:
                return serving
            await asyncio.sleep(0.5)


def run_demo(settings: Settings, rate: float) -> int:
    base_url = f"http://{settings.api_host}:{settings.api_port}"
    log_path = Path(settings.state_dir) / "demo-engine.log"
    log_path.parent.mkdir(parents=True, exist_ok=True)
    print(f"1. starting the engine (model {settings.model_name}); log: {log_path}")
    with open(log_path, "ab") as log:
        engine = subprocess.Popen([sys.executable, "-m", "engine", "run"], stdout=log, stderr=subprocess.STDOUT)
    try:
        started = time.monotonic()
        _wait_ready(base_url, engine)
        print(f"   ready in {time.monotonic() - started:.1f} s at {base_url}")
        start_count = httpx.get(f"{base_url}/models").json()["serving"]["samples_learned"]

        total = load_dataset(DATASET).n_samples
        print(
            f"2. publishing {total} {DATASET} events (labels inline) to topic {settings.events_topic!r} at {rate:.0f}/s"
        )

        async def publish_and_watch() -> dict:
            run = time.strftime("%Y%m%dT%H%M%S-")
            publishing = asyncio.create_task(publish_dataset(settings, DATASET, labels="inline", rate=rate, run=run))
            serving = await _show_progress(base_url, total, start_count)
            await publishing
            return serving

        serving = asyncio.run(publish_and_watch())

        print("3. predictions from POST /predict")
        for event, label in list(dataset_events(DATASET, limit=3)):
            body = {"entity_id": event["entity_id"], "features": event["features"]}
            answer = httpx.post(f"{base_url}/predict", json=body).json()
            proba = answer["probabilities"] or {}
            print(
                f"   {event['entity_id']}: predicted {answer['prediction']} "
                f"(P(true)={proba.get('true', 0):.3f}), true label {label}, "
                f"features {answer['feature_age_seconds']:.1f} s old"
            )

        print("4. the engine's progressive metrics against River's progressive_val_score on the same data")
        exact = True
        for name, metric in (
            ("accuracy", metrics.Accuracy()),
            ("roc_auc", metrics.ROCAUC()),
            ("log_loss", metrics.LogLoss()),
        ):
            if start_count:
                print(
                    f"   the model already knew {start_count} samples from an earlier run "
                    "(restored from its snapshot),\n"
                    "   so its metrics cover both runs. To compare from scratch: make down; rm -rf .state; make demo"
                )
                break
            reference = evaluate.progressive_val_score(
                load_dataset(DATASET), build_model(settings.model_name), metric
            ).get()
            engine_value = serving["metrics"][name]
            same = engine_value == reference
            exact &= same
            print(
                f"   {name:<9} engine {engine_value:.10f}   River {reference:.10f}   "
                f"{'identical' if same else 'DIFFERENT'}"
            )
        print(f"5. metrics for Prometheus at {base_url}/metrics; stopping the engine")
        return 0 if exact else 1
    finally:
        engine.send_signal(signal.SIGTERM)
        try:
            engine.wait(30)
        except subprocess.TimeoutExpired:
            engine.kill()
