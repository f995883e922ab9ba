"""Which snapshot an engine resumes from."""

from __future__ import annotations

import logging

from engine.settings import Settings
from models.snapshots import Snapshot, SnapshotStore

log = logging.getLogger(__name__)


def restore_latest(store: SnapshotStore, settings: Settings) -> Snapshot | None:
    """The newest valid snapshot of the configured model, or None to start fresh."""
    for snapshot in store.valid():
        source = (snapshot.meta.get("app_id"), snapshot.meta.get("topics"))
        if source != (settings.app_id, [settings.events_topic, settings.labels_topic]):
            log.warning(
                "snapshot %s was taken by app %r on topics %r, not this engine's: not restoring it",
                snapshot.path.name, *source,
            )
            return None
        if snapshot.meta["model_name"] != settings.model_name:
            log.warning(
                "snapshot %s is of model %r, not MODEL=%r: not restoring it",
                snapshot.path.name, snapshot.meta["model_name"], settings.model_name,
            )
            return None
        log.warning(
            "restoring snapshot %s: %d samples learned, resuming from offsets %s",
            snapshot.path.name, snapshot.meta["samples_learned"], snapshot.meta["offsets"],
        )
        return snapshot
    return None
