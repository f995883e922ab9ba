"""Streaming a dataset through Kafka gives River's own progressive_val_score, to the last digit."""

from __future__ import annotations

import os
import subprocess
import sys

import orjson
import pytest

from engine.publish import dataset_events
from tests.conftest import KAFKA_BOOTSTRAP, ROOT
from tests.helpers import dataset_messages, label
from tests.integration.kafka_client import produce

pytestmark = pytest.mark.integration

CASES = [
    ("Phishing", "logreg"),
    ("Bananas", "hoeffding"),
    ("ImageSegments", "softmax"),
    ("TrumpApproval", "linreg"),
    ("ChickWeights", "hoeffding-regressor"),
]


# MacroF1 sums over a set of class labels, whose order follows Python's string hashing:
# River itself differs in the last digit between processes. Engine and reference share one seed.
HASH_SEED = "0"

# tests.helpers.progressive_metrics, in a process with the engine's hash seed.
REFERENCE_SCRIPT = """
import sys, orjson
from engine.publish import load_dataset
from tests.helpers import progressive_metrics
dataset, model_name, delay = sys.argv[1], sys.argv[2], orjson.loads(sys.argv[3])
sys.stdout.buffer.write(orjson.dumps(progressive_metrics(model_name, load_dataset(dataset), delay=delay)))
"""


def river_reference(dataset: str, model_name: str, delay: int | None = None) -> dict[str, float]:
    """Each metric from its own progressive_val_score run, as a River user would compute it."""
    out = subprocess.run(
        [sys.executable, "-c", REFERENCE_SCRIPT, dataset, model_name, orjson.dumps(delay)],
        env={**os.environ, "PYTHONHASHSEED": HASH_SEED},
        cwd=ROOT,
        capture_output=True,
        check=True,
    )
    return orjson.loads(out.stdout)


@pytest.mark.parametrize(("dataset", "model_name"), CASES)
async def test_inline_labels_match_progressive_val_score(engine_factory, dataset, model_name):
    engine = engine_factory(MODEL=model_name, PYTHONHASHSEED=HASH_SEED).start()
    rows = list(dataset_events(dataset))
    await produce(KAFKA_BOOTSTRAP, engine.settings.events_topic, dataset_messages(rows))

    engine.wait_until(lambda: engine.samples_learned() == len(rows), what="all rows learned")
    served = engine.get("/models").json()["serving"]["metrics"]
    assert served == river_reference(dataset, model_name)


async def test_labels_on_their_own_topic_match_delayed_progressive_val_score(engine_factory):
    dataset, model_name = "Phishing", "logreg"
    engine = engine_factory(MODEL=model_name, PYTHONHASHSEED=HASH_SEED).start()
    rows = list(dataset_events(dataset))
    await produce(KAFKA_BOOTSTRAP, engine.settings.events_topic, dataset_messages(rows, inline_labels=False))
    engine.wait_until(
        lambda: engine.get("/models").json()["serving"]["predictions_awaiting_label"] == len(rows),
        what="every event predicted and waiting for its label",
    )
    assert engine.samples_learned() == 0  # nothing learned before its label: no leakage

    labels = [(e["event_id"].encode(), label(e["event_id"], y)) for e, y in rows]
    await produce(KAFKA_BOOTSTRAP, engine.settings.labels_topic, labels)
    engine.wait_until(lambda: engine.samples_learned() == len(rows), what="all labels learned")

    # The gauge of predictions awaiting labels is refreshed once a second, model versions
    # as often as every 50 ms: wait for it rather than read it once.
    engine.wait_until(
        lambda: engine.get("/models").json()["serving"]["predictions_awaiting_label"] == 0,
        timeout=10,
        what="no prediction awaiting its label",
    )
    serving = engine.get("/models").json()["serving"]
    # Every prediction was made before any label: River's delay=len(dataset).
    assert serving["metrics"] == river_reference(dataset, model_name, delay=len(rows))
