"""Scale-out on the real broker: several stream workers over 4 partitions, one learner apart
(`engine learn`), a serving process; workers stopped, killed and added mid-stream."""

from __future__ import annotations

import asyncio
import json
from pathlib import Path

import orjson
import pytest
from aiokafka import AIOKafkaConsumer, TopicPartition

from engine.harness import KAFKA_BOOTSTRAP, EngineProcess, remove_topics, unique_env
from engine.publish import dataset_events
from models.examples import Example
from models.online import OnlineModel
from tests.helpers import dataset_messages, named_labels, progressive_metrics, replay_features
from tests.integration.kafka_client import eventually, produce

pytestmark = pytest.mark.integration

DEFINITIONS = [
    {"name": "visits", "agg": "count"},
    {"name": "https_mean", "source": "https", "agg": "mean"},
]
PARTITIONS = 4


class Cluster:
    """A learner, a serving process and stream workers, each a process of its own."""

    def __init__(self, tmp_path: Path, learners: tuple[str, ...] = ("",), **settings: object) -> None:
        """`learners`: the LEARN_MODEL of each learner (empty: the only model)."""
        features = tmp_path / "features.json"
        features.write_text(json.dumps(DEFINITIONS))
        self.env = unique_env(
            TOPIC_PARTITIONS=PARTITIONS,
            FEATURES_FILE=features,
            REDIS_URL="",
            CACHE_L1_ENTRIES=0,
            MODEL_PUBLISH_EVERY_SECONDS=0.5,
            KAFKA_SESSION_TIMEOUT_SECONDS=6,
            **settings,
        )
        self.tmp_path = tmp_path
        self.workers: dict[int, EngineProcess] = {}
        self.learners = [
            self._process(f"learner-{name}", ("learn",), **({"LEARN_MODEL": name} if name else {})) for name in learners
        ]
        self.learner = self.learners[0]
        self.serving = self._process("serve", ("serve",))

    def _process(self, name: str, command: tuple[str, ...], **env: str) -> EngineProcess:
        folder = self.tmp_path / name
        folder.mkdir(exist_ok=True)
        return EngineProcess({**self.env, **env}, folder, command)

    def start(self, workers: int) -> Cluster:
        for learner in self.learners:
            learner.launch()
        for i in range(workers):
            self.add_worker(i)
        self.serving.start(ready_timeout=120)
        return self

    def add_worker(self, worker_id: int) -> EngineProcess:
        worker = self._process(f"worker-{worker_id}", ("worker",), WORKER_ID=str(worker_id))
        self.workers[worker_id] = worker.launch()
        return worker

    def stop(self) -> None:
        for process in [*self.workers.values(), *self.learners, self.serving]:
            process.stop()

    @property
    def settings(self):
        return self.serving.settings

    def learned(self) -> int:
        return self.serving.samples_learned()

    def owned(self, worker_id: int) -> bool:
        """Whether the worker's latest assignment holds partitions of the events topic."""
        lines = [
            line
            for line in self.workers[worker_id].log_path.read_text(errors="replace").splitlines()
            if "owns partitions [" in line
        ]
        return bool(lines) and "owns partitions []" not in lines[-1]


@pytest.fixture
def cluster(tmp_path):
    clusters = []

    def make(**settings):
        clusters.append(Cluster(tmp_path, **settings))
        return clusters[-1]

    yield make
    try:
        for c in clusters:
            c.stop()
    finally:
        remove_topics([c.serving for c in clusters])


def phishing(n=None, entities=40):
    rows = list(dataset_events("Phishing", entities=entities, start_ts=1_700_000_000.0, limit=n))
    return dataset_messages(rows), rows


def assert_features(cluster, rows):
    _, expected = replay_features(DEFINITIONS, [e for e, _ in rows])
    query = "&".join(f"entity_id={e}" for e in sorted(expected))
    online = {r["entity_id"]: r for r in cluster.serving.get(f"/features?{query}").json()["rows"]}
    for entity_id, state in expected.items():
        assert online[entity_id]["values"] == state["values"], entity_id
        assert online[entity_id]["version"] == state["version"], entity_id


