"""Model versions: every promoted or retrained model, with its metrics and lineage.

Each version is a checksummed file (the snapshot encoding) plus an entry in
`registry.json`: version number, kind ("initial", "candidate", "retired"), parent version,
creation time, samples learned, metrics, and whatever the producer adds (training window,
offsets, comparison). `serving` is the live version; `history` the versions that served
before it, newest last, which is what rollback walks back through.

Several processes write it: the engine (promote, rollback, rollout verdicts) and
`engine retrain --every` (new candidates). Every read-modify-write of the index therefore
happens under a file lock and re-reads the index inside it, so no update is lost and no
version number is handed out twice. Files are replaced atomically (`models.atomic`), so
readers need no lock: they see the index before a change or after it.
"""

from __future__ import annotations

import json
import os
import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

from filelock import FileLock, Timeout

from models.atomic import atomic_write_bytes
from models.errors import EngineError
from models.online import OnlineModel
from models.snapshots import decode_snapshot, encode_snapshot

LOCK_TIMEOUT_SECONDS = 60.0  # a writer holds the lock for a few file writes, never for training


class RegistryError(EngineError, ValueError):
    pass


class ModelRegistry:
    def __init__(self, directory: str | Path) -> None:
        self.directory = Path(directory)
        (self.directory / "versions").mkdir(parents=True, exist_ok=True)
        self.index_path = self.directory / "registry.json"
        # An flock (fcntl) lock: it excludes other processes and other threads (each thread
        # opens its own descriptor), and the kernel releases it when its holder dies, so a
        # crashed writer never leaves the registry locked.
        self._lock = FileLock(self.directory / "registry.lock", timeout=LOCK_TIMEOUT_SECONDS)

    def _index(self) -> dict[str, Any]:
        if not self.index_path.exists():
            return {"versions": {}, "serving": None, "history": []}
        return json.loads(self.index_path.read_text())

    def index_signature(self) -> tuple[int, int, int] | None:
        """What changes whenever the index is written (each write is a new file renamed into
        place), without reading it: for readers that keep what they made of it."""
        try:
            stat = os.stat(self.index_path)
        except FileNotFoundError:
            return None
        return stat.st_ino, stat.st_mtime_ns, stat.st_size

    def _save_index(self, index: dict[str, Any]) -> None:
        atomic_write_bytes(self.index_path, json.dumps(index, indent=2, default=str).encode())

    @contextmanager
    def _updating(self) -> Iterator[dict[str, Any]]:
        """The index as it is now, saved back on a clean exit if it changed, with every other
        writer kept out in between. Raising inside leaves the index as it was."""
        try:
            self._lock.acquire()
        except Timeout:
            raise RegistryError(f"the registry stayed locked for {LOCK_TIMEOUT_SECONDS:.0f} s") from None
        try:
            index = self._index()
            before = json.dumps(index, default=str)
            yield index
            if json.dumps(index, default=str) != before:
                self._save_index(index)
        finally:
            self._lock.release()

    def _model_path(self, version: int) -> Path:
        return self.directory / "versions" / f"v{version:06d}.bin"

    def _write_model(self, version: int, model: OnlineModel) -> None:
        atomic_write_bytes(self._model_path(version), encode_snapshot({"version": version}, {"model": model}))

    def _register(self, index: dict[str, Any], model: OnlineModel, kind: str, parent: int | None, info: dict) -> int:
        version = max((int(v) for v in index["versions"]), default=0) + 1
        model.version = version
        self._write_model(version, model)
        index["versions"][str(version)] = {
            "version": version,
            "model_name": model.name,
            "kind": kind,
            "parent": parent,
            "created_at": time.time(),
            "samples_learned": model.samples_learned,
            "metrics": model.metric_values(),
            **info,
        }
        return version

    def register(self, model: OnlineModel, kind: str, parent: int | None = None, **info: Any) -> int:
        with self._updating() as index:
            return self._register(index, model, kind, parent, info)

    def versions(self) -> list[dict[str, Any]]:
        return [entry for _, entry in sorted(self._index()["versions"].items(), key=lambda item: int(item[0]))]

    @property
    def serving(self) -> int | None:
        return self._index()["serving"]

    def load(self, version: int) -> OnlineModel:
        path = self._model_path(version)
        if not path.exists():
            raise RegistryError(f"no model version {version}")
        return decode_snapshot(path.read_bytes())["state"]["model"]

    def promote(self, version: int, outgoing: OnlineModel | None) -> OnlineModel:
        """Makes `version` the serving one; the outgoing model's current state is kept under
        its own version, so a rollback brings back exactly what it predicted."""
        with self._updating() as index:
            if str(version) not in index["versions"]:
                raise RegistryError(f"no model version {version}")
            if outgoing is not None and index["serving"] is not None:
                self._write_model(index["serving"], outgoing)
                index["versions"][str(index["serving"])].update(
                    samples_learned=outgoing.samples_learned, metrics=outgoing.metric_values(), retired_at=time.time()
                )
                index["history"].append(index["serving"])
            index["serving"] = version
            # Loaded under the lock: no other writer can replace this version's file meanwhile.
            return self.load(version)

    def rollback(self, outgoing: OnlineModel) -> OnlineModel:
        with self._updating() as index:
            if not index["history"]:
                raise RegistryError("no earlier version to roll back to")
            previous = index["history"].pop()
            current = index["serving"]
            self._write_model(current, outgoing)
            index["versions"][str(current)].update(
                samples_learned=outgoing.samples_learned, metrics=outgoing.metric_values(), rolled_back_at=time.time()
            )
            index["serving"] = previous
            return self.load(previous)

    def annotate(self, version: int, **info: Any) -> None:
        with self._updating() as index:
            if str(version) in index["versions"]:
                index["versions"][str(version)].update(info)

    def ensure_serving(self, model: OnlineModel) -> None:
        """On first start, the live model becomes version 1."""
        with self._updating() as index:
            if index["serving"] is None:
                index["serving"] = self._register(index, model, "initial", None, {})
