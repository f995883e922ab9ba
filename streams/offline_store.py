"""The offline side of the feature store: an append-only log of feature updates in Parquet,
and a point-in-time (as-of) query over it.

Each update the stream applies to an entity is one row (entity, event time, version,
values). `get_offline_features(ids, t)` returns, per entity, the latest row at or before
event time t: exactly the row online serving returned at t, as long as an entity's events
arrive in event-time order (a late event is applied online when it arrives, but sorts
earlier here).
"""

from __future__ import annotations

from pathlib import Path
from typing import Any, Iterable

import orjson
import pyarrow as pa
import pyarrow.compute as pc

from models.parquet_log import ParquetLog

SCHEMA = pa.schema(
    [
        ("entity_id", pa.string()),
        ("updated_at", pa.float64()),
        ("version", pa.int64()),
        ("values", pa.string()),  # JSON: feature sets change as definitions are registered
    ]
)


class OfflineFeatureLog:
    def __init__(self, directory: str | Path, flush_rows: int = 50_000, read_only: bool = False) -> None:
        # Serving processes only read what the stream workers write.
        self._log = ParquetLog(directory, SCHEMA, "features", flush_rows, read_only=read_only)
        self._pending: list[tuple[str, float, int, dict[str, Any]]] = []

    def append(self, entity_id: str, state: dict[str, Any]) -> None:
        # Kept as it is and encoded at flush: the stream never changes a state it has stored.
        self._pending.append((entity_id, state["updated_at"], state["version"], state["values"]))

    def take(self) -> list[tuple[str, float, int, dict[str, Any]]]:
        """The updates appended since the last call (on the thread that appends)."""
        pending, self._pending = self._pending, []
        return pending

    def write(self, updates: list[tuple[str, float, int, dict[str, Any]]]) -> None:
        """Writes updates taken with `take` (on any thread: it touches nothing `append` does)."""
        for entity_id, updated_at, version, values in updates:
            self._log.append((entity_id, updated_at, version, orjson.dumps(values).decode()))
        self._log.flush()

    def flush(self) -> None:
        self.write(self.take())

    def get_offline_features(self, entity_ids: Iterable[str], timestamp: float) -> list[dict[str, Any]]:
        ids = list(entity_ids)
        table = self._log.read(pc.field("entity_id").isin(ids) & (pc.field("updated_at") <= timestamp))
        latest: dict[str, tuple[float, int, str]] = {}
        for entity_id, updated_at, version, values in zip(*(table.column(n).to_pylist() for n in SCHEMA.names)):
            best = latest.get(entity_id)
            if best is None or (updated_at, version) > best[:2]:
                latest[entity_id] = (updated_at, version, values)
        rows = []
        for entity_id in ids:
            found = latest.get(entity_id)
            rows.append(
                {
                    "entity_id": entity_id,
                    "known": found is not None,
                    "values": orjson.loads(found[2]) if found else {},
                    "updated_at": found[0] if found else None,
                    "version": found[1] if found else 0,
                }
            )
        return rows
