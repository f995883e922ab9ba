"""Append-only logs of rows in Parquet files, each file written atomically (`models.atomic`).

`ParquetLog` writes one file per flush and reads them back in the order written (the
training log, read whole by the retrainer). Its owner keeps the rows in columns until then
(`PackedColumn` holds a variable-length column in one buffer).

`CompactingParquetLog` is for a log that is queried while it grows (the offline feature log).
A manifest names the files that make up the log, and merging keeps their number small:
`fanout` files of one level become one file of the next (tiered, as in an LSM tree), so the
log holds about `fanout` files per level and each row is rewritten once per level, until a
merged file would pass `max_merged_rows` (a merge holds its input in memory).

How readers never see a half-merged log: every change (a new file, a merge) happens under a
file lock and ends with the manifest being replaced atomically, and a reader reads only the
files named by the one manifest it read. A merge writes its output first and lists it in
the manifest in place of its inputs; the inputs stay on disk for `retire_grace_seconds`
(a reader holding the old manifest can still read them), and are deleted by a later write.
A reader that still loses a file (it took longer than that) re-reads the manifest and starts
again (`read_consistent`). Readers take no lock and never write.

A crash between writing a file and listing it leaves a file no manifest names: the next
writer adopts it when it is a flushed file (its rows were never read, and now they are) and
deletes it when it is the output of an unfinished merge (its inputs are all still listed).
A folder written before manifests existed is adopted the same way.
"""

from __future__ import annotations

import itertools
import json
import logging
import re
import time
from array import array
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, TypeVar

import msgspec
import pyarrow as pa
import pyarrow.dataset as ds
import pyarrow.parquet as pq
from filelock import FileLock

from models.atomic import atomic_path, atomic_write_bytes

log = logging.getLogger(__name__)

T = TypeVar("T")

READ_ATTEMPTS = 5


@dataclass(frozen=True)
class PendingFile:
    name: str
    table: pa.Table  # cast to the log's schema when written


class PackedColumn:
    """Variable-length values (bytes, or JSON encoded here) back to back in a few buffers,
    with where each ends: an Arrow array is then built from two buffers, with no Python
    object (a tuple, a str) per value on the way.

    Values go into a buffer of at most about CHUNK_BYTES, then the next: one growing buffer
    of tens of megabytes was copied whole each time it outgrew its place (in a live worker,
    appending a batch's examples to the training log cost 0.54-0.69 µs an example)."""

    __slots__ = ("_chunks", "_ends", "_sealed", "_tail")

    def __init__(self) -> None:
        self._chunks: list[bytes | bytearray] = []  # full buffers, and values extended at once
        self._tail = bytearray()  # the buffer values are added to
        self._sealed = 0  # bytes in _chunks
        self._ends = array("q", [0])

    def __len__(self) -> int:
        return len(self._ends) - 1

    def add(self, value: bytes) -> None:
        tail = self._tail
        tail += value
        self._ends.append(self._sealed + len(tail))
        if len(tail) >= CHUNK_BYTES:
            self._seal()

    def add_json(self, value: Any) -> None:
        tail = self._tail
        _JSON.encode_into(value, tail, -1)  # -1: at the end of the buffer
        self._ends.append(self._sealed + len(tail))
        if len(tail) >= CHUNK_BYTES:
            self._seal()

    def extend(self, values: Sequence[bytes]) -> None:
        """`add` for each of `values`, with no Python step per value: they are kept as they
        are until `array` puts every value in one buffer."""
        self._seal()
        self._ends.extend(itertools.islice(itertools.accumulate(map(len, values), initial=self._sealed), 1, None))
        self._chunks.extend(values)
        self._sealed = self._ends[-1]

    def _seal(self) -> None:
        if self._tail:
            self._chunks.append(self._tail)
            self._sealed += len(self._tail)
            self._tail = bytearray()

    def array(self, large_type: pa.DataType) -> pa.Array:
        """The values as an array of `large_type` (large_binary, large_string: 64-bit offsets,
        whatever the buffer's size); its buffers are copies: the column may go on growing."""
        self._seal()
        values = b"".join(self._chunks)
        return pa.Array.from_buffers(
            large_type, len(self), [None, pa.py_buffer(self._ends.tobytes()), pa.py_buffer(values)]
        )


CHUNK_BYTES = 1 << 20
_JSON = msgspec.json.Encoder()


