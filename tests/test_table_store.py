"""The feature table's RocksDB store: rows on disk with their changelog offset, read back
after a restart, and a database that is not ours refused and rebuilt."""

from __future__ import annotations

import asyncio
import logging
from pathlib import Path
from types import SimpleNamespace

import faust
import orjson
import pytest
from aiokafka.producer.message_accumulator import BatchBuilder
from faust.types import TP

from streams.changelog import PersistentTableWriter
from streams.table_store import (
    CACHE_ROWS_OPTION,
    IDENTITY_OPTION,
    RowStore,
    remove_stores_ahead_of,
    store_url,
    stores_ahead_of,
)

TABLE = "entity-features"


def open_store(
    tables: Path, identity: bytes = b"app/entity-features/features-1", partitions: int = 2, cache_rows: int = 1000
) -> RowStore:
    """The store of a worker whose tables are in `tables`, with its partitions' databases
    open (as Faust opens them when they are assigned)."""
    app = faust.App("table-store-test", datadir=str(tables.parent / "faust"), tabledir=str(tables))
    options = {IDENTITY_OPTION: identity, CACHE_ROWS_OPTION: cache_rows}
    table = app.Table(TABLE, default=None, key_type=str, store=store_url(TABLE), options=options)
    store = table.data
    assert isinstance(store, RowStore)
    for partition in range(partitions):
        store._db_for_partition(partition)
    return store


def close(store: RowStore) -> None:
    for db in store._dbs.values():
        db.close()
    store._dbs.clear()


def changelog_tp(store: RowStore, partition: int) -> TP:
    return TP(store.table.changelog_topic.get_topic_name(), partition)


def rows(*pairs: tuple[str, dict | None]) -> list[tuple[bytes, bytes | None]]:
    return [(orjson.dumps(key), None if value is None else orjson.dumps(value)) for key, value in pairs]


def test_written_rows_and_their_changelog_offset_are_read_back_after_a_restart(tmp_path):
    store = open_store(tmp_path / "tables")
    store.write(0, rows(("a", {"offset": 3}), ("b", {"offset": 4})), changelog_offset=41)
    store.write(1, rows(("c", {"offset": 7})), changelog_offset=9)
    store.write(0, rows(("b", None)), changelog_offset=42)
    close(store)

    again = open_store(tmp_path / "tables")
    assert again.persisted_offset(changelog_tp(again, 0)) == 42
    assert again.persisted_offset(changelog_tp(again, 1)) == 9
    assert again.row("a") == {"offset": 3}
    assert again.row("b") is None  # deleted in a later batch
    assert again.row("c") == {"offset": 7}
    assert again.row("unknown") is None
    close(again)


def test_rows_held_in_memory_are_not_on_disk_until_written(tmp_path):
    store = open_store(tmp_path / "tables")
    store.write(0, rows(("a", {"v": 1})), changelog_offset=0)
    store.keep(0, "a", {"v": 2})  # set in a batch whose changelog is not acknowledged yet
    assert store.row("a") == {"v": 2}
    close(store)
    again = open_store(tmp_path / "tables")
    assert again.row("a") == {"v": 1}  # what a crash before the acknowledgement leaves: the changelog's state
    close(again)


def test_a_revoked_partition_s_rows_leave_memory(tmp_path):
    store = open_store(tmp_path / "tables")
    store.write(0, rows(("a", {"v": 1})), changelog_offset=0)
    store.write(1, rows(("b", {"v": 1})), changelog_offset=0)
    store.keep(0, "a", {"v": 1})
    store.keep(1, "b", {"v": 1})
    # Another worker changes "a" while this one does not own partition 0; recovery writes it to disk.
    store.revoke_partitions(store.table, {changelog_tp(store, 0)})
    store._db_for_partition(0).put(orjson.dumps("a"), orjson.dumps({"v": 5}))
    assert store.row("a") == {"v": 5}
    assert "b" in store.rows
    close(store)


def test_a_store_written_for_other_features_is_removed_and_rebuilt(tmp_path, caplog):
    store = open_store(tmp_path / "tables", identity=b"app/entity-features/features-1")
    store.write(0, rows(("a", {"v": 1})), changelog_offset=10)
    close(store)

    with caplog.at_level(logging.WARNING, logger="streams.table_store"):
        other = open_store(tmp_path / "tables", identity=b"app/entity-features/features-2")
        assert other.persisted_offset(changelog_tp(other, 0)) is None  # recovery reads the whole changelog
    assert other.row("a") is None
    assert "written by app/entity-features/features-1" in caplog.text
    assert "rebuilding it from the changelog" in caplog.text
    close(other)


