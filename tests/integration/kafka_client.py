"""Plain aiokafka helpers, the way any user's client talks to the engine's topics."""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Callable
from typing import Any

from aiokafka import AIOKafkaConsumer, AIOKafkaProducer


async def produce(bootstrap: str, topic: str, messages: list[tuple[bytes | None, bytes]]) -> None:
    producer = AIOKafkaProducer(bootstrap_servers=bootstrap, acks="all", linger_ms=5)
    await producer.start()
    try:
        for key, value in messages:
            await producer.send(topic, value, key=key)
        await producer.flush()
    finally:
        await producer.stop()


async def consume_all(bootstrap: str, topic: str, expected: int, timeout: float = 30.0) -> list[Any]:
    """Reads a topic from the start until `expected` messages came (or the timeout)."""
    consumer = AIOKafkaConsumer(
        topic, bootstrap_servers=bootstrap, auto_offset_reset="earliest", enable_auto_commit=False
    )
    await consumer.start()
    records: list[Any] = []
    try:
        deadline = asyncio.get_running_loop().time() + timeout
        while len(records) < expected and asyncio.get_running_loop().time() < deadline:
            batch = await consumer.getmany(timeout_ms=500)
            for messages in batch.values():
                records.extend(messages)
    finally:
        await consumer.stop()
    return records


async def end_offset(bootstrap: str, topic: str, partition: int = 0) -> int:
    """How many records a partition holds (its end offset); 0 while the topic does not exist."""
    from aiokafka import TopicPartition

    consumer = AIOKafkaConsumer(bootstrap_servers=bootstrap, enable_auto_commit=False, group_id=None)
    await consumer.start()
    try:
        tp = TopicPartition(topic, partition)
        if consumer.partitions_for_topic(topic) is None:
            await consumer._client.force_metadata_update()
        if not consumer.partitions_for_topic(topic):
            return 0
        return (await consumer.end_offsets([tp]))[tp]
    finally:
        await consumer.stop()


async def committed_offset(bootstrap: str, group_id: str, topic: str, partition: int = 0) -> int:
    """The offset the consumer group has committed on a partition: everything before it is
    processed for good (-1 while it has committed nothing there)."""
    from aiokafka import TopicPartition
    from aiokafka.admin import AIOKafkaAdminClient

    admin = AIOKafkaAdminClient(bootstrap_servers=bootstrap)
    await admin.start()
    try:
        tp = TopicPartition(topic, partition)
        offsets = await admin.list_consumer_group_offsets(group_id, partitions=[tp])
        committed = offsets.get(tp)
        return -1 if committed is None else committed.offset
    finally:
        await admin.close()


async def eventually(
    condition: Callable[[], Awaitable[bool]],
    timeout: float = 60.0,
    what: str = "condition",
    log: Callable[[], str] = lambda: "",
) -> None:
    """Awaits `condition()` until it holds, or fails after `timeout` seconds naming `what`.
    Like EngineProcess.wait_until, but it lets the event loop run (a producer task, say)
    meanwhile; an exception counts as "not yet" and is reported if the time runs out."""
    deadline = asyncio.get_running_loop().time() + timeout
    last_error: Exception | None = None
    while True:
        try:
            if await condition():
                return
        except Exception as exc:  # noqa: BLE001 - not answering yet, or not holding that yet
            last_error = exc
        if asyncio.get_running_loop().time() > deadline:
            raise AssertionError(
                f"timed out after {timeout} s waiting for {what} (last error: {last_error!r}):\n{log()}"
            )
        await asyncio.sleep(0.1)


async def wait_until_consumed(engine: Any, timeout: float = 60.0) -> None:
    """Until the engine's consumer group has committed every partition of the events topic
    to its end. An event's offset is committed only after it is processed and its outputs
    (its example, if it was learned) are written: from then on nothing is left to learn,
    so counts read afterwards are final."""
    settings = engine.settings
    bootstrap, topic = settings.kafka_bootstrap, settings.events_topic

    async def consumed() -> bool:
        for partition in range(settings.topic_partitions):
            end = await end_offset(bootstrap, topic, partition)
            if await committed_offset(bootstrap, settings.app_id, topic, partition) != end:
                return False
        return True

    await eventually(consumed, timeout, what="the events topic consumed and committed to its end", log=engine.log_tail)


async def kill_while_publishing(
    engine_factory: Callable[..., Any],
    env: dict[str, str],
    rows: list[tuple[dict[str, Any], Any]],
    kill_points: list[int],
    learned: Callable[[Any], int],
) -> Any:
    """Starts an engine and publishes `rows` (labels inline) 50 at a time while it learns;
    each time `learned(engine)` reaches the next of `kill_points`, kill -9 and a fresh start.
    Returns the engine running once every row is published."""
    from tests.conftest import KAFKA_BOOTSTRAP
    from tests.helpers import dataset_messages

    engine = engine_factory(env).start()
    topic = engine.settings.events_topic

    async def publish_slowly() -> None:
        for start in range(0, len(rows), 50):
            await produce(KAFKA_BOOTSTRAP, topic, dataset_messages(rows[start : start + 50]))
            await asyncio.sleep(0.15)

    publishing = asyncio.create_task(publish_slowly())
    for point in sorted(kill_points):

        async def reached(engine: Any = engine, point: int = point) -> bool:
            return learned(engine) >= point

        await eventually(reached, timeout=120, what=f"{point} labels learned", log=engine.log_tail)
        engine.kill()
        engine = engine_factory(env).start()
    await publishing
    return engine
