"""Model versions on a compacted Kafka topic: the learner publishes, every worker and
serving process holds the latest.

Keys: `champion` (the serving model), `challenger` (a rollout's challenger, or a
tombstone), `heartbeat` (the learner is alive and its champion is still the latest: a
small record between publications), `registry` (the registered versions, for /models).
A model record is the snapshot encoding (a checksummed pickle) of the model and its
metadata. Readers must trust the topic's writers as they trust the snapshot folder:
unpickling runs code.
"""

from __future__ import annotations

import asyncio
import logging
import time
from dataclasses import asdict, dataclass, field, fields
from typing import TYPE_CHECKING, Any

import orjson
from aiokafka import AIOKafkaConsumer, AIOKafkaProducer, TopicPartition

from models.pickling import Pickled
from models.snapshots import decode_snapshot, encode_snapshot

if TYPE_CHECKING:  # River is slow to import: keep this module light for the supervisor
    from models.online import OnlineModel

log = logging.getLogger(__name__)

CHAMPION = b"champion"
CHALLENGER = b"challenger"
HEARTBEAT = b"heartbeat"
REGISTRY = b"registry"
MAX_MODEL_BYTES = 100 * 1024 * 1024
# Decoding a large model on the event loop would hold requests up; small ones are quicker inline.
DECODE_IN_THREAD_BYTES = 256 * 1024


@dataclass(frozen=True)
class VersionInfo:
    """What a published version says of itself, beyond the model: a champion its metrics,
    drifts, running rollout and how far behind the learner the predictions it scored were;
    a challenger its rollout's mode and share."""

    name: str = ""
    task: str = ""
    metrics: dict[str, float] = field(default_factory=dict)
    concept_drifts: int = 0
    rollout: dict[str, Any] | None = None
    prediction_model_lag: dict[str, float] | None = None
    mode: str | None = None  # a challenger's: shadow or canary
    share: float = 0.0  # a canary's share of the entities

    @classmethod
    def from_record(cls, record: dict[str, Any]) -> VersionInfo:
        known = {f.name for f in fields(cls)}
        return cls(**{k: v for k, v in record.items() if k in known})


@dataclass(frozen=True)
class ModelVersion:
    model: OnlineModel
    version: int  # the registry's version number
    revision: int  # how many times the learner has published; grows with every publication
    samples_learned: int
    published_at: float
    info: VersionInfo = field(default_factory=VersionInfo)


def encode_version(v: ModelVersion, pickled_model: bytes | None = None) -> bytes:
    """`pickled_model`: the model already pickled (a checkpoint taken now), written as it is."""
    meta = {
        "version": v.version,
        "revision": v.revision,
        "samples_learned": v.samples_learned,
        "published_at": v.published_at,
        "info": asdict(v.info),
    }
    return encode_snapshot(meta, {"model": v.model if pickled_model is None else Pickled(pickled_model)})


def decode_version(data: bytes) -> ModelVersion:
    decoded = decode_snapshot(data)
    meta = decoded["meta"]
    model = decoded["state"]["model"]
    model.grows_names = False  # a copy: it serves, it does not learn
    return ModelVersion(
        model,
        meta["version"],
        meta["revision"],
        meta["samples_learned"],
        meta["published_at"],
        VersionInfo.from_record(meta.get("info", {})),
    )


async def publish(producer: AIOKafkaProducer, topic: str, key: bytes, value: bytes | None) -> None:
    await (await producer.send(topic, value, key=key, partition=0))


@dataclass
class Heartbeat:
    revision: int
    at: float


class ModelReplica:
    """The latest champion and challenger of one named model from the models topic, swapped
    in atomically: the records keyed under `prefix` (empty: the single model of an engine
    without MODELS, whose keys are bare).

    `ready` is set once the topic has been read up to where it ended when reading began."""

    def __init__(self, bootstrap: str, topic: str, prefix: bytes = b"") -> None:
        self.bootstrap = bootstrap
        self.topic = topic
        self.prefix = prefix
        self.champion: ModelVersion | None = None
        self.challenger: ModelVersion | None = None
        self.registry: dict[str, Any] = {}
        self.heartbeat: Heartbeat | None = None
        self.ready = asyncio.Event()
        self.updated = asyncio.Event()  # set (and replaced) on every change, for waiters
        self._task: asyncio.Task | None = None
        self._consumer: AIOKafkaConsumer | None = None

    @property
    def confirmed_at(self) -> float | None:
        """When the learner last said the champion held here is its latest."""
        if self.champion is None:
            return None
        beat = self.heartbeat
        if beat is not None and beat.revision == self.champion.revision:
            return max(beat.at, self.champion.published_at)
        return self.champion.published_at

    async def start(self) -> None:
        self._consumer = AIOKafkaConsumer(
            bootstrap_servers=self.bootstrap,
            enable_auto_commit=False,
            group_id=None,
            max_partition_fetch_bytes=MAX_MODEL_BYTES,
            fetch_max_bytes=MAX_MODEL_BYTES,
        )
        await self._consumer.start()
        tp = TopicPartition(self.topic, 0)
        self._consumer.assign([tp])
        # Explicit offsets: aiokafka 0.14's seek_to_beginning after end_offsets fetched nothing.
        self._consumer.seek(tp, (await self._consumer.beginning_offsets([tp]))[tp])
        end = (await self._consumer.end_offsets([tp]))[tp]
        if end == 0:
            self.ready.set()
        self._task = asyncio.create_task(self._follow(tp, end))

    async def wait_for_champion(self) -> ModelVersion:
        """Waits until the topic holds a champion (the learner publishes one when it starts)."""
        await self.ready.wait()
        while self.champion is None:
            updated = self.updated
            await updated.wait()
        return self.champion

    async def stop(self) -> None:
        if self._task is not None:
            self._task.cancel()
            await asyncio.gather(self._task, return_exceptions=True)
        if self._consumer is not None:
            await self._consumer.stop()

    async def _follow(self, tp: TopicPartition, end: int) -> None:
        assert self._consumer is not None
        while True:
            batch = await self._consumer.getmany(tp, timeout_ms=1000)
            for record in batch.get(tp, []):
                await self._apply(record.key, record.value)
                if record.offset + 1 >= end:
                    self.ready.set()

    async def _apply(self, key: bytes | None, value: bytes | None) -> None:
        if key is None or not key.startswith(self.prefix):
            return  # another model's
        key = key[len(self.prefix) :]
        try:
            if key == HEARTBEAT and value is not None:
                beat = orjson.loads(value)
                self.heartbeat = Heartbeat(beat["revision"], beat["at"])
            elif key == REGISTRY and value is not None:
                self.registry = orjson.loads(value)
            elif key in (CHAMPION, CHALLENGER):
                version = None
                if value is not None:
                    if len(value) > DECODE_IN_THREAD_BYTES:
                        version = await asyncio.to_thread(decode_version, value)
                    else:
                        version = decode_version(value)
                if key == CHAMPION and version is not None:
                    self.champion = version
                elif key == CHALLENGER:
                    self.challenger = version
        except Exception as exc:  # noqa: BLE001 - a bad record must not stop following the topic
            log.warning("ignoring an unreadable record %r on %s: %r", key, self.topic, exc)
            return
        updated, self.updated = self.updated, asyncio.Event()
        updated.set()


def heartbeat_value(revision: int) -> bytes:
    return orjson.dumps({"revision": revision, "at": time.time()})