class ParquetLog:
    def __init__(self, directory: str | Path, schema: pa.Schema, prefix: str, read_only: bool = False) -> None:
        self.directory = Path(directory)
        if not read_only:
            self.directory.mkdir(parents=True, exist_ok=True)
        self.schema = schema
        self.prefix = prefix
        self._sequence = itertools.count()

    def pending(self, table: pa.Table) -> PendingFile:
        """A table to write, with the name of the file it goes to: named now, so that files
        written later (on another thread) still read back in this order."""
        return PendingFile(f"{self.prefix}-{time.time_ns():020d}-{next(self._sequence):06d}.parquet", table)

    def write(self, pending: PendingFile | None) -> None:
        """Writes a pending file (on any thread)."""
        if pending is None:
            return
        with atomic_path(self.directory / pending.name) as partial:
            pq.write_table(pending.table.cast(self.schema), partial)

    def files(self) -> list[str]:
        return sorted(str(p) for p in self.directory.glob(f"{self.prefix}-*.parquet"))

    def read(self, filter: Any = None) -> pa.Table:
        """Everything flushed so far (optionally filtered), in the order it was written."""
        files = self.files()
        if not files:
            return self.schema.empty_table()
        return ds.dataset(files, schema=self.schema, format="parquet").to_table(filter=filter)


def _read_file(path: Path) -> pa.Table:
    with pq.ParquetFile(path) as file:  # a whole file: cheaper than the dataset machinery
        return file.read()


@dataclass
class WriteOutcome:
    """What one `CompactingParquetLog.write` did, for the caller to record."""

    rows: int = 0
    merged_files: int = 0  # inputs of the merges this write did (0: none)
    merged_rows: int = 0
    merge_seconds: float = 0.0
    merge_error: str | None = None
    files: int = 0  # files in the log afterwards


@dataclass
class _Manifest:
    files: list[dict[str, Any]] = field(default_factory=list)  # {"name", "rows", "level"}
    retired: list[dict[str, Any]] = field(default_factory=list)  # {"name", "retired_at"}


