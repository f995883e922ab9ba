"""The offline side of the feature store: an append-only log of feature updates in Parquet,
and a point-in-time (as-of) query over it.

Each update the stream applies to an entity is one row (entity, event time, version,
values). `get_offline_features(ids, t)` returns, per entity, the latest row at or before
event time t (the greatest (updated_at, version)): exactly the row online serving returned
at t, as long as an entity's events arrive in event-time order (a late event is applied
online when it arrives, but sorts earlier here).

The log is a `CompactingParquetLog`: a flush adds one file, and small files are merged into
bigger ones (`fanout` at a time, up to `max_merged_rows`), so a query opens a handful of
files rather than one per flush. Every file is
sorted by (updated_at, version), in row groups of `row_group_rows`. That, rather than a sort
by entity, is what the as-of query wants: the row each entity had at t is the last one before
t, so the query reads row groups backwards from t (row-group statistics skip everything after
t) and stops as soon as no older row group can hold a later row for any requested entity.
For entities that are updated at all often that is the few row groups just before t; only an
entity with no update for a long time before t (or none at all) makes it read further back.
It reads three narrow columns to find the rows, then `values` only in the row groups that
hold them.

Why pyarrow and not DuckDB: DuckDB answers the same query by scanning every row at or
before t (its row-group pruning has nothing to go on: every row group holds every entity),
and over the same files (1 million updates, 100 entities at a random time;
`benchmarks/offline_query.py --duckdb`) it was several times slower than this backward read.
It is not clearly faster, it is a large dependency, and pyarrow is one already.
"""

from __future__ import annotations

import math
from collections.abc import Iterable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import orjson
import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.parquet as pq

from models.parquet_log import CompactingParquetLog, PackedColumn, WriteOutcome

SCHEMA = pa.schema(
    [
        ("entity_id", pa.string()),
        ("updated_at", pa.float64()),
        ("version", pa.int64()),
        ("values", pa.string()),  # JSON: feature sets change as definitions are registered
    ]
)
KEY_COLUMNS = ["entity_id", "updated_at", "version"]
ORDER = [("updated_at", "ascending"), ("version", "ascending")]


@dataclass
class PendingUpdates:
    """Updates appended and not yet written, in columns: each update's values encoded as JSON
    as it is appended, into one buffer (`PackedColumn`)."""

    entity_ids: list[str] = field(default_factory=list)
    updated_at: list[float] = field(default_factory=list)
    versions: list[int] = field(default_factory=list)
    values: PackedColumn = field(default_factory=PackedColumn)

    def __len__(self) -> int:
        return len(self.entity_ids)

    def append(self, entity_id: str, updated_at: float, version: int, values: dict[str, Any]) -> None:
        self.entity_ids.append(entity_id)
        self.updated_at.append(updated_at)
        self.versions.append(version)
        self.values.add_json(values)

    def table(self) -> pa.Table:
        """All of them in one table (64-bit string offsets for the values, whatever their size);
        each file's slice is cast to the schema when it is written."""
        return pa.table(
            [
                pa.array(self.entity_ids, pa.string()),
                pa.array(self.updated_at, pa.float64()),
                pa.array(self.versions, pa.int64()),
                self.values.array(pa.large_string()),
            ],
            names=SCHEMA.names,
        )


@dataclass(frozen=True)
class _FileIndex:
    """What a query needs to know of one (immutable) file without opening it."""

    metadata: pq.FileMetaData
    row_groups: list[tuple[int, float, float]]  # (row group, min, max updated_at), non-empty ones


