"""Creates the engine's topics before the worker subscribes to them."""

from __future__ import annotations

import asyncio
import logging

from aiokafka.admin import AIOKafkaAdminClient, NewTopic
from aiokafka.errors import KafkaConnectionError, TopicAlreadyExistsError

from engine import worker_status
from engine.settings import Settings
from streams.model_topic import MAX_MODEL_BYTES

log = logging.getLogger(__name__)


MODEL_TOPIC_CONFIG = {
    "cleanup.policy": "compact",
    "max.message.bytes": str(MAX_MODEL_BYTES),
    # Compaction keeps the latest of each key; the older ones of a freshly written
    # segment go soon, so a reader starting up reads a handful of records.
    "segment.ms": "600000",
    "min.cleanable.dirty.ratio": "0.1",
}


async def ensure_topics(settings: Settings, timeout_seconds: float = 60.0) -> None:
    """Creates the topics the engine reads and writes, when missing. Each model's examples
    topic has one partition: it is its learner's single order."""
    wanted = {
        settings.events_topic: (settings.topic_partitions, {}),
        settings.labels_topic: (settings.topic_partitions, {}),
        settings.predictions_topic: (settings.topic_partitions, {}),
        **{settings.for_model(named).examples_topic: (1, {}) for named in settings.models},
        settings.models_topic: (1, MODEL_TOPIC_CONFIG),
        settings.control_topic: (1, {}),
        settings.workers_topic: (1, worker_status.TOPIC_CONFIG),
        settings.dlq_events_topic: (1, {}),
        settings.dlq_labels_topic: (1, {}),
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
        missing = [
            NewTopic(name, partitions, 1, topic_configs=config)
            for name, (partitions, config) in wanted.items()
            if name not in existing
        ]
        if missing:
            try:
                await admin.create_topics(missing)
            except TopicAlreadyExistsError:
                pass  # another engine process created them first
            log.info("created topics %s", [t.name for t in missing])
    finally:
        await admin.close()