class CompactingParquetLog:
    def __init__(
        self,
        directory: str | Path,
        schema: pa.Schema,
        prefix: str,
        *,
        sort_by: Sequence[tuple[str, str]] = (),
        row_group_rows: int = 16_384,
        dictionary_columns: Sequence[str] = (),
        compression: str = "zstd",
        fanout: int = 8,
        max_merged_rows: int = 2_000_000,
        retire_grace_seconds: float = 60.0,
        read_only: bool = False,
    ) -> None:
        self.directory = Path(directory)
        if not read_only:
            self.directory.mkdir(parents=True, exist_ok=True)
        self.schema = schema
        self.prefix = prefix
        self.sort_by = list(sort_by)
        self.fanout = max(2, fanout)
        self.max_merged_rows = max_merged_rows
        self.retire_grace_seconds = retire_grace_seconds
        self._write_options = {
            "row_group_size": row_group_rows,
            "compression": compression,
            "use_dictionary": list(dictionary_columns) or False,
        }
        self.manifest_path = self.directory / f"{prefix}-manifest.json"
        # A cross-process lock (flock on Linux and macOS, msvcrt locking on Windows): the
        # kernel drops it when its holder dies, so a crashed writer never blocks the next one.
        # Only writers take it; waiting for it is bounded by one merge of max_merged_rows.
        self._lock = FileLock(self.directory / f"{prefix}.lock")
        self._flushed = re.compile(rf"{re.escape(prefix)}-\d{{20}}-\d{{6}}\.parquet")
        self._merged = re.compile(rf"{re.escape(prefix)}-\d{{20}}-L\d+\.parquet")

    # -- reading ----------------------------------------------------------------------------

    def files(self) -> list[Path]:
        """The files that make up the log now, from one manifest."""
        try:
            manifest = json.loads(self.manifest_path.read_bytes())
        except FileNotFoundError:
            # Never written with a manifest: its flushed files are the log. (Merged files
            # only count once a manifest names them.)
            if not self.directory.is_dir():
                return []
            return sorted(p for p in self.directory.iterdir() if self._flushed.fullmatch(p.name))
        return [self.directory / entry["name"] for entry in manifest["files"]]

    def read_consistent(self, query: Callable[[list[Path]], T]) -> T:
        """Runs `query` over the files of one manifest; if one of them is gone (deleted after a
        merge while this reader was slow), again over the files of a newer manifest."""
        for _ in range(READ_ATTEMPTS - 1):
            try:
                return query(self.files())
            except FileNotFoundError:
                continue
        return query(self.files())

    def read(self, filter: Any = None) -> pa.Table:
        """Every row (optionally filtered); rows are in no particular order across files."""

        def scan(paths: list[Path]) -> pa.Table:
            if not paths:
                return self.schema.empty_table()
            return ds.dataset([str(p) for p in paths], schema=self.schema, format="parquet").to_table(filter=filter)

        return self.read_consistent(scan)

    # -- writing ----------------------------------------------------------------------------

    def write(self, table: pa.Table) -> WriteOutcome:
        """Adds `table` as one file, then merges what is due: until no level has `fanout`
        files, or this call has merged `max_merged_rows` rows (a backlog, such as an adopted
        folder of many small files, is worked off over several writes)."""
        if table.num_rows == 0:
            return WriteOutcome()
        if self.sort_by:
            table = table.sort_by(self.sort_by)
        with self._lock:
            manifest = self._manifest_for_writing()
            name = self._new_name("000000")  # the shape of the names flushes always had
            self._write_file(name, table)
            manifest.files.append({"name": name, "rows": table.num_rows, "level": 0})
            self._save(manifest)
            outcome = WriteOutcome(rows=table.num_rows)
            started = time.perf_counter()
            while outcome.merged_rows < self.max_merged_rows and (group := self._merge_candidates(manifest)):
                try:
                    self._merge(manifest, group)
                except (OSError, pa.ArrowException) as exc:
                    # Policy: the log stays as it was (every row still listed once); the next
                    # write tries again. Nothing is lost, queries only read more files.
                    log.warning("merging %d files of %s failed: %r", len(group), self.directory, exc)
                    outcome.merge_error = repr(exc)
                    break
                outcome.merged_files += len(group)
                outcome.merged_rows += sum(entry["rows"] for entry in group)
            outcome.merge_seconds = time.perf_counter() - started if outcome.merged_files else 0.0
            outcome.files = len(manifest.files)
            return outcome

    def _manifest_for_writing(self) -> _Manifest:
        """The manifest, tidied (under the lock): retired files past their grace deleted,
        files no manifest names adopted or deleted, temporary files of dead writers removed."""
        try:
            raw = json.loads(self.manifest_path.read_bytes())
            manifest = _Manifest(raw["files"], raw["retired"])
        except FileNotFoundError:
            manifest = _Manifest()
        now = time.time()
        expired = [entry for entry in manifest.retired if now - entry["retired_at"] >= self.retire_grace_seconds]
        for entry in expired:
            (self.directory / entry["name"]).unlink(missing_ok=True)
        manifest.retired = [entry for entry in manifest.retired if entry not in expired]
        known = {entry["name"] for entry in manifest.files} | {entry["name"] for entry in manifest.retired}
        for path in sorted(self.directory.iterdir()):
            if path.name in known:
                continue
            if self._flushed.fullmatch(path.name):
                try:
                    rows = pq.read_metadata(path).num_rows
                except (OSError, pa.ArrowException) as exc:
                    log.warning("not adopting unreadable %s: %r", path, exc)
                    continue
                manifest.files.append({"name": path.name, "rows": rows, "level": 0})
            elif self._merged.fullmatch(path.name):
                path.unlink()  # an unfinished merge: its inputs are all still listed
            elif path.name.startswith(f".{self.prefix}-") and path.name.endswith(".tmp"):
                path.unlink()  # under the lock no writer is halfway through a file
        return manifest

    def _save(self, manifest: _Manifest) -> None:
        body = {"format": 1, "files": manifest.files, "retired": manifest.retired}
        atomic_write_bytes(self.manifest_path, json.dumps(body, indent=1).encode())

    def _new_name(self, suffix: str) -> str:
        # Unique under the lock even if the clock repeats or steps back.
        stamp = time.time_ns()
        while True:
            name = f"{self.prefix}-{stamp:020d}-{suffix}.parquet"
            if not (self.directory / name).exists():
                return name
            stamp += 1

    def _write_file(self, name: str, table: pa.Table) -> None:
        with atomic_path(self.directory / name) as partial:
            pq.write_table(table, partial, **self._write_options)

    def _merge_candidates(self, manifest: _Manifest) -> list[dict[str, Any]]:
        for level in sorted({entry["level"] for entry in manifest.files}):
            same_level = sorted((e for e in manifest.files if e["level"] == level), key=lambda e: e["rows"])
            group = same_level[: self.fanout]
            if len(group) == self.fanout and sum(e["rows"] for e in group) <= self.max_merged_rows:
                return group
        return []

    def _merge(self, manifest: _Manifest, group: list[dict[str, Any]]) -> None:
        merged = pa.concat_tables([_read_file(self.directory / e["name"]).cast(self.schema) for e in group])
        if self.sort_by:
            merged = merged.sort_by(self.sort_by)
        level = max(e["level"] for e in group) + 1
        name = self._new_name(f"L{level}")
        self._write_file(name, merged)
        names = {e["name"] for e in group}
        manifest.files = [e for e in manifest.files if e["name"] not in names]
        manifest.files.append({"name": name, "rows": merged.num_rows, "level": level})
        now = time.time()
        manifest.retired.extend({"name": n, "retired_at": now} for n in sorted(names))
        self._save(manifest)
