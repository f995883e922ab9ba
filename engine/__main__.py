"""Command line: `python -m engine run` starts the stream worker and the API together."""

from __future__ import annotations

import argparse
import asyncio
import gc
import os
import sys

from engine.settings import Settings


def run(settings: Settings) -> None:
    import faust
    import uvloop

    from engine.api import create_api
    from engine.runtime import Runtime
    from engine.server import ApiService
    from engine.topics import ensure_topics
    from engine.recovery import restore_latest
    from models.registry import ModelRegistry
    from models.snapshots import SnapshotStore
    from streams.app import build_stream_app

    settings.state_path.mkdir(parents=True, exist_ok=True)
    loop = uvloop.new_event_loop()
    asyncio.set_event_loop(loop)
    loop.run_until_complete(ensure_topics(settings))
    runtime = Runtime.from_settings(settings)
    snapshots = SnapshotStore(settings.snapshot_path, settings.snapshot_retention)
    runtime.snapshots = snapshots
    restored = restore_latest(snapshots, settings)
    if restored is not None:
        runtime.model = restored.state["model"]
    runtime.model_registry = ModelRegistry(settings.registry_path)
    runtime.model_registry.ensure_serving(runtime.model)
    stream = build_stream_app(
        settings, runtime.model, runtime.feature_registry, snapshots, restored,
        model_registry=runtime.model_registry, on_model_change=runtime.adopt_model,
    )
    runtime.entities = stream.entities
    runtime.pending = stream.pending
    runtime.offline_log = stream.offline_log
    runtime.processor = stream.processor
    runtime.stream_lock = stream.lock
    runtime.write_snapshot = stream.write_snapshot
    runtime.stream_ready = stream.is_ready
    api = ApiService(create_api(runtime), settings.api_host, settings.api_port, loop=loop)

    @stream.app.task
    async def freeze_startup_objects() -> None:
        # Long-lived start-up objects out of the collector's way: full collections over them
        # paused serving by tens of milliseconds (measured in the latency benchmark).
        gc.collect()
        gc.freeze()

    worker = faust.Worker(stream.app, api, loop=loop, loglevel=settings.log_level.upper())
    # Faust's terminal spinner lowers the root logger to DEBUG so that it spins on every record:
    # that formats a debug line for every Kafka send and cost a third of ingestion time.
    worker.spinner = None
    worker.execute_from_commandline()


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m engine", description="Real-time ML engine")
    sub = parser.add_subparsers(dest="command", required=True)
    sub.add_parser("run", help="consume Kafka events, learn online and serve predictions over HTTP")
    sub.add_parser("demo", help="start the engine, stream a River dataset through Kafka, query /predict")
    retrain_parser = sub.add_parser("retrain", help="train a candidate from the training log and register it")
    retrain_parser.add_argument("--candidate", help="factory model to train (default: the champion's)")
    retrain_parser.add_argument("--passes", type=int, default=3, help="passes over the training window")
    retrain_parser.add_argument("--holdout", type=float, default=0.2, help="most recent share kept for the comparison")
    retrain_parser.add_argument("--every", type=float, help="keep retraining every this many seconds")
    sub.add_parser("settings", help="print the settings the engine would use")
    args = parser.parse_args(argv)
    settings = Settings.from_env()
    if args.command == "settings":
        for name, default, help in Settings.documentation():
            print(f"{name:<28} {default!s:<26} {help}")
        return 0
    if args.command == "retrain":
        from engine.retrain_cli import main as retrain_main

        return retrain_main(settings, args.candidate, args.passes, args.holdout, args.every)
    if args.command == "demo":
        from engine.demo import run_demo

        return run_demo(settings, rate=float(os.environ.get("DEMO_RATE", "400")))
    run(settings)
    return 0


if __name__ == "__main__":
    sys.exit(main())