async def learned_order(topic: str) -> list[Example]:
    """The examples as the learner learns them: the examples topic in offset order, each
    event once (a replay after a rebalance can write an example twice; the learner skips it)."""
    tp = TopicPartition(topic, 0)
    consumer = AIOKafkaConsumer(bootstrap_servers=KAFKA_BOOTSTRAP, enable_auto_commit=False, group_id=None)
    await consumer.start()
    try:
        consumer.assign([tp])
        end = (await consumer.end_offsets([tp]))[tp]
        consumer.seek(tp, (await consumer.beginning_offsets([tp]))[tp])
        seen, examples, offset = set(), [], 0
        while offset < end:
            for record in (await consumer.getmany(tp, timeout_ms=1000)).get(tp, []):
                offset = record.offset + 1
                example = Example.from_record(orjson.loads(record.value))
                if example.event_id not in seen:
                    seen.add(example.event_id)
                    examples.append(example)
        return examples
    finally:
        await consumer.stop()


def uninterrupted_metrics(examples: list[Example], factory: str = "logreg") -> dict[str, float]:
    """What one learner that never crashed computes over the same order: it predicts each
    labelled event right before learning it (the workers leave those unpredicted), scores a
    label that came later with the prediction a worker made (what users got), and learns."""
    model = OnlineModel(factory)
    for example in examples:
        prediction = model.predict(example.features) if example.learner_predicts else example.prediction
        model.learn(example.features, example.label, prediction)
    return model.metric_values()


async def test_two_workers_one_learner_learn_every_label_once(cluster):
    c = cluster().start(workers=2)
    c.serving.wait_until(lambda: c.owned(0) and c.owned(1), timeout=60, what="both workers owning partitions")
    messages, rows = phishing()
    await produce(KAFKA_BOOTSTRAP, c.settings.events_topic, messages)
    c.serving.wait_until(lambda: c.learned() == len(rows), timeout=120, what="every label learned")
    c.serving.wait_until(lambda: _features_match(c, rows), timeout=30, what="features of every entity")
    examples = await learned_order(c.settings.examples_topic)
    assert len(examples) == len(rows) and all(e.learner_predicts for e in examples)
    # Labels inline: the learner predicted each event itself, right before learning it, so its
    # metrics are River's progressive_val_score over the order it learned in, to the last digit.
    reference = progressive_metrics("logreg", [(e.features, e.label) for e in examples])
    c.serving.wait_until(
        lambda: c.serving.get("/models").json()["serving"]["metrics"] == reference,
        timeout=10,
        what="the learner's metrics",
    )
    lag = c.serving.get("/models").json()["serving"]["prediction_model_lag"]
    assert lag is None or lag["max_samples"] == 0  # every prediction scored was the learner's own


def _features_match(c, rows) -> bool:
    try:
        assert_features(c, rows)
        return True
    except AssertionError:
        return False


# With a standby, each worker also keeps the other's partitions in its RocksDB store: the
# takeovers below read only what they missed, and must still end with every row right.
@pytest.mark.parametrize("standbys", [0, 1])
async def test_a_worker_stopped_then_killed_mid_stream_loses_nothing(cluster, standbys):
    c = cluster(STANDBY_REPLICAS=standbys).start(workers=2)
    messages, rows = phishing()
    third = len(messages) // 3
    await produce(KAFKA_BOOTSTRAP, c.settings.events_topic, messages[:third])
    c.serving.wait_until(lambda: c.learned() == third, timeout=120, what="the first third learned")
    assert c.workers[1].stop() == 0  # SIGTERM: it hands its partitions over
    await produce(KAFKA_BOOTSTRAP, c.settings.events_topic, messages[third : 2 * third])
    c.serving.wait_until(lambda: c.learned() == 2 * third, timeout=120, what="the second third learned by worker 0")
    c.add_worker(1)
    c.serving.wait_until(lambda: c.owned(1), timeout=60, what="worker 1 back with partitions")
    publishing = asyncio.create_task(produce(KAFKA_BOOTSTRAP, c.settings.events_topic, messages[2 * third :]))

    async def under_way() -> bool:
        return c.learned() > 2 * third

    await eventually(under_way, timeout=60, what="the last third under way", log=c.serving.log_tail)
    c.workers[1].kill()  # mid-stream, without a goodbye: its session must lapse first
    await publishing
    c.serving.wait_until(lambda: c.learned() == len(rows), timeout=120, what="every label learned once")
    c.serving.wait_until(lambda: _features_match(c, rows), timeout=30, what="features of every entity")


