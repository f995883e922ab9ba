"""An append-only log of rows in Parquet files, each written atomically (temp file, rename)."""

from __future__ import annotations

import itertools
import time
from pathlib import Path
from typing import Any

import pyarrow as pa
import pyarrow.dataset as ds
import pyarrow.parquet as pq


class ParquetLog:
    def __init__(
        self, directory: str | Path, schema: pa.Schema, prefix: str, flush_rows: int = 50_000, read_only: bool = False
    ) -> None:
        self.directory = Path(directory)
        if not read_only:
            self.directory.mkdir(parents=True, exist_ok=True)
        self.schema = schema
        self.prefix = prefix
        self.flush_rows = flush_rows
        self._rows: list[tuple[Any, ...]] = []
        self._sequence = itertools.count()

    def append(self, row: tuple[Any, ...]) -> None:
        self._rows.append(row)
        if len(self._rows) >= self.flush_rows:
            self.flush()

    def flush(self) -> None:
        if not self._rows:
            return
        rows, self._rows = self._rows, []
        columns = list(zip(*rows))
        table = pa.table([pa.array(c, type=f.type) for c, f in zip(columns, self.schema)], schema=self.schema)
        name = f"{self.prefix}-{time.time_ns():020d}-{next(self._sequence):06d}.parquet"
        partial = self.directory / f".{name}.tmp"
        pq.write_table(table, partial)
        partial.rename(self.directory / name)

    def files(self) -> list[str]:
        return sorted(str(p) for p in self.directory.glob(f"{self.prefix}-*.parquet"))

    def read(self, filter: Any = None) -> pa.Table:
        """Everything flushed so far (optionally filtered), in the order it was written."""
        files = self.files()
        if not files:
            return self.schema.empty_table()
        return ds.dataset(files, schema=self.schema, format="parquet").to_table(filter=filter)