def test_a_store_without_our_identity_is_not_trusted(tmp_path, caplog):
    store = open_store(tmp_path / "tables")
    db = store._db_for_partition(0)
    db.delete(b"__rtml\x00identity__")  # as Faust's own store, or another tool, leaves it
    close(store)
    with caplog.at_level(logging.WARNING, logger="streams.table_store"):
        again = open_store(tmp_path / "tables")
        again.write(0, rows(("a", {"v": 1})), changelog_offset=0)
    close(again)
    assert caplog.text == ""  # an empty database without identity is simply taken

    store = open_store(tmp_path / "tables")
    store._db_for_partition(0).delete(b"__rtml\x00identity__")
    close(store)
    with caplog.at_level(logging.WARNING, logger="streams.table_store"):
        again = open_store(tmp_path / "tables")
        assert again.persisted_offset(changelog_tp(again, 0)) is None
    assert "does not say who wrote them" in caplog.text
    close(again)


def test_a_corrupt_store_is_removed_and_rebuilt(tmp_path, caplog):
    store = open_store(tmp_path / "tables")
    store.write(0, rows(("a", {"v": 1})), changelog_offset=10)
    path = store.partition_path(0)
    close(store)
    (path / "CURRENT").write_text("MANIFEST-999999\n")  # points at a manifest that does not exist

    with caplog.at_level(logging.WARNING, logger="streams.table_store"):
        again = open_store(tmp_path / "tables")
        assert again.persisted_offset(changelog_tp(again, 0)) is None
    assert "RocksDB cannot open it" in caplog.text
    assert again.row("a") is None
    close(again)


class FakeProducer:
    """Sends nothing: each batch's delivery future is settled by the test, as Kafka would."""

    def __init__(self) -> None:
        self.sent: list[tuple[int, BatchBuilder, asyncio.Future]] = []
        self.next_offset = 0

    def create_batch(self) -> BatchBuilder:
        return BatchBuilder(1 << 20, 0)  # aiokafka's own, as a producer without serializers makes it

    async def send_batch(self, batch: BatchBuilder, topic: str, *, partition: int) -> asyncio.Future:
        future = asyncio.get_running_loop().create_future()
        self.sent.append((partition, batch, future))
        return future

    def acknowledge(self, index: int) -> None:
        _, batch, future = self.sent[index]
        future.set_result(SimpleNamespace(offset=self.next_offset))
        self.next_offset += batch.record_count()


async def test_the_writer_puts_rows_on_disk_only_once_kafka_acknowledged_them(tmp_path):
    store = open_store(tmp_path / "tables")
    writer = PersistentTableWriter(store.table)
    producer = FakeProducer()
    tp = changelog_tp(store, 0)

    writer.set(0, "a", {"v": 1})
    writer.set(0, "b", {"v": 1})
    writer.set(0, "a", {"v": 2})  # the last value of a key in a batch is the one sent
    assert writer.get("a") == {"v": 2}
    futures = await writer.flush(producer)
    assert store.persisted_offset(tp) is None  # sent, not acknowledged: nothing on disk
    producer.acknowledge(0)
    await asyncio.gather(*futures)
    writer.written()
    assert store.persisted_offset(tp) == 1
    assert store._db_for_partition(0).get(orjson.dumps("a")) == orjson.dumps({"v": 2})

    writer.set(0, "c", {"v": 1})
    failed = await writer.flush(producer)
    producer.sent[1][2].set_exception(RuntimeError("broker gone"))
    with pytest.raises(RuntimeError):
        await asyncio.gather(*failed)
    writer.delete(0, "b")
    futures = await writer.flush(producer)
    producer.acknowledge(2)
    await asyncio.gather(*futures)
    writer.written()
    db = store._db_for_partition(0)
    assert db.get(orjson.dumps("c")) is None  # its batch was never acknowledged
    assert db.get(orjson.dumps("b")) is None  # deleted, acknowledged
    assert store.persisted_offset(tp) == 2
    close(store)


async def acknowledged_batch(writer: PersistentTableWriter, producer: FakeProducer, rows: dict[str, dict]) -> None:
    for key, value in rows.items():
        writer.set(0, key, value)
    futures = await writer.flush(producer)
    producer.acknowledge(len(producer.sent) - 1)
    await asyncio.gather(*futures)
    writer.written()