class OfflineFeatureLog:
    def __init__(
        self,
        directory: str | Path,
        flush_rows: int = 50_000,
        read_only: bool = False,
        *,
        fanout: int = 8,
        max_merged_rows: int = 2_000_000,
        row_group_rows: int = 16_384,
        retire_grace_seconds: float = 60.0,
    ) -> None:
        # Serving processes only read what the stream workers write.
        self._log = CompactingParquetLog(
            directory,
            SCHEMA,
            "features",
            sort_by=ORDER,
            row_group_rows=row_group_rows,
            dictionary_columns=["entity_id"],  # values are mostly unique: a dictionary only slows them
            # Half the bytes of snappy or lz4 for this log (JSON of floats); lz4 would make a
            # 100-entity query about 10 ms faster (benchmarks/offline_query.py).
            compression="zstd",
            fanout=fanout,
            max_merged_rows=max_merged_rows,
            retire_grace_seconds=retire_grace_seconds,
            read_only=read_only,
        )
        self.flush_rows = flush_rows
        self._pending = PendingUpdates()
        self._files: dict[str, _FileIndex] = {}  # by file name: files never change once written

    # -- writing (the stream worker) ----------------------------------------------------------

    def append(self, entity_id: str, state: dict[str, Any]) -> None:
        # Encoded now: the values are in the cache as the event is applied, and writing a
        # flush's updates then costs no Python work per update.
        self._pending.append(entity_id, state["updated_at"], state["version"], state["values"])

    def take(self) -> PendingUpdates:
        """The updates appended since the last call (on the thread that appends)."""
        pending, self._pending = self._pending, PendingUpdates()
        return pending

    def write(self, updates: PendingUpdates) -> list[WriteOutcome]:
        """Writes updates taken with `take` (on any thread: it touches nothing `append` does),
        in files of at most `flush_rows` rows; merging small files happens here too, so call
        it off the event loop."""
        if not len(updates):
            return []
        table = updates.table()
        outcomes = []
        for start in range(0, len(updates), self.flush_rows):
            part = table.slice(start, self.flush_rows)
            outcomes.append(self._log.write(part.cast(SCHEMA)))
        return outcomes

    def flush(self) -> None:
        self.write(self.take())

    def files(self) -> list[Path]:
        return self._log.files()

    # -- the as-of query (serving) ------------------------------------------------------------

    def get_offline_features(self, entity_ids: Iterable[str], timestamp: float) -> list[dict[str, Any]]:
        ids = list(entity_ids)
        found = self._log.read_consistent(lambda paths: self._as_of(paths, set(ids), timestamp)) if ids else {}
        rows = []
        for entity_id in ids:
            hit = found.get(entity_id)
            rows.append(
                {
                    "entity_id": entity_id,
                    "known": hit is not None,
                    "values": orjson.loads(hit[2]) if hit else {},
                    "updated_at": hit[0] if hit else None,
                    "version": hit[1] if hit else 0,
                }
            )
        return rows

    def _index(self, path: Path) -> _FileIndex:
        index = self._files.get(path.name)
        if index is None:
            metadata = pq.read_metadata(path)
            column = metadata.schema.names.index("updated_at")
            ranges = []
            for g in range(metadata.num_row_groups):
                row_group = metadata.row_group(g)
                if not row_group.num_rows:
                    continue
                stats = row_group.column(column).statistics
                if stats is not None and stats.has_min_max:
                    ranges.append((g, stats.min, stats.max))
                else:  # no statistics (another writer): the row group may hold anything
                    ranges.append((g, -math.inf, math.inf))
            index = self._files[path.name] = _FileIndex(metadata, ranges)
        return index

    def _as_of(self, paths: list[Path], wanted: set[str], t: float) -> dict[str, tuple[float, int, str]]:
        """entity -> (updated_at, version, values JSON) of its greatest (updated_at, version) <= t."""
        live = {p.name for p in paths}
        for name in list(self._files):  # list(): other queries may run on other threads
            if name not in live:  # merged away: forget it
                self._files.pop(name, None)
        # Row groups that may hold rows at or before t, latest first by the latest time they
        # can hold that matters (their max, or t).
        groups: list[tuple[float, Path, int]] = []
        for path in paths:
            for g, low, high in self._index(path).row_groups:
                if low <= t:
                    groups.append((min(high, t), path, g))
        groups.sort(key=lambda group: group[0], reverse=True)

        ids = pa.array(sorted(wanted), pa.string())
        best: dict[str, tuple[float, int, Path, int, int]] = {}  # entity -> (u, v, path, row group, row)
        handles: dict[Path, pq.ParquetFile] = {}
        try:
            for i, (_, path, g) in enumerate(groups):
                handle = handles.get(path)
                if handle is None:
                    handle = handles[path] = pq.ParquetFile(
                        path, metadata=self._index(path).metadata, read_dictionary=["entity_id"]
                    )
                keys = handle.read_row_group(g, columns=KEY_COLUMNS, use_threads=False)
                mask = pc.and_(
                    pc.is_in(keys.column("entity_id"), value_set=ids), pc.less_equal(keys.column("updated_at"), t)
                )
                rows = pc.indices_nonzero(mask)
                if len(rows):
                    hits = keys.take(rows)
                    for entity_id, updated_at, version, row in zip(
                        hits.column("entity_id").to_pylist(),
                        hits.column("updated_at").to_pylist(),
                        hits.column("version").to_pylist(),
                        rows.to_pylist(),
                    ):
                        known = best.get(entity_id)
                        if known is None or (updated_at, version) > known[:2]:
                            best[entity_id] = (updated_at, version, path, g, row)
                # Every row group left holds rows no later than the next one's bound: once each
                # entity has a row after that, nothing left can replace it.
                if len(best) == len(wanted):
                    bound = groups[i + 1][0] if i + 1 < len(groups) else -math.inf
                    if min(found[0] for found in best.values()) > bound:
                        break

            # The values, from only the row groups that hold an answer.
            by_group: dict[tuple[Path, int], list[str]] = {}
            for entity_id, (_, _, path, g, _) in best.items():
                by_group.setdefault((path, g), []).append(entity_id)
            answers = {}
            for (path, g), entities in by_group.items():
                column = handles[path].read_row_group(g, columns=["values"], use_threads=False).column("values")
                values = column.take([best[e][4] for e in entities]).to_pylist()
                for entity_id, value in zip(entities, values):
                    answers[entity_id] = (best[entity_id][0], best[entity_id][1], value)
            return answers
        finally:
            for handle in handles.values():
                handle.close()
