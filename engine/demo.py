"""`python -m engine demo`: the whole path on a real dataset, end to end.

Starts the engine, publishes River's Phishing dataset to Kafka, shows the model (or the
named models of MODELS, side by side) learning live, queries /predict, and checks each
progressive metric against River's own `progressive_val_score` over the same data.
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
from models.factory import Task, build_model

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


async def _show_progress(base_url: str, names: list[str], total: int, start_counts: dict[str, int]) -> dict:
    """One line per half second with each model's progressive metrics, side by side, until
    every model has learned `total` more samples; each model's `serving` document then."""
    async with httpx.AsyncClient(base_url=base_url, timeout=5.0) as client:
        while True:
            servings = {name: (await client.get(f"/models?model={name}")).json()["serving"] for name in names}
            learned = min(servings[name]["samples_learned"] - start_counts[name] for name in names)
            columns = []
            for name, serving in servings.items():
                m = serving["metrics"]
                label = f"{name}: " if len(names) > 1 else ""
                columns.append(
                    f"{label}accuracy {m['accuracy']:.4f}   ROC AUC {m['roc_auc']:.4f}   log loss {m['log_loss']:.4f}"
                )
            print(f"  learned {learned:>5}/{total}   " + "   |   ".join(columns), flush=True)
            if learned >= total:
                return servings
            await asyncio.sleep(0.5)


def run_demo(settings: Settings, rate: float) -> int:
    base_url = f"http://{settings.api_host}:{settings.api_port}"
    log_path = Path(settings.state_dir) / "demo-engine.log"
    log_path.parent.mkdir(parents=True, exist_ok=True)
    models = settings.models
    unfit = [m.describe() for m in models if m.target is not None or m.task is not Task.BINARY]
    if unfit:
        print(
            f"the demo streams {DATASET}, whose labels are true/false: declare binary models without a target"
            f' (MODELS="logreg=logreg,tree=hoeffding"); not {", ".join(unfit)}',
            file=sys.stderr,
        )
        return 2
    names = [m.name for m in models]
    described = ", ".join(f"{m.name} ({m.factory})" if m.name != m.factory else m.name for m in models)
    print(f"1. starting the engine (model{'s' if len(models) > 1 else ''} {described}); log: {log_path}")
    with open(log_path, "ab") as log:
        engine = subprocess.Popen([sys.executable, "-m", "engine", "run"], stdout=log, stderr=subprocess.STDOUT)
    try:
        started = time.monotonic()
        _wait_ready(base_url, engine)
        print(f"   ready in {time.monotonic() - started:.1f} s at {base_url}")
        start_counts = {
            name: httpx.get(f"{base_url}/models?model={name}").json()["serving"]["samples_learned"] for name in names
        }

        total = load_dataset(DATASET).n_samples
        print(
            f"2. publishing {total} {DATASET} events (labels inline) to topic {settings.events_topic!r} at {rate:.0f}/s"
        )

        async def publish_and_watch() -> dict:
            run = time.strftime("%Y%m%dT%H%M%S-")
            publishing = asyncio.create_task(publish_dataset(settings, DATASET, labels="inline", rate=rate, run=run))
            servings = await _show_progress(base_url, names, total, start_counts)
            await publishing
            return servings

        servings = asyncio.run(publish_and_watch())

        print("3. predictions from POST /predict" + (" (?model= names the model)" if len(names) > 1 else ""))
        for event, label in list(dataset_events(DATASET, limit=3)):
            body = {"entity_id": event["entity_id"], "features": event["features"]}
            answers = []
            for name in names:
                answer = httpx.post(f"{base_url}/predict", params={"model": name}, json=body).json()
                proba = answer["probabilities"] or {}
                who = f"{name} " if len(names) > 1 else ""
                answers.append(f"{who}predicted {answer['prediction']} (P(true)={proba.get('true', 0):.3f})")
            print(
                f"   {event['entity_id']}: {', '.join(answers)}, true label {label}, "
                f"features {answer['feature_age_seconds']:.1f} s old"
            )

        print("4. the engine's progressive metrics against River's progressive_val_score on the same data")
        if any(start_counts.values()):
            print(
                f"   the models already knew {max(start_counts.values())} samples from an earlier run "
                "(restored from their snapshots),\n"
                "   so their metrics cover both runs. To compare from scratch: make down; rm -rf .state; make demo"
            )
            print(f"5. metrics for Prometheus at {base_url}/metrics; stopping the engine")
            return 0
        exact = True
        for named in models:
            for metric_name, metric in (
                ("accuracy", metrics.Accuracy()),
                ("roc_auc", metrics.ROCAUC()),
                ("log_loss", metrics.LogLoss()),
            ):
                reference = evaluate.progressive_val_score(
                    load_dataset(DATASET), build_model(named.factory), metric
                ).get()
                engine_value = servings[named.name]["metrics"][metric_name]
                same = engine_value == reference
                exact &= same
                width = max(len(name) for name in names)
                label = f"{named.name:<{width}} " if len(models) > 1 else ""
                print(
                    f"   {label}{metric_name:<9} engine {engine_value:.10f}   River {reference:.10f}   "
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