async def test_rows_past_the_cache_leave_memory_once_written_and_are_read_back_from_disk(tmp_path):
    store = open_store(tmp_path / "tables", cache_rows=2)
    writer = PersistentTableWriter(store.table)
    producer = FakeProducer()
    await acknowledged_batch(writer, producer, {"a": {"v": 1}, "b": {"v": 1}, "c": {"v": 1}})
    assert list(store.rows) == ["b", "c"]  # the two set most recently
    assert writer.get("a") == {"v": 1}  # from disk, and hot again
    await acknowledged_batch(writer, producer, {"b": {"v": 2}})
    assert list(store.rows) == ["a", "b"]  # "c" was set longest ago; "a" read back after it
    assert writer.get("c") == {"v": 1}
    assert writer.get("b") == {"v": 2}
    assert len(store.row_partitions) == len(store.rows) <= 3
    close(store)


async def test_a_row_whose_changelog_is_not_acknowledged_stays_in_memory_however_full(tmp_path):
    store = open_store(tmp_path / "tables", cache_rows=1)
    writer = PersistentTableWriter(store.table)
    producer = FakeProducer()
    await acknowledged_batch(writer, producer, {"a": {"v": 1}})
    writer.set(0, "a", {"v": 2})
    failed = await writer.flush(producer)
    producer.sent[-1][2].set_exception(RuntimeError("broker gone"))
    with pytest.raises(RuntimeError):
        await asyncio.gather(*failed)
    await acknowledged_batch(writer, producer, {"b": {"v": 1}, "c": {"v": 1}})
    # Disk still holds {"v": 1} for "a": memory is the only copy of what the stream applied.
    assert writer.get("a") == {"v": 2}
    assert writer.get("b") == {"v": 1}
    close(store)


def test_a_store_ahead_of_its_changelog_is_removed(tmp_path, caplog):
    """Kafka's data wiped, or the changelog made again: the rows on disk belong to another one."""
    tables = tmp_path / "tables"
    store = open_store(tables, partitions=3)
    store.write(0, rows(("a", {"v": 1})), changelog_offset=41)  # records 0..41: the changelog ends at 42
    store.write(1, rows(("b", {"v": 1})), changelog_offset=9)
    close(store)  # partition 2: opened, never written

    assert stores_ahead_of(tables, TABLE, {0: 42, 1: 10, 2: 0}) == []
    assert stores_ahead_of(tables, TABLE, {0: 42, 1: 5}) == [(store.partition_path(1), 9, 5)]
    removed = remove_stores_ahead_of(tables, TABLE, {})  # no changelog at all
    assert any("reach changelog offset 41 but the changelog ends at 0" in line for line in removed)
    again = open_store(tables, partitions=3)
    assert again.persisted_offset(changelog_tp(again, 0)) is None
    assert again.persisted_offset(changelog_tp(again, 1)) is None
    close(again)


def test_a_worker_with_a_relative_state_dir_keeps_its_tables_under_it(tmp_path, monkeypatch):
    # The default STATE_DIR (.state/engine) is relative; Faust would put a relative table
    # directory under its own data directory, which does not exist.
    from engine.settings import Settings
    from engine.stream_worker import StreamWorker
    from engine.worker_modes import LearnerApart
    from streams.features import FeatureRegistry

    monkeypatch.chdir(tmp_path)
    settings = Settings.from_env({"STATE_DIR": "state/engine", "REDIS_URL": ""})
    worker = StreamWorker(settings, FeatureRegistry(), [(settings.model, LearnerApart(settings))])
    assert worker.app.conf.tabledir == tmp_path / "state/engine/tables/worker-0"


class CountingDb:
    def __init__(self, db) -> None:
        self.db = db
        self.gets = 0

    def get(self, key):
        self.gets += 1
        return self.db.get(key)


def test_a_row_is_looked_for_first_where_its_events_come_from(tmp_path):
    store = open_store(tmp_path / "tables", partitions=4)
    store.write(3, rows(("a", {"v": 3})), changelog_offset=0)
    store.write(0, rows(("b", {"v": 0})), changelog_offset=0)
    store.rows.clear()
    store.row_partitions.clear()
    real = dict(store._dbs)
    counting = {p: CountingDb(db) for p, db in real.items()}
    store._dbs.update(counting)
    try:
        assert store.row("a", partition=3) == {"v": 3}
        assert sum(db.gets for db in counting.values()) == 1  # the one database looked in
        assert store.row("b", partition=3) == {"v": 0}  # a producer keyed it elsewhere: still found
        assert store.row_partitions == {"a": 3, "b": 0}
    finally:
        store._dbs.update(real)
        close(store)
