"""The examples topic, read a fetch at a time by librdkafka: what a learner learns from.

A learner reads one partition in order, and with the learner apart it is the slower of the
two processes. Through aiokafka each record cost its thread 2.0-3.0 µs (fetch parsing and a
Python record object built and freed per record, all under the interpreter lock); librdkafka
(confluent-kafka) fetches and parses on threads of its own and hands back C message objects:
0.65-0.83 µs a record on the learner's thread (100,000 examples of 450 bytes, one broker).
Nothing here joins a group or commits: the learner's snapshots hold its offset.
"""

from __future__ import annotations

import asyncio
import logging
import time

import confluent_kafka

log = logging.getLogger(__name__)

BOUNDS_RETRY_SECONDS = 0.2


class ExamplesReader:
    def __init__(self, bootstrap: str, topic: str, offset: int, max_records: int) -> None:
        self.topic = topic
        self.max_records = max_records
        self._consumer = confluent_kafka.Consumer(
            {
                "bootstrap.servers": bootstrap,
                # librdkafka requires one; the partition is assigned, so no group is ever joined.
                "group.id": f"{topic}.learner",
                "enable.auto.commit": False,
                "enable.auto.offset.store": False,
                # An offset retention has removed (a snapshot older than the topic's oldest
                # example): start from what is left rather than from what comes next.
                "auto.offset.reset": "earliest",
                "logger": log,
            }
        )
        self._consumer.assign([confluent_kafka.TopicPartition(topic, 0, offset)])

    def bounds(self, timeout: float = 60.0) -> tuple[int, int]:
        """The partition's first offset still held, and the offset after its last record.

        Asked again until `timeout` while the broker cannot answer: librdkafka does not retry
        this request, and a topic just created has no leader for a moment
        (NOT_LEADER_FOR_PARTITION, which librdkafka does not mark retriable here)."""
        partition = confluent_kafka.TopicPartition(self.topic, 0)
        deadline = time.monotonic() + timeout
        while True:
            try:
                low, high = self._consumer.get_watermark_offsets(partition, max(deadline - time.monotonic(), 0.1))
                return low, high
            except confluent_kafka.KafkaException as exc:
                if time.monotonic() >= deadline:
                    raise
                log.info("offsets of %s not known yet: %s", self.topic, exc)
                time.sleep(BOUNDS_RETRY_SECONDS)

    async def fetch(self, timeout: float, before: int | None = None) -> tuple[list[bytes], int]:
        """The values of the next records in order (up to `max_records`, and only those at
        offsets below `before`; waits up to `timeout` seconds for the first), and the offset
        after the last of them (-1 when there are none). librdkafka retries what it can; an
        error it reports is logged, a fatal one raised."""
        messages = await asyncio.to_thread(self._take, timeout)
        values: list[bytes] = []
        end = -1
        for message in messages:
            error = message.error()
            if error is not None:
                if error.fatal():
                    raise confluent_kafka.KafkaException(error)
                log.warning("reading %s: %s", self.topic, error)
                continue
            offset = message.offset()
            if before is not None and offset >= before:
                break
            values.append(message.value())
            end = offset + 1
        return values, end

    def _take(self, timeout: float) -> list[confluent_kafka.Message]:
        """librdkafka's consume returns when it has all the records asked for or the timeout
        has passed: asked for a whole batch, a learner keeping up with the stream (a few
        records a fetch) would wait out the timeout at every fetch. So: wait for the first
        record only, then take what has arrived, without waiting."""
        first = self._consumer.consume(1, timeout)
        if not first or self.max_records == 1:
            return first
        return first + self._consumer.consume(self.max_records - 1, 0)

    def close(self) -> None:
        self._consumer.close()
