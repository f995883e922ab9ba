"""The compacting Parquet log: merges keep every row exactly once, readers see one consistent
set of files while a writer merges, and a crash at any step leaves nothing lost or doubled."""

import json
import multiprocessing
import threading

import pyarrow as pa
import pyarrow.parquet as pq

from models import parquet_log
from models.parquet_log import CompactingParquetLog, PackedColumn, ParquetLog

SCHEMA = pa.schema([("id", pa.int64()), ("ts", pa.float64())])


def batch(start, n):
    return pa.table([list(range(start, start + n)), [float(i) for i in range(start, start + n)]], schema=SCHEMA)


def make_log(directory, **options):
    return CompactingParquetLog(directory, SCHEMA, "rows", sort_by=[("ts", "ascending")], **options)


def ids(log):
    return sorted(log.read().column("id").to_pylist())


def test_merges_keep_every_row_once_and_the_files_few(tmp_path):
    log = make_log(tmp_path, fanout=4, retire_grace_seconds=0)
    merged = 0
    for n in range(64):
        outcome = log.write(batch(10 * n, 10))
        merged += outcome.merged_files
        assert outcome.rows == 10 and outcome.files == len(log.files())
        assert ids(log) == list(range(10 * (n + 1)))
    assert merged > 0 and len(log.files()) <= 4  # 64 flushes = 1 file of level 3
    manifest = json.loads((tmp_path / "rows-manifest.json").read_text())
    assert [entry["level"] for entry in manifest["files"]] == [3] and manifest["files"][0]["rows"] == 640
    log.write(batch(640, 10))  # deletes what the last merges retired (no grace)
    on_disk = sorted(p.name for p in tmp_path.glob("rows-*.parquet"))
    assert on_disk == sorted(p.name for p in log.files())
    assert not [p for p in tmp_path.iterdir() if p.name.endswith(".tmp")]
    assert pq.read_table(log.files()[0]).column("ts").to_pylist() == sorted(float(i) for i in range(640))


def test_merged_files_stop_growing_at_max_merged_rows(tmp_path):
    log = make_log(tmp_path, fanout=2, max_merged_rows=40)
    for n in range(16):
        log.write(batch(10 * n, 10))
    assert sorted(entry for entry in (pq.read_metadata(p).num_rows for p in log.files())) == [40, 40, 40, 40]
    assert ids(log) == list(range(160))


def test_retired_files_stay_readable_for_the_grace_period(tmp_path):
    log = make_log(tmp_path, fanout=2, retire_grace_seconds=3600)
    before = log.files()
    log.write(batch(0, 5))
    old = log.files()
    log.write(batch(5, 5))  # merges the two: the old files leave the manifest, not the disk
    assert before == [] and len(log.files()) == 1
    assert all(p.exists() for p in old)


def test_a_reader_during_writes_and_merges_sees_every_committed_row_exactly_once(tmp_path):
    writer = make_log(tmp_path, fanout=2, retire_grace_seconds=0)  # merged inputs deleted at once
    reader = make_log(tmp_path, read_only=True)
    batches, size = 80, 7
    done = threading.Event()

    def write_all():
        for n in range(batches):
            writer.write(batch(size * n, size))
        done.set()

    thread = threading.Thread(target=write_all)
    thread.start()
    seen = 0
    while not done.is_set():
        rows = ids(reader)
        # A prefix of the batches, whole: no row doubled (inputs and their merge) or missed.
        assert rows == list(range(len(rows))) and len(rows) % size == 0
        assert len(rows) >= seen  # never goes back to an older state
        seen = len(rows)
    thread.join()
    assert ids(reader) == list(range(batches * size))


def write_batches(directory, first, count):
    log = make_log(directory, fanout=3)
    for n in range(first, first + count):
        log.write(batch(10 * n, 10))


def test_two_writer_processes_share_one_log(tmp_path):
    context = multiprocessing.get_context("spawn")
    writers = [context.Process(target=write_batches, args=(str(tmp_path), first, 25)) for first in (0, 25)]
    for process in writers:
        process.start()
    for process in writers:
        process.join(timeout=120)
        assert process.exitcode == 0
    assert ids(make_log(tmp_path, read_only=True)) == list(range(500))


def test_what_a_crash_leaves_behind_is_adopted_or_removed(tmp_path):
    log = make_log(tmp_path, fanout=10)
    log.write(batch(0, 10))
    # A flushed file written just before a crash, never listed: its rows are real, adopt it.
    pq.write_table(batch(10, 10), tmp_path / "rows-00000000000000000001-000000.parquet")
    # A merge's output written just before a crash: its inputs are still listed, drop it.
    pq.write_table(batch(0, 10), tmp_path / "rows-00000000000000000002-L1.parquet")
    (tmp_path / ".rows-00000000000000000003-000000.parquet.1-ab.tmp").write_bytes(b"half")
    assert ids(log) == list(range(10))  # readers see only what the manifest lists
    log.write(batch(20, 10))
    assert ids(log) == list(range(30))
    names = sorted(p.name for p in tmp_path.iterdir())
    assert "rows-00000000000000000002-L1.parquet" not in names and not [n for n in names if n.endswith(".tmp")]


def test_a_folder_written_before_manifests_is_read_and_then_adopted(tmp_path):
    legacy = ParquetLog(tmp_path, SCHEMA, "rows")
    for start in range(0, 25, 10):
        legacy.write(legacy.pending(batch(start, min(10, 25 - start))))
    log = make_log(tmp_path, fanout=2)
    assert ids(log) == list(range(25))  # no manifest yet: the flushed files are the log
    log.write(batch(25, 5))
    assert (tmp_path / "rows-manifest.json").exists() and ids(log) == list(range(30))


def test_the_plain_log_leaves_no_temporary_files(tmp_path):
    log = ParquetLog(tmp_path, SCHEMA, "rows")
    for start in range(0, 7, 3):
        log.write(log.pending(batch(start, min(3, 7 - start))))
    assert log.read().column("id").to_pylist() == list(range(7))
    assert not [p for p in tmp_path.iterdir() if p.name.startswith(".")]


def test_a_packed_column_gives_back_each_value_whole_and_in_order():
    column = PackedColumn()
    values = [b"", b"abc", "é".encode() * 3, b"\x00\xff"]
    for value in values:
        column.add(value)
    column.add_json({"a": 1.5, "s": "é"})
    assert column.array(pa.large_binary()).to_pylist() == [*values, b'{"a":1.5,"s":"\xc3\xa9"}']
    assert len(column) == 5


def test_values_extended_at_once_read_back_as_if_added_one_by_one(monkeypatch):
    monkeypatch.setattr(parquet_log, "CHUNK_BYTES", 4)  # values spread over several buffers
    column = PackedColumn()
    column.add(b"first")
    column.extend([b"", b"abc", "é".encode() * 3])
    column.extend([])
    column.add_json([1])
    column.extend([b"\x00\xff", b"z"])
    assert column.array(pa.large_binary()).to_pylist() == [
        b"first",
        b"",
        b"abc",
        "é".encode() * 3,
        b"[1]",
        b"\x00\xff",
        b"z",
    ]
    assert len(column) == 7
    column.add(b"after")  # a column read goes on growing
    assert column.array(pa.large_binary()).to_pylist()[-2:] == [b"z", b"after"]
