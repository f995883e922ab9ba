"""The private parts of faust-streaming and aiokafka that streams/batch_consumer.py and
streams/changelog.py rely on are still the ones they were written against.

A new release can change them without notice: then this fails, and the batch consumer
must be checked against the new code (and the hashes below updated) before the pin moves.
"""

from __future__ import annotations

import asyncio
import hashlib
import inspect
from types import SimpleNamespace

import aiokafka
import faust
from aiokafka.consumer import fetcher as aiokafka_fetcher
from aiokafka.producer.message_accumulator import BatchBuilder
from faust.stores import memory
from faust.transport import consumer as faust_consumer
from faust.transport.drivers import aiokafka as faust_aiokafka
from faust.types import TP

from streams.batch_consumer import FAUST_VERSION, BatchConsumer, BatchConsumerThread

# The code we override, call or mirror, by a hash of its source at the pinned versions.
RELIED_ON = {
    "Consumer._drain_messages": (faust_consumer.Consumer._drain_messages, "44a2500309e83c63"),
    "Consumer._wait_next_records": (faust_consumer.Consumer._wait_next_records, "6218e1969a636b3f"),
    "Consumer.perform_seek": (faust_consumer.Consumer.perform_seek, "0e8c130ff4b0afd8"),
    "Consumer._add_gap": (faust_consumer.Consumer._add_gap, "4df2573ded7c1c2c"),
    "Consumer.ack": (faust_consumer.Consumer.ack, "5fcf41cf45153475"),
    "Consumer._new_offset": (faust_consumer.Consumer._new_offset, "1d2c7ea89a7ad4f1"),
    "Consumer.on_partitions_revoked": (faust_consumer.Consumer.on_partitions_revoked, "d04b7ae72c6fc206"),
    "Consumer.__init__": (faust_consumer.Consumer.__init__, "302410d59e6972d1"),
    "AIOKafkaConsumerThread._create_worker_consumer": (
        faust_aiokafka.AIOKafkaConsumerThread._create_worker_consumer,
        "c2701bfc3e6f6cad",
    ),
    "Consumer.pause_partitions": (faust_consumer.Consumer.pause_partitions, "27a1c94bdacd54de"),
    "Consumer.resume_partitions": (faust_consumer.Consumer.resume_partitions, "afe6b7c02a41d63c"),
    # Holds back a broker's fetches while a partition's fetched records are not taken.
    "Fetcher._get_actions_per_node": (aiokafka_fetcher.Fetcher._get_actions_per_node, "1dab2cf937d165d0"),
    # streams/changelog.py's send_records fills a batch's record builder as this does.
    "BatchBuilder.append": (BatchBuilder.append, "657d76f55157d9ca"),
    "BatchBuilder.record_count": (BatchBuilder.record_count, "3a3d4948a3b70702"),
    "memory.Store._create_batch_iterator": (memory.Store._create_batch_iterator, "b082c8bcc0403823"),
    "memory.Store.on_recovery_completed": (memory.Store.on_recovery_completed, "a00bef343e139602"),
}


def test_the_pinned_versions_are_installed():
    assert faust.__version__ == FAUST_VERSION == "0.15.3"
    assert aiokafka.__version__ == "0.14.0"


def test_the_private_code_relied_on_is_unchanged():
    changed = [
        name
        for name, (function, digest) in RELIED_ON.items()
        if hashlib.sha256(inspect.getsource(function).encode()).hexdigest()[:16] != digest
    ]
    assert changed == [], f"re-check streams/batch_consumer.py against the new {changed}"


def test_the_private_state_relied_on_exists():
    consumer_state = inspect.getsource(faust_consumer.Consumer.__init__)
    for name in ("_acked", "_acked_index", "_read_offset", "_committed_offset", "_buffered_partitions", "suspend_flow"):
        assert f"self.{name}" in consumer_state, name
    assert "_n_acked" in vars(faust_consumer.Consumer)
    assert "self._key_partition" in inspect.getsource(memory.Store.__post_init__)
    # Our consumer thread sets the fetch wait the aiokafka consumer reads when it starts.
    assert "fetch_max_wait_ms=self._fetch_max_wait_ms" in inspect.getsource(aiokafka.AIOKafkaConsumer.start)
    # Changelog partitions are paused in aiokafka on the consumer thread's own loop.
    thread_source = inspect.getsource(faust_aiokafka.AIOKafkaConsumerThread)
    assert "self._consumer = self._create_consumer(loop=self.thread_loop)" in thread_source
    assert issubclass(BatchConsumer, faust_aiokafka.Consumer)
    assert issubclass(BatchConsumerThread, faust_aiokafka.AIOKafkaConsumerThread)


async def test_a_changelog_faust_pauses_is_not_fetched_by_aiokafka_either():
    """A table changelog paused after recovery is paused in aiokafka too (else its records
    sit in the fetcher and hold back the events' fetches); resumed for a recovery, it is
    fetched again. Stream partitions stay Faust's own business."""
    changelog, events = TP("app-entities-changelog", 0), TP("events", 0)
    kafka = aiokafka.AIOKafkaConsumer(bootstrap_servers="127.0.0.1:9")
    kafka.assign([aiokafka.TopicPartition(*changelog), aiokafka.TopicPartition(*events)])
    consumer = BatchConsumer.__new__(BatchConsumer)
    consumer._active_partitions = {changelog, events}
    consumer._paused_partitions = set()
    consumer._thread = SimpleNamespace(_consumer=kafka, thread_loop=asyncio.get_running_loop())
    consumer.app = SimpleNamespace(tables=SimpleNamespace(changelog_topics={changelog.topic}))

    consumer.pause_partitions([changelog, events])
    await asyncio.sleep(0)
    assert kafka.paused() == {aiokafka.TopicPartition(*changelog)}
    assert consumer._paused_partitions == {changelog, events}

    consumer.resume_partitions([changelog])
    await asyncio.sleep(0)
    assert kafka.paused() == set()
    assert consumer._active_partitions == {changelog}
    await kafka.stop()
