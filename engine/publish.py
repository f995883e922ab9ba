"""Publishes one of River's bundled datasets to the events (and labels) topics.

This is what any producer does: JSON events keyed by entity id. The demo and the tests
use it; users can read it as an example client.
"""

from __future__ import annotations

import asyncio
import datetime as dt
import inspect
import time
from collections.abc import Iterator
from typing import Any

import orjson
from aiokafka import AIOKafkaProducer
from river import datasets

from engine.settings import Settings


def dataset_names() -> list[str]:
    return sorted(
        name
        for name, cls in vars(datasets).items()
        if inspect.isclass(cls) and issubclass(cls, datasets.base.FileDataset)
    )


def load_dataset(name: str) -> Any:
    if name not in dataset_names():
        raise ValueError(f"unknown bundled dataset {name!r}; choose one of {dataset_names()}")
    return getattr(datasets, name)()


def _json_value(value: Any) -> Any:
    if isinstance(value, dt.datetime):
        return value.timestamp()
    return value


def dataset_events(
    name: str, limit: int | None = None, entities: int = 20, start_ts: float | None = None, run: str = ""
) -> Iterator[tuple[dict[str, Any], Any]]:
    """Yields (event without label, label) in the dataset's order. `run` makes the event ids
    of one publication unique, so publishing the dataset again is not a duplicate."""
    start_ts = time.time() if start_ts is None else start_ts
    for i, (x, y) in enumerate(load_dataset(name)):
        if limit is not None and i >= limit:
            return
        event = {
            "event_id": f"{name}-{run}{i}" if run else f"{name}-{i}",
            "entity_id": f"{name}-entity-{i % entities}",
            "ts": start_ts + i * 0.001,
            "features": {k: _json_value(v) for k, v in x.items()},
        }
        yield event, y


async def publish_dataset(
    settings: Settings,
    name: str,
    labels: str = "inline",
    limit: int | None = None,
    rate: float | None = None,
    run: str = "",
) -> int:
    """labels: 'inline' (in the event), 'topic' (on the labels topic after each event), 'none'."""
    producer = AIOKafkaProducer(bootstrap_servers=settings.kafka_bootstrap, linger_ms=5, acks="all")
    await producer.start()
    sent = 0
    started = time.perf_counter()
    try:
        for event, y in dataset_events(name, limit, run=run):
            if labels == "inline":
                event["label"] = y
            await producer.send(settings.events_topic, orjson.dumps(event), key=event["entity_id"].encode())
            if labels == "topic":
                label = {"event_id": event["event_id"], "label": y}
                await producer.send(settings.labels_topic, orjson.dumps(label), key=event["event_id"].encode())
            sent += 1
            if rate:
                delay = started + sent / rate - time.perf_counter()
                if delay > 0:
                    await asyncio.sleep(delay)
        await producer.flush()
    finally:
        await producer.stop()
    return sent
