"""Command line.

python -m engine run        the embedded default: a stream worker that is also the learner,
                            and SERVE_PROCESSES serving processes, supervised
python -m engine worker     one stream worker (add --embedded-learner to learn in it too)
python -m engine learn      the learner of one model (LEARN_MODEL with several), apart from the workers
python -m engine serve      one serving process
python -m engine demo | retrain | settings
"""

from __future__ import annotations

import argparse
import os
import sys

from engine.settings import Settings, SettingsError


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m engine", description="Real-time ML engine")
    sub = parser.add_subparsers(dest="command", required=True)
    sub.add_parser("run", help="the whole engine: a stream worker with the learner, and the serving processes")
    worker = sub.add_parser("worker", help="a stream worker: events to features, predictions, examples")
    worker.add_argument("--embedded-learner", action="store_true", help="learn in this worker (the embedded default)")
    sub.add_parser("learn", help="the learner of one model (LEARN_MODEL names it): examples topic to model versions")
    sub.add_parser("serve", help="a serving process: the HTTP API")
    sub.add_parser("demo", help="start the engine, stream a River dataset through Kafka, query /predict")
    retrain_parser = sub.add_parser("retrain", help="train a candidate from the training log and register it")
    retrain_parser.add_argument("--candidate", help="factory model to train (default: the champion's)")
    retrain_parser.add_argument("--passes", type=int, default=3, help="passes over the training window")
    retrain_parser.add_argument("--holdout", type=float, default=0.2, help="most recent share kept for the comparison")
    retrain_parser.add_argument("--every", type=float, help="keep retraining every this many seconds")
    retrain_parser.add_argument("--model", help="the named model to retrain (MODELS; default: the first)")
    sub.add_parser("settings", help="print the settings the engine would use")
    args = parser.parse_args(argv)
    try:
        return _run(args)
    except SettingsError as exc:
        print(f"python -m engine {args.command}: {exc}", file=sys.stderr)
        return 2


def _run(args: argparse.Namespace) -> int:
    settings = Settings.from_env()
    if args.command == "settings":
        for name, default, help in Settings.documentation():
            print(f"{name:<30} {default!s:<26} {help}")
        return 0
    if args.command == "run":
        from engine.supervisor import run_all

        return run_all(settings)
    if args.command in ("worker", "learn"):
        from engine.runtime import load_feature_registry

        features = load_feature_registry(settings.feature_definitions)
        if args.command == "worker":
            from engine.worker_process import run_worker

            run_worker(settings, features, embedded_learner=args.embedded_learner)
        else:
            from engine.learner_main import run_learner

            run_learner(settings, features)
        return 0
    if args.command == "serve":
        from engine.serve import run_serve

        run_serve(settings)
        return 0
    if args.command == "retrain":
        from engine.retrain_cli import main as retrain_main

        named = next((m for m in settings.models if m.name == args.model), None) if args.model else settings.model
        if named is None:
            raise SettingsError(f"--model {args.model!r} is not one of the models: {settings.model_names}")
        return retrain_main(settings.for_model(named), args.candidate, args.passes, args.holdout, args.every)
    from engine.demo import run_demo

    return run_demo(settings, rate=float(os.environ.get("DEMO_RATE", "400")))


if __name__ == "__main__":
    sys.exit(main())
