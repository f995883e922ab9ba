"""The offline training set: every labelled example the engine learned from, with the
features as they were at prediction time, in the order it learned them."""

from __future__ import annotations

from collections.abc import Iterator, Sequence
from pathlib import Path
from typing import Any

import orjson
import pyarrow as pa

from models.parquet_log import PackedColumn, ParquetLog, PendingFile

# One row per example: its event time, and the example as the examples topic carries it
# (JSON keeps each example's own feature set and the label's type: bool, int, str, float).
# The learner already has those bytes; writing them as they are keeps this log off its hot path.
SCHEMA = pa.schema([("ts", pa.float64()), ("example", pa.binary())])


class TrainingLog:
    def __init__(self, directory: str | Path, flush_rows: int = 50_000) -> None:
        self._log = ParquetLog(directory, SCHEMA, "examples-v2")
        self.flush_rows = flush_rows
        self._start()

    def _start(self) -> None:
        self._ts: list[float] = []
        self._examples = PackedColumn()

    def append(self, ts: float, example_record: bytes) -> None:
        self.extend([ts], [example_record])

    def extend(self, ts: Sequence[float], example_records: Sequence[bytes]) -> None:
        """Appends examples (their event times, and their records as the examples topic holds
        them) at once: a learned batch's, without a Python call per example."""
        self._ts.extend(ts)
        self._examples.extend(example_records)
        if len(self._ts) >= self.flush_rows:
            self.flush()

    def flush(self) -> None:
        self._log.write(self.take())

    def take(self) -> PendingFile | None:
        """The rows to flush, named in order now, to `write` later on any thread."""
        if not self._ts:
            return None
        table = pa.table(
            [pa.array(self._ts, pa.float64()), self._examples.array(pa.large_binary())], names=SCHEMA.names
        )
        self._start()
        return self._log.pending(table)

    def write(self, pending: PendingFile | None) -> None:
        self._log.write(pending)

    def examples(self) -> Iterator[tuple[float, dict[str, Any], Any]]:
        """(event time, features, label) of every example, in the order they were learned."""
        table = self._log.read()
        for ts, raw in zip(table.column("ts").to_pylist(), table.column("example").to_pylist()):
            record = orjson.loads(raw)
            yield ts, record["features"], record["label"]
