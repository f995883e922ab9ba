"""A forest, whose snapshots and publications are pickled in a forked child while the stream
goes on: still exact, and exact after kill -9."""

from __future__ import annotations

import asyncio

import pytest

from engine.harness import KAFKA_BOOTSTRAP, unique_env
from engine.publish import dataset_events
from tests.helpers import dataset_messages, progressive_metrics
from tests.integration.kafka_client import end_offset, produce, wait_until_consumed

pytestmark = pytest.mark.integration


async def test_a_forest_killed_mid_stream_resumes_exactly(engine_factory):
    env = unique_env(
        MODEL="arf",
        SNAPSHOT_EVERY_LABELS=250,
        SNAPSHOT_EVERY_SECONDS=1000,
        REDIS_URL="",
        CACHE_L1_ENTRIES=0,
        PYTHONHASHSEED=0,
    )
    rows = list(dataset_events("Phishing", entities=25))
    messages = dataset_messages(rows)
    engine = engine_factory(env).start()

    def snapshots() -> list:
        return sorted(engine.settings.snapshot_path.glob("snapshot-*.bin"))

    # A snapshot is written after the batch that makes it due, by a child, while the stream
    # goes on: waited for here, else a first batch of 600 or more events (one fetch) could
    # be learned and the engine killed before the child is done.
    await produce(KAFKA_BOOTSTRAP, engine.settings.events_topic, messages[:700])
    engine.wait_until(
        lambda: engine.samples_learned() >= 600 and bool(snapshots()),
        timeout=120,
        what="600 learned and a snapshot on disk",
    )
    await produce(KAFKA_BOOTSTRAP, engine.settings.events_topic, messages[700:])
    # Mid-stream: the worker fetches the rest within milliseconds, and a forest takes
    # seconds to learn 550 events.
    await asyncio.sleep(0.5)
    engine.kill()
    assert snapshots(), "the forest's snapshots (written by a child process) are on disk"
    engine = engine_factory(env).start()
    engine.wait_until(lambda: engine.samples_learned() == len(rows), timeout=180, what="every label learned")
    await wait_until_consumed(engine)  # nothing left to learn: an example logged twice would show now
    assert await end_offset(KAFKA_BOOTSTRAP, engine.settings.examples_topic) == len(rows)

    reference = progressive_metrics("arf", [(e["features"], y) for e, y in rows])
    engine.wait_until(
        lambda: engine.get("/models").json()["serving"]["metrics"] == reference,
        timeout=10,
        what="River's metrics for the forest",
    )