async def test_killed_learner_resumes_exactly(cluster):
    c = cluster(SNAPSHOT_EVERY_LABELS=300, SNAPSHOT_EVERY_SECONDS=1000).start(workers=2)
    messages, rows = phishing()
    half = len(messages) // 2
    await produce(KAFKA_BOOTSTRAP, c.settings.events_topic, messages[:half])
    c.serving.wait_until(lambda: c.learned() >= 400, timeout=120, what="the learner under way")
    c.learner.kill()
    await produce(KAFKA_BOOTSTRAP, c.settings.events_topic, messages[half:])  # while it is down
    c.learner.launch()
    c.serving.wait_until(lambda: c.learned() == len(rows), timeout=120, what="every label learned once")
    examples = await learned_order(c.settings.examples_topic)
    c.serving.wait_until(
        lambda: c.serving.get("/models").json()["serving"]["metrics"] == uninterrupted_metrics(examples),
        timeout=10,
        what="the metrics of a learner that never crashed",
    )


async def test_a_worker_added_mid_stream_gets_partitions(cluster):
    c = cluster().start(workers=1)
    messages, rows = phishing()
    half = len(messages) // 2
    await produce(KAFKA_BOOTSTRAP, c.settings.events_topic, messages[:half])
    c.serving.wait_until(lambda: c.learned() == half, timeout=120, what="half learned by one worker")
    c.add_worker(1)
    c.serving.wait_until(lambda: c.owned(1), timeout=60, what="the new worker owning partitions")
    await produce(KAFKA_BOOTSTRAP, c.settings.events_topic, messages[half:])
    c.serving.wait_until(lambda: c.learned() == len(rows), timeout=120, what="every label learned once")
    c.serving.wait_until(lambda: _features_match(c, rows), timeout=30, what="features of every entity")


async def test_named_models_each_with_its_learner_apart_learn_every_label_once(cluster):
    models = {"clf": "logreg", "score": "linreg"}
    c = cluster(learners=tuple(models), MODELS="clf=logreg@is_phishing,score=linreg@score").start(workers=1)
    _, rows = phishing(600)
    rows = named_labels(rows)
    await produce(KAFKA_BOOTSTRAP, c.settings.events_topic, dataset_messages(rows))
    for name, factory in models.items():
        target = "is_phishing" if name == "clf" else "score"
        expected = sum(1 for _, y in rows if target in y)

        def learned(name=name):
            return c.serving.get(f"/models?model={name}").json()["serving"]["samples_learned"]

        c.serving.wait_until(lambda n=expected, f=learned: f() == n, timeout=120, what=f"{name} learned every label")
        named = next(m for m in c.settings.models if m.name == name)
        examples = await learned_order(c.settings.for_model(named).examples_topic)
        # Each model learned its own target of every label (in the order the partitions gave).
        targets = {e["event_id"]: y[target] for e, y in rows if target in y}
        assert {e.event_id: e.label for e in examples} == targets and len(examples) == expected
        c.serving.wait_until(
            lambda e=examples, f=factory, name=name: (
                c.serving.get(f"/models?model={name}").json()["serving"]["metrics"] == uninterrupted_metrics(e, f)
            ),
            timeout=10,
            what=f"{name}: the metrics of a learner that never crashed",
        )
