"""How each stream worker is doing, told on a small compacted topic (`<APP_ID>-workers`,
keyed by worker id) and read by serving processes for /readyz.

A worker reports every `STATUS_SECONDS`, from its first second (recovery included):
whether Faust is still reading its tables back from their changelogs and how many records
remain, and how far its consumer trails the topics it reads. Serving calls a worker:

- `recovering`: it is reading its tables back; no event is processed meanwhile;
- `lagging`: it processes events, but trails by more than `WORKER_LAGGING_EVENTS`;
- `caught_up`: it processes events as they come;
- `stopped`: it said so when it stopped;
- `silent`: no report for `SILENT_AFTER_SECONDS` (killed, or cut off from Kafka).
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import orjson
from aiokafka import AIOKafkaConsumer, AIOKafkaProducer, TopicPartition

from engine import metrics

log = logging.getLogger(__name__)

STATUS_SECONDS = 2.0
SILENT_AFTER_SECONDS = 10.0
PROGRESS_LOG_SECONDS = 5.0
TOPIC_CONFIG = {"cleanup.policy": "compact", "segment.ms": "600000", "min.cleanable.dirty.ratio": "0.1"}


@dataclass(frozen=True)
class Progress:
    """What a worker knows of itself at one moment."""

    recovering: bool
    recovery_remaining: int  # changelog records still to read back (its active partitions)
    lag: int | None  # records behind the end of the topics it reads; None before its first batch


class StatusReporter:
    """In a stream worker: the recovery gauge, a progress line while recovering, the reports."""

    def __init__(self, worker_id: str, topic: str, progress: Callable[[], Progress]) -> None:
        self.worker_id = worker_id
        self.topic = topic
        self.progress = progress
        self._recovering_since: float | None = None
        self._last_log = 0.0
        self._task: asyncio.Task | None = None

    def start(self, producer: AIOKafkaProducer) -> None:
        self._task = asyncio.ensure_future(self._report_forever(producer))

    async def stop(self, producer: AIOKafkaProducer) -> None:
        if self._task is not None:
            self._task.cancel()
        try:
            await asyncio.wait_for(self._send(producer, "stopped", Progress(False, 0, None)), 5.0)
        except Exception as exc:  # noqa: BLE001 - serving will call it silent instead
            log.warning("could not report this worker stopped: %r", exc)

    async def _report_forever(self, producer: AIOKafkaProducer) -> None:
        while True:
            progress = self.progress()
            self._observe(progress)
            try:
                await self._send(producer, "recovering" if progress.recovering else "running", progress)
            except Exception as exc:  # noqa: BLE001 - a report is told again in a moment
                log.debug("worker status not sent: %r", exc)
            await asyncio.sleep(STATUS_SECONDS)

    def _observe(self, progress: Progress) -> None:
        metrics.TABLE_RECOVERY_REMAINING.set(progress.recovery_remaining if progress.recovering else 0)
        now = time.monotonic()
        if not progress.recovering:
            if self._recovering_since is not None:
                log.warning("tables recovered in %.1f s; processing events", now - self._recovering_since)
            self._recovering_since = None
            return
        if self._recovering_since is None:
            self._recovering_since = now
        if now - self._last_log >= PROGRESS_LOG_SECONDS:
            self._last_log = now
            if not progress.recovery_remaining:  # before partitions and changelog ends are known
                log.warning("starting: waiting for partitions and the changelogs' end offsets")
                return
            log.warning(
                "recovering tables from their changelogs: %d records to read, %.0f s so far;"
                " no events processed meanwhile",
                progress.recovery_remaining,
                now - self._recovering_since,
            )

    async def _send(self, producer: AIOKafkaProducer, state: str, progress: Progress) -> None:
        report = {
            "worker": self.worker_id,
            "state": state,
            "recovery_remaining": progress.recovery_remaining,
            "lag": progress.lag,
            "at": time.time(),
        }
        await producer.send_and_wait(self.topic, orjson.dumps(report), key=self.worker_id.encode())


class WorkerStatusFollower:
    """In a serving process: the latest report of every worker."""

    def __init__(self, bootstrap: str, topic: str, lagging_events: int) -> None:
        self.bootstrap = bootstrap
        self.topic = topic
        self.lagging_events = lagging_events
        self.reports: dict[str, dict[str, Any]] = {}
        self._task: asyncio.Task | None = None

    def start(self) -> None:
        self._task = asyncio.ensure_future(self._follow())

    async def stop(self) -> None:
        if self._task is not None:
            self._task.cancel()

    async def _follow(self) -> None:
        while True:
            consumer = AIOKafkaConsumer(bootstrap_servers=self.bootstrap, enable_auto_commit=False, group_id=None)
            try:
                await consumer.start()
                tp = TopicPartition(self.topic, 0)
                consumer.assign([tp])
                consumer.seek(tp, (await consumer.beginning_offsets([tp]))[tp])
                while True:
                    for records in (await consumer.getmany(timeout_ms=1000)).values():
                        for record in records:
                            self._take(record.value)
            except asyncio.CancelledError:
                raise
            except Exception as exc:  # noqa: BLE001 - the broker may be down: try again
                log.debug("worker status not readable: %r", exc)
                await asyncio.sleep(STATUS_SECONDS)
            finally:
                await consumer.stop()

    def _take(self, value: bytes | None) -> None:
        try:
            report = orjson.loads(value or b"null")
            self.reports[str(report["worker"])] = report
        except (orjson.JSONDecodeError, KeyError, TypeError):
            log.warning("ignoring an unreadable worker status: %r", (value or b"")[:200])

    def describe(self, now: float | None = None) -> dict[str, dict[str, Any]]:
        now = time.time() if now is None else now
        return {worker: self._describe(report, now) for worker, report in sorted(self.reports.items())}

    def _describe(self, report: dict[str, Any], now: float) -> dict[str, Any]:
        age = max(0.0, now - float(report.get("at", 0)))
        lag = report.get("lag")
        if report.get("state") == "stopped":
            state = "stopped"
        elif age > SILENT_AFTER_SECONDS:
            state = "silent"
        elif report.get("state") == "recovering":
            state = "recovering"
        elif lag is not None and lag > self.lagging_events:
            state = "lagging"
        else:
            state = "caught_up"
        return {
            "state": state,
            "recovery_remaining": report.get("recovery_remaining", 0),
            "lag": lag,
            "reported_seconds_ago": round(age, 1),
        }
