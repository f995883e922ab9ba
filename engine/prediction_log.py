"""Served predictions to the predictions topic, so that their labels teach the model.

A `POST /predict` that carries an `event_id` is logged exactly as a prediction the stream
worker made (keyed by event id, partitioned as labels are, the features as the model saw
them), and the worker's join of predictions and labels does the rest.

Serving never waits for it: `log` puts the record in a bounded buffer and returns; a task
sends what the buffer holds, a batch per partition at a time. When the buffer is full or
Kafka does not acknowledge, the prediction goes unlogged: counted, never an error to the
client. An id is logged once per process (the first answer wins); across serving
processes, the join keeps the first prediction of an id it is given.
"""

from __future__ import annotations

import asyncio
import logging
from collections import OrderedDict, deque
from collections.abc import Callable
from typing import Any, Literal

import orjson
from aiokafka import AIOKafkaProducer

from engine import metrics
from streams.changelog import send_by_event_id

log = logging.getLogger(__name__)

Logged = Literal["queued", "duplicate", "unlogged"]
SEND_TIMEOUT_SECONDS = 10.0
LINGER_SECONDS = 0.02


class ServedPredictionLog:
    def __init__(
        self,
        producer: Callable[[], AIOKafkaProducer | None],
        topic: str,
        partitions: int,
        *,
        buffer: int = 10_000,
        remember: int = 100_000,
    ) -> None:
        self._producer = producer
        self.topic = topic
        self._partitions = partitions
        self._buffer: deque[tuple[str, dict[str, Any], str]] = deque()  # (event id, record, model)
        self._capacity = buffer
        self._remember = remember
        self._logged: OrderedDict[tuple[str, str], None] = OrderedDict()  # (model, id) queued or sent, oldest first
        self._wake = asyncio.Event()
        self._task: asyncio.Task | None = None

    def log(self, event_id: str, record: dict[str, Any], model: str = "") -> Logged:
        """Queues the record of a served prediction of `model`; what became of it, for the
        response (a duplicate: this model's prediction of this event was logged before)."""
        key = (model, event_id)
        if key in self._logged:
            return "duplicate"
        if self._producer() is None:  # Kafka not reached yet: say so now, not after a failed send
            metrics.SERVED_UNLOGGED.labels("kafka").inc()
            return "unlogged"
        if len(self._buffer) >= self._capacity:
            metrics.SERVED_UNLOGGED.labels("buffer_full").inc()
            return "unlogged"
        self._logged[key] = None
        if len(self._logged) > self._remember:
            self._logged.popitem(last=False)
        self._buffer.append((event_id, record, model))
        self._wake.set()
        return "queued"

    def start(self) -> None:
        self._task = asyncio.create_task(self._send_forever())

    async def stop(self, timeout: float = 2.0) -> None:
        """Sends what is buffered (within `timeout`), then stops."""
        if self._task is None:
            return
        if self._buffer:
            try:
                await asyncio.wait_for(self._send_buffered(), timeout)
            except Exception:  # noqa: BLE001 - counted in _send_buffered; stopping goes on
                pass
        self._task.cancel()

    async def _send_forever(self) -> None:
        while True:
            await self._wake.wait()
            # A produce request per served prediction took a tenth of a millisecond of this
            # loop each: lingering gathers the predictions of a few milliseconds into one.
            await asyncio.sleep(LINGER_SECONDS)
            self._wake.clear()
            try:
                await self._send_buffered()
            except asyncio.CancelledError:
                raise
            except Exception as exc:  # noqa: BLE001 - counted as unlogged; serving goes on
                log.warning("served predictions not logged: %r", exc)

    async def _send_buffered(self) -> None:
        batch = list(self._buffer)
        self._buffer.clear()
        if not batch:
            return
        try:
            await asyncio.wait_for(self._send(batch), SEND_TIMEOUT_SECONDS)
        except BaseException:
            metrics.SERVED_UNLOGGED.labels("kafka").inc(len(batch))
            for event_id, _, model in batch:  # a retry of the same id may be logged after all
                self._logged.pop((model, event_id), None)
            raise
        metrics.SERVED_LOGGED.inc(len(batch))

    async def _send(self, batch: list[tuple[str, dict[str, Any], str]]) -> None:
        producer = self._producer()
        if producer is None:
            raise ConnectionError("no Kafka producer in this process")
        encoded = ((event_id, orjson.dumps(record, option=orjson.OPT_SERIALIZE_NUMPY)) for event_id, record, _ in batch)
        await asyncio.gather(*await send_by_event_id(producer, self.topic, self._partitions, encoded))
