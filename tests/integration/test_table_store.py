"""The feature table on local disk (TABLE_STORE=rocksdb) against the real broker: after a
kill -9 at any point (small batches put most kills inside a batch's sends) the rows on disk
are exactly the changelog up to the offset the store names, whichever rows were in memory;
a restart reads only the tail;
every event ends applied once; serving's /readyz tells the worker's state."""

from __future__ import annotations

import asyncio
import random
import time
from collections import Counter

import orjson
import pytest
from faust.types import TP

from engine.harness import EngineProcess
from engine.stream_worker import store_identity
from streams.features import FeatureRegistry
from tests.conftest import KAFKA_BOOTSTRAP, unique_env
from tests.integration.kafka_client import consume_all, end_offset, eventually, produce
from tests.test_table_store import close, open_store

pytestmark = pytest.mark.integration

EVENTS = 1500
ENTITIES = 150


def messages(start: int, count: int) -> list[tuple[bytes, bytes]]:
    out = []
    for i in range(start, start + count):
        entity = f"entity-{i % ENTITIES}"
        event = {"event_id": f"e{i}", "entity_id": entity, "ts": 1_700_000_000 + i, "features": {"x": i % 7}}
        out.append((entity.encode(), orjson.dumps({**event, "label": i % 2})))
    return out


def disk_rows(worker: EngineProcess) -> tuple[dict[str, dict], int | None]:
    """Every row in the worker's store on disk, and the changelog offset it says they reach."""
    settings = worker.settings
    store = open_store(settings.table_path, store_identity(settings, FeatureRegistry()), partitions=1)
    try:
        rows = {
            orjson.loads(k): orjson.loads(v) for k, v in store._db_for_partition(0).items() if not k.startswith(b"__")
        }
        return rows, store.persisted_offset(TP(settings.entity_changelog_topic, 0))
    finally:
        close(store)


async def changelog_upto(worker: EngineProcess, offset: int | None) -> dict[str, dict]:
    """The latest row of each key in the changelog up to and including `offset`."""
    if offset is None:
        return {}
    records = await consume_all(KAFKA_BOOTSTRAP, worker.settings.entity_changelog_topic, offset + 1, timeout=30)
    latest: dict[str, dict] = {}
    for record in records:
        if record.offset <= offset:
            latest[orjson.loads(record.key)] = orjson.loads(record.value)
    return latest


async def test_kill_9_anywhere_leaves_the_store_a_prefix_of_the_changelog(tmp_path, processes):
    # A cache of 20 rows for 150 entities: rows leave memory and are read back from disk all
    # the time, kills included; each entity's version at the end says no update was lost.
    env = unique_env(STREAM_BATCH_SIZE=10, REDIS_URL="", SNAPSHOT_EVERY_SECONDS=1000, TABLE_CACHE_ROWS=20)
    worker = EngineProcess(env, tmp_path, ("worker", "--embedded-learner")).launch()
    processes.append(worker)
    publishing = asyncio.create_task(produce_slowly(worker))
    rng = random.Random(5)
    examples = worker.settings.examples_topic
    for kill in range(4):
        at_least = 150 + kill * 300

        async def learned(at_least=at_least) -> bool:
            return await end_offset(KAFKA_BOOTSTRAP, examples) >= at_least

        await eventually(learned, timeout=120, what=f"{at_least} examples", log=worker.log_tail)
        await asyncio.sleep(rng.uniform(0.0, 0.3))
        worker.kill()
        rows, offset = disk_rows(worker)
        assert offset is not None and rows, "nothing written to disk before the kill"
        assert rows == await changelog_upto(worker, offset)
        worker.launch()
        last_launch = time.time()
    await publishing

    async def all_learned() -> bool:
        return await end_offset(KAFKA_BOOTSTRAP, examples) >= EVENTS

    await eventually(all_learned, timeout=120, what="every event learned", log=worker.log_tail)

    async def last_worker_up() -> bool:  # the backlog may be done before the last restart is
        reports = await consume_all(KAFKA_BOOTSTRAP, worker.settings.workers_topic, 10**6, timeout=1.0)
        states = [orjson.loads(r.value) for r in reports]
        return any(r["state"] == "running" and r["at"] > last_launch for r in states)

    await eventually(last_worker_up, timeout=60, what="the last worker up", log=worker.log_tail)
    await asyncio.sleep(1.0)
    assert await end_offset(KAFKA_BOOTSTRAP, examples) == EVENTS  # each event learned once
    assert worker.stop() == 0
    rows, offset = disk_rows(worker)
    assert offset == await end_offset(KAFKA_BOOTSTRAP, worker.settings.entity_changelog_topic) - 1
    assert rows == await changelog_upto(worker, offset)
    applied = Counter(f"entity-{i % ENTITIES}" for i in range(EVENTS))
    assert {key: row["version"] for key, row in rows.items()} == dict(applied)
    # A restart reads back the changelog from the offset on disk, not from its start.
    log = worker.log_path.read_text()
    assert "rebuilding it from the changelog" not in log


async def produce_slowly(worker: EngineProcess) -> None:
    for start in range(0, EVENTS, 100):
        await produce(KAFKA_BOOTSTRAP, worker.settings.events_topic, messages(start, 100))
        await asyncio.sleep(0.3)


async def test_readyz_tells_each_worker_s_state(engine_factory):
    engine = engine_factory(unique_env(REDIS_URL="")).start()
    await produce(KAFKA_BOOTSTRAP, engine.settings.events_topic, messages(0, 50))

    def worker_report() -> dict:
        return engine.get("/readyz").json().get("workers", {}).get("0", {})

    def caught_up_after_its_batch() -> bool:  # the lag is known once a batch is processed
        report = worker_report()
        return report.get("state") == "caught_up" and report.get("lag") is not None

    engine.wait_until(caught_up_after_its_batch, timeout=60, what="worker 0 caught up")
    report = engine.get("/readyz").json()["workers"]["0"]
    assert report["recovery_remaining"] == 0 and report["lag"] == 0
    assert report["reported_seconds_ago"] < 10


async def test_a_store_from_an_earlier_changelog_is_not_used(tmp_path, processes):
    """Kafka's data wiped (or the changelog made again) under a worker's state directory: the
    rows on disk name changelog offsets the changelog does not have, and are not used."""
    worker = EngineProcess(unique_env(REDIS_URL=""), tmp_path, ("worker", "--embedded-learner"))
    processes.append(worker)
    settings = worker.settings
    stale = open_store(settings.table_path, store_identity(settings, FeatureRegistry()), partitions=1)
    stale.write(0, [(orjson.dumps("entity-0"), orjson.dumps({"version": 99, "offset": 500}))], changelog_offset=100)
    close(stale)
    worker.launch()
    await produce(KAFKA_BOOTSTRAP, settings.events_topic, messages(0, 10))

    async def learned() -> bool:
        return await end_offset(KAFKA_BOOTSTRAP, settings.examples_topic) >= 10

    await eventually(learned, timeout=90, what="10 examples", log=worker.log_tail)
    assert worker.stop() == 0
    rows, _ = disk_rows(worker)
    assert rows["entity-0"]["version"] == 1  # built from its own event, not on the stale row
    assert "reach changelog offset 100 but the changelog ends at 0" in worker.log_path.read_text()
