"""The offline training set: every labelled example the engine learned from, with the
features as they were at prediction time, in the order it learned them."""

from __future__ import annotations

from pathlib import Path
from typing import Any, Iterator

import orjson
import pyarrow as pa

from models.parquet_log import ParquetLog

SCHEMA = pa.schema([("ts", pa.float64()), ("features", pa.string()), ("label", pa.string())])


class TrainingLog:
    def __init__(self, directory: str | Path, flush_rows: int = 50_000) -> None:
        self._log = ParquetLog(directory, SCHEMA, "examples", flush_rows)

    def append(self, ts: float, features: dict[str, Any], label: Any) -> None:
        # JSON keeps each example's own feature set and the label's type (bool, int, str, float).
        self._log.append((ts, orjson.dumps(features, option=orjson.OPT_SERIALIZE_NUMPY).decode(), orjson.dumps(label).decode()))

    def flush(self) -> None:
        self._log.flush()

    def examples(self) -> Iterator[tuple[float, dict[str, Any], Any]]:
        table = self._log.read()
        for ts, features, label in zip(*(table.column(n).to_pylist() for n in SCHEMA.names)):
            yield ts, orjson.loads(features), orjson.loads(label)
