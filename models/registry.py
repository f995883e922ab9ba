"""Model versions: every promoted or retrained model, with its metrics and lineage.

Each version is a checksummed file (the snapshot encoding) plus an entry in
`registry.json`: version number, kind ("initial", "candidate", "retired"), parent version,
creation time, samples learned, metrics, and whatever the producer adds (training window,
offsets, comparison). `serving` is the live version; `history` the versions that served
before it, newest last, which is what rollback walks back through.
"""

from __future__ import annotations

import json
import os
import time
from pathlib import Path
from typing import Any

from models.online import OnlineModel
from models.snapshots import decode_snapshot, encode_snapshot


class RegistryError(ValueError):
    pass


class ModelRegistry:
    def __init__(self, directory: str | Path) -> None:
        self.directory = Path(directory)
        (self.directory / "versions").mkdir(parents=True, exist_ok=True)
        self.index_path = self.directory / "registry.json"

    def _index(self) -> dict[str, Any]:
        if not self.index_path.exists():
            return {"versions": {}, "serving": None, "history": []}
        return json.loads(self.index_path.read_text())

    def _save_index(self, index: dict[str, Any]) -> None:
        partial = self.index_path.with_suffix(".json.tmp")
        partial.write_text(json.dumps(index, indent=2, default=str))
        os.replace(partial, self.index_path)

    def _model_path(self, version: int) -> Path:
        return self.directory / "versions" / f"v{version:06d}.bin"

    def _write_model(self, version: int, model: OnlineModel) -> None:
        partial = self._model_path(version).with_suffix(".tmp")
        partial.write_bytes(encode_snapshot({"version": version}, {"model": model}))
        os.replace(partial, self._model_path(version))

    def register(self, model: OnlineModel, kind: str, parent: int | None = None, **info: Any) -> int:
        index = self._index()
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
        self._save_index(index)
        return version

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
        index = self._index()
        if str(version) not in index["versions"]:
            raise RegistryError(f"no model version {version}")
        if outgoing is not None and index["serving"] is not None:
            self._write_model(index["serving"], outgoing)
            index["versions"][str(index["serving"])].update(
                samples_learned=outgoing.samples_learned, metrics=outgoing.metric_values(), retired_at=time.time()
            )
            index["history"].append(index["serving"])
        index["serving"] = version
        self._save_index(index)
        return self.load(version)

    def rollback(self, outgoing: OnlineModel) -> OnlineModel:
        index = self._index()
        if not index["history"]:
            raise RegistryError("no earlier version to roll back to")
        previous = index["history"].pop()
        current = index["serving"]
        self._write_model(current, outgoing)
        index["versions"][str(current)].update(
            samples_learned=outgoing.samples_learned, metrics=outgoing.metric_values(), rolled_back_at=time.time()
        )
        index["serving"] = previous
        self._save_index(index)
        return self.load(previous)

    def annotate(self, version: int, **info: Any) -> None:
        index = self._index()
        if str(version) in index["versions"]:
            index["versions"][str(version)].update(info)
            self._save_index(index)

    def ensure_serving(self, model: OnlineModel) -> None:
        """On first start, the live model becomes version 1."""
        index = self._index()
        if index["serving"] is None:
            version = self.register(model, "initial")
            index = self._index()
            index["serving"] = version
            self._save_index(index)
