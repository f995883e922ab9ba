"""Model publications: what goes on the models topic, awaited or not."""

from __future__ import annotations

import asyncio

import orjson
import pytest
from aiokafka.errors import KafkaTimeoutError
from prometheus_client import REGISTRY

from engine.publisher import ModelPublisher
from models.learner import Learner
from models.online import OnlineModel
from models.registry import ModelRegistry
from streams.model_topic import CHALLENGER, CHAMPION
from streams.model_topic import REGISTRY as REGISTRY_KEY


class Producer:
    """Records what is sent; each send's acknowledgement is a future the test settles."""

    def __init__(self) -> None:
        self.sent: list[tuple[bytes, bytes | None]] = []
        self.acks: list[asyncio.Future] = []

    async def send(self, topic: str, value: bytes | None, key: bytes, partition: int) -> asyncio.Future:
        self.sent.append((key, value))
        ack: asyncio.Future = asyncio.get_running_loop().create_future()
        self.acks.append(ack)
        return ack

    def acknowledge(self, error: Exception | None = None) -> None:
        for ack in self.acks:
            if not ack.done():
                if error is None:
                    ack.set_result(None)
                else:
                    ack.set_exception(error)

    def keys(self) -> list[bytes]:
        keys = [key for key, _ in self.sent]
        self.sent.clear()
        return keys


def errors(kind: str) -> float:
    return REGISTRY.get_sample_value("rtml_learner_errors_total", {"error": kind}) or 0.0


@pytest.fixture
def registry(tmp_path) -> ModelRegistry:
    registry = ModelRegistry(tmp_path / "registry")
    registry.register(OnlineModel("logreg"), "initial")
    return registry


async def test_a_publication_not_awaited_leaves_the_batch_and_a_lost_one_sends_everything_again(registry):
    producer = Producer()
    publisher = ModelPublisher(producer, "models")  # type: ignore[arg-type]
    learner = Learner(OnlineModel("logreg"))

    await publisher.publish(learner, registry, [], wait=False)  # returns before any acknowledgement
    assert producer.keys() == [CHAMPION, CHALLENGER, REGISTRY_KEY]
    producer.acknowledge()
    await publisher.publish(learner, registry, [], wait=False)
    assert producer.keys() == [CHAMPION]  # the rest is on the topic already

    before = errors("KafkaTimeoutError")
    producer.acknowledge(KafkaTimeoutError())
    for _ in range(3):  # the acknowledgement's callbacks (the gathering's, then ours) run
        await asyncio.sleep(0)
    assert errors("KafkaTimeoutError") == before + 1
    # The champion of the next publication supersedes the lost one; the registry and the
    # absence of a challenger, sent once, may have been lost with it: sent again.
    await publisher.publish(learner, registry, [], wait=False)
    assert producer.keys() == [CHAMPION, CHALLENGER, REGISTRY_KEY]
    producer.acknowledge()


async def test_an_awaited_publication_that_fails_raises_and_sends_everything_again(registry):
    producer = Producer()
    publisher = ModelPublisher(producer, "models")  # type: ignore[arg-type]
    learner = Learner(OnlineModel("logreg"))
    publication = asyncio.ensure_future(publisher.publish(learner, registry, []))
    await asyncio.sleep(0)
    producer.acknowledge(OSError("broker gone"))
    with pytest.raises(OSError):
        await publication
    producer.keys()
    publication = asyncio.ensure_future(publisher.publish(learner, registry, []))
    await asyncio.sleep(0)
    producer.acknowledge()
    await publication
    assert producer.keys() == [CHAMPION, CHALLENGER, REGISTRY_KEY]


async def test_the_registry_record_follows_every_change_to_the_registry(registry, tmp_path):
    producer = Producer()
    publisher = ModelPublisher(producer, "models")  # type: ignore[arg-type]
    learner = Learner(OnlineModel("logreg"))

    def published_registry() -> dict:
        record = [value for key, value in producer.sent if key == REGISTRY_KEY][-1]
        assert record is not None
        return orjson.loads(record)

    await publisher.publish(learner, registry, [], wait=False)
    producer.acknowledge()
    assert [v["version"] for v in published_registry()["versions"]] == [1]
    # Another process (engine retrain) registers a candidate: the next publication has it.
    ModelRegistry(tmp_path / "registry").register(OnlineModel("hoeffding"), "candidate", parent=1)
    await publisher.publish(learner, registry, [], wait=False)
    producer.acknowledge()
    assert [v["version"] for v in published_registry()["versions"]] == [1, 2]
    # A command carried out: `applied` is another list.
    applied = [{"id": "c1", "status": 200}]
    await publisher.publish(learner, registry, applied, wait=False)
    producer.acknowledge()
    assert published_registry()["applied"] == applied


async def test_a_linear_model_reaches_serving_within_a_fraction_of_a_second_not_every_second(tmp_path):
    # MODEL_PUBLISH_EVERY_SECONDS keeps its default (1 s): a model as cheap to pickle as a
    # logistic regression is published as often as MODEL_PUBLISH_MIN_SECONDS (50 ms), so
    # the serving model trails the learner by about that, not by up to a second.
    from engine.learning import LearningService
    from engine.settings import Settings
    from models.examples import Example
    from streams.features import FeatureRegistry
    from tests.helpers import task_rows

    settings = Settings.from_env({"REDIS_URL": "", "STATE_DIR": str(tmp_path)})
    learner = Learner(OnlineModel("logreg"))
    service = LearningService(settings, learner, FeatureRegistry())
    service.registry.ensure_serving(learner.model)
    producer = Producer()
    service.publisher = ModelPublisher(producer, settings.models_topic)  # type: ignore[arg-type]
    first = asyncio.ensure_future(service.publish_all())
    while not first.done():
        producer.acknowledge()
        await asyncio.sleep(0)
    await first
    producer.keys()
    rows = task_rows(learner.model.task, 40)
    published = []
    for i, (x, y) in enumerate(rows):
        learner.learn(Example(f"e-{i}", float(i), x, y, learner.predict(x), 1, ("events", 0, i), fresh=True))
        if i % 10 == 9:
            learner.end_batch()
            await asyncio.sleep(0.15)  # the 50 ms, with room for a loaded machine's slower pickles
            await service._maybe_publish_and_snapshot()
            producer.acknowledge()
            sent = producer.keys()
            published.append(CHAMPION in sent)
    assert published == [True, True, True, True]
    assert settings.model_publish_every_seconds == 1.0 and service.publish_interval() < 0.15
