"""Atomic, checksummed model snapshots on local disk.

A snapshot file is a magic line, a BLAKE2b digest of the payload, and the payload: a
pickle of {"meta": ..., "state": ...}. It is written atomically (`models.atomic`: temporary
file, fsync, rename, fsync of the folder), so a crash leaves either the old set of snapshots
or the new one. A truncated or corrupt file fails its digest and is skipped (with the reason
logged) for the previous one.
"""

from __future__ import annotations

import hashlib
import json
import logging
import pickle
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from models import pickling
from models.atomic import atomic_write_bytes
from models.errors import EngineError

log = logging.getLogger(__name__)

MAGIC = b"RTMLSNAP1\n"
DIGEST_SIZE = 32


class SnapshotError(EngineError, ValueError):
    pass


@dataclass(frozen=True)
class Snapshot:
    path: Path
    meta: dict[str, Any]
    state: dict[str, Any]


def _json_safe(value: Any) -> Any:
    """Offsets are keyed by (topic, partition): JSON keys must be strings, so "topic:partition"."""
    if isinstance(value, dict):
        return {(":".join(map(str, k)) if isinstance(k, tuple) else str(k)): _json_safe(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [_json_safe(v) for v in value]
    return value


def encode_snapshot(meta: dict[str, Any], state: dict[str, Any]) -> bytes:
    return sealed(pickled_snapshot(meta, state))


def pickled_snapshot(meta: dict[str, Any], state: dict[str, Any]) -> bytes:
    """The cut of a snapshot (on the thread that owns the state); `sealed` finishes it."""
    return pickling.dumps({"meta": meta, "state": state})


def sealed(payload: bytes) -> bytes:
    """The snapshot file's bytes: on any thread (hashlib lets go of the GIL on large inputs)."""
    return MAGIC + hashlib.blake2b(payload, digest_size=DIGEST_SIZE).digest() + payload


def decode_snapshot(data: bytes) -> dict[str, Any]:
    if not data.startswith(MAGIC):
        raise SnapshotError("not a snapshot file (bad magic)")
    digest, payload = data[len(MAGIC) : len(MAGIC) + DIGEST_SIZE], data[len(MAGIC) + DIGEST_SIZE :]
    if hashlib.blake2b(payload, digest_size=DIGEST_SIZE).digest() != digest:
        raise SnapshotError("checksum mismatch (truncated or corrupt)")
    return pickle.loads(payload)


class SnapshotStore:
    def __init__(self, directory: str | Path, retention: int = 5) -> None:
        self.directory = Path(directory)
        self.directory.mkdir(parents=True, exist_ok=True)
        self.retention = max(1, retention)

    def write(self, meta: dict[str, Any], state: dict[str, Any]) -> tuple[Path, int, float]:
        """Returns (path, size in bytes, seconds taken)."""
        started = time.perf_counter()
        path, size, _ = self.write_encoded(encode_snapshot(meta, state), meta)
        return path, size, time.perf_counter() - started

    def write_encoded(self, data: bytes, meta: dict[str, Any]) -> tuple[Path, int, float]:
        """Writes a snapshot encoded with `encode_snapshot` (on any thread: the bytes are the
        cut); returns (path, size in bytes, seconds taken)."""
        started = time.perf_counter()
        name = f"snapshot-{time.time_ns():020d}.bin"
        final = self.directory / name
        atomic_write_bytes(final, data)
        # A small JSON beside it lists the snapshot without unpickling a model.
        sidecar = json.dumps(_json_safe({"file": name, "bytes": len(data), **meta}), default=str)
        atomic_write_bytes(final.with_suffix(".json"), sidecar.encode())
        self.prune()
        return final, len(data), time.perf_counter() - started

    def paths(self) -> list[Path]:
        """Newest first."""
        return sorted(self.directory.glob("snapshot-*.bin"), reverse=True)

    def prune(self) -> None:
        for stale in self.paths()[self.retention :]:
            stale.unlink(missing_ok=True)
            stale.with_suffix(".json").unlink(missing_ok=True)

    def listing(self) -> list[dict[str, Any]]:
        """The snapshots' metadata, newest first, read from their JSON sidecars."""
        entries = []
        for path in self.paths():
            try:
                entries.append(json.loads(path.with_suffix(".json").read_text()))
            except (OSError, ValueError):
                entries.append({"file": path.name, "meta": "unreadable"})
        return entries

    def valid(self) -> Iterator[Snapshot]:
        for path in self.paths():
            try:
                decoded = decode_snapshot(path.read_bytes())
            except (OSError, SnapshotError, pickle.UnpicklingError, EOFError) as exc:
                log.warning("skipping snapshot %s: %s", path.name, exc)
                continue
            yield Snapshot(path, decoded["meta"], decoded["state"])

    def latest(self) -> Snapshot | None:
        return next(self.valid(), None)
