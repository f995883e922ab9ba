"""`python -m engine learn`: the learner of one model, apart from the stream workers (with
several named models, one process per model: LEARN_MODEL names which).

It consumes the examples topic (one partition, so one order) from the offset its latest
snapshot covers, learns each example once, and publishes model versions for the workers
and serving processes. Stream workers run with `engine worker` (no embedded learner).
"""

from __future__ import annotations

import asyncio
import logging
import signal

from aiokafka import AIOKafkaProducer

from engine.dead_letter_sink import DeadLetterSink, refused_letter
from engine.learning import LearningService, learn_records
from engine.process import (
    arm_stop_deadline,
    collect_young_less_often,
    configure_logging,
    freeze_heap,
    time_collections,
)
from engine.settings import Settings
from streams.examples_reader import ExamplesReader
from streams.features import FeatureRegistry
from streams.model_topic import MAX_MODEL_BYTES

log = logging.getLogger(__name__)


async def learn_forever(settings: Settings, features: FeatureRegistry, stopping: asyncio.Event) -> None:
    """`settings`: the learned model's own (Settings.for_model)."""
    from engine.topics import ensure_topics

    await ensure_topics(settings)
    service = LearningService.restore(settings, features)
    producer = AIOKafkaProducer(
        bootstrap_servers=settings.kafka_bootstrap, acks="all", max_request_size=MAX_MODEL_BYTES
    )
    await producer.start()
    try:
        await _learn_until_stopped(settings, service, producer, stopping)
    finally:
        await producer.stop()


async def _learn_until_stopped(
    settings: Settings, service: LearningService, producer: AIOKafkaProducer, stopping: asyncio.Event
) -> None:
    sink = DeadLetterSink(producer, settings)
    named = settings.model.name if settings.model.scoped else None
    await service.start(producer)
    reader = ExamplesReader(
        settings.kafka_bootstrap, settings.examples_topic, service.examples_offset, settings.stream_batch_size
    )
    # What start-up built (modules, the restored model) lives as long as the process: out of
    # the collector's way, as in the workers. Alternated three times with the learner apart
    # (the slower process of the pair): 28.8-29.4 against 30.6-31.9 µs of CPU an event.
    freeze_heap()
    try:
        while not stopping.is_set():
            batch, after = await reader.fetch(timeout=0.2)
            if not batch:
                continue
            async with service.lock:
                outcome, values = learn_records(service.learner, batch)
                if outcome.refused:
                    letters = [refused_letter(r, named) for r in outcome.refused]
                    await asyncio.gather(*await sink.send(letters))
                await service.batch_done(outcome, after, values)
    finally:
        await asyncio.to_thread(reader.close)
        await service.stop()


def run_learner(settings: Settings, features: FeatureRegistry) -> None:
    import uvloop

    configure_logging(settings.log_level)
    collect_young_less_often(settings.stream_batch_size)
    time_collections("learner")
    loop = uvloop.new_event_loop()
    asyncio.set_event_loop(loop)
    stopping = asyncio.Event()

    def stop() -> None:
        stopping.set()
        arm_stop_deadline()

    for sig in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(sig, stop)
    (named,) = settings.learned_models()  # LEARN_MODEL's, or the only one
    log.warning("learning model %s from %s", named.describe(), settings.for_model(named).examples_topic)
    loop.run_until_complete(learn_forever(settings.for_model(named), features, stopping))
