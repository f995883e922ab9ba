"""`python -m engine retrain`: train a candidate offline and register it next to the champion."""

from __future__ import annotations

import json
import time

from engine.settings import Settings
from models.registry import ModelRegistry
from models.retrain import retrain
from models.snapshots import SnapshotStore
from models.training_log import TrainingLog


def retrain_once(settings: Settings, candidate: str | None, passes: int, holdout: float) -> dict:
    latest = SnapshotStore(settings.snapshot_path, settings.snapshot_retention).latest()
    champion = latest.meta["model_name"] if latest else settings.model_name
    parent = latest.meta["model_version"] if latest else None
    examples = list(TrainingLog(settings.training_log_path).examples())
    result = retrain(
        examples, champion, candidate, passes=passes, holdout_fraction=holdout, max_features=settings.max_model_features
    )
    version = ModelRegistry(settings.registry_path).register(
        result.candidate, "candidate", parent=parent, comparison=result.report
    )
    return {"registered_version": version, "parent_version": parent, **result.report}


def main(settings: Settings, candidate: str | None, passes: int, holdout: float, every: float | None) -> int:
    while True:
        report = retrain_once(settings, candidate, passes, holdout)
        print(json.dumps(report, indent=2, default=str), flush=True)
        verdict = "better" if report["candidate_is_better"] else "not better"
        print(
            f"candidate v{report['registered_version']} ({report['candidate']}) is {verdict} than the champion on "
            f"{report['primary_metric']}: {report['candidate_metrics'][report['primary_metric']]:.4f} vs "
            f"{report['champion_metrics'][report['primary_metric']]:.4f}. Promote it with "
            f'POST /models/{settings.model.name}/promote {{"version": {report["registered_version"]}}}.',
            flush=True,
        )
        if every is None:
            return 0
        time.sleep(every)
