"""Creates the engine's topics before the worker subscribes to them."""

from __future__ import annotations

import asyncio
import logging

from aiokafka.admin import AIOKafkaAdminClient, NewTopic
from aiokafka.errors import KafkaConnectionError, TopicAlreadyExistsError

from engine.settings import Settings

log = logging.getLogger(__name__)


async def ensure_topics(settings: Settings, timeout_seconds: float = 60.0) -> None:
    wanted = {
        settings.events_topic: settings.topic_partitions,
        settings.labels_topic: settings.topic_partitions,
        settings.dlq_events_topic: 1,
        settings.dlq_labels_topic: 1,
    }
    deadline = asyncio.get_running_loop().time() + timeout_seconds
    while True:
        admin = AIOKafkaAdminClient(bootstrap_servers=settings.kafka_bootstrap, client_id=f"{settings.app_id}-admin")
        try:
            await admin.start()
            break
        except KafkaConnectionError:
            await admin.close()
            if asyncio.get_running_loop().time() > deadline:
                raise
            log.warning("Kafka at %s not reachable yet; retrying", settings.kafka_bootstrap)
            await asyncio.sleep(1.0)
    try:
        existing = set(await admin.list_topics())
        missing = [NewTopic(name, partitions, 1) for name, partitions in wanted.items() if name not in existing]
        if missing:
            try:
                await admin.create_topics(missing)
            except TopicAlreadyExistsError:
                pass  # another engine process created them first
            log.info("created topics %s", [t.name for t in missing])
    finally:
        await admin.close()
