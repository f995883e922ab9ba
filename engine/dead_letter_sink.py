"""The one way dead letters leave a process: to the source topic's dead-letter topic, with
the reason, the source coordinates and the original headers (streams/dead_letters.py)."""

from __future__ import annotations

import asyncio

from aiokafka import AIOKafkaProducer

from engine import metrics
from engine.settings import Settings
from models.guard import Refusal
from streams.batch_consumer import Record
from streams.dead_letters import DeadLetterReason, dead_letter_headers
from streams.events import DeadLetter


class DeadLetterSink:
    def __init__(self, producer: AIOKafkaProducer, settings: Settings) -> None:
        self.producer = producer
        self.settings = settings

    def topic_for(self, source_topic: str) -> str:
        if source_topic == self.settings.events_topic:
            return self.settings.dlq_events_topic
        return self.settings.dlq_labels_topic  # labels, and predictions that completed an example

    async def send(self, letters: list[DeadLetter]) -> list[asyncio.Future]:
        """Sends them; returns their delivery futures (the caller decides when to wait)."""
        futures = []
        for letter in letters:
            record = letter.record
            topic = self.topic_for(record.topic)
            headers = dead_letter_headers(
                letter.reason,
                letter.detail,
                topic=record.topic,
                partition=record.partition,
                offset=record.offset,
                original_headers=record.headers,
            )
            value = letter.value if letter.value is not None else record.value
            futures.append(await self.producer.send(topic, value, key=record.key, headers=headers))
            metrics.DLQ_MESSAGES.labels(topic, str(letter.reason)).inc()
        return futures


def refused_letter(refusal: Refusal, model: str | None = None) -> DeadLetter:
    """The dead letter of an example the learner refused carries that example: the features
    as the model saw them (the entity's aggregates included), the label and the prediction.
    `model`: the named model whose learner refused it, named in the detail (a learner apart
    refuses for its model alone; the others may have learned the event)."""
    example = refusal.example
    topic, partition, offset = example.source
    value = example.encode()
    record = Record(topic, partition, offset, example.event_id.encode(), value, (), None)
    detail = refusal.detail if model is None else f"model {model}: {refusal.detail}"
    return DeadLetter(record, DeadLetterReason(refusal.reason), detail, value)
