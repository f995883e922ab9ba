"""The engine consumes what a plain Kafka client publishes, and serves it over HTTP."""

from __future__ import annotations

import pytest

from tests.conftest import KAFKA_BOOTSTRAP
from tests.helpers import event, trained
from tests.integration.kafka_client import produce

pytestmark = pytest.mark.integration


async def test_event_from_plain_producer_is_consumed_and_served(engine_factory):
    engine = engine_factory().start()
    assert engine.get("/healthz").json() == {"status": "alive"}
    assert engine.get("/readyz").json()["ready"] is True

    await produce(
        KAFKA_BOOTSTRAP,
        engine.settings.events_topic,
        [(b"card-7", event("e-1", "card-7", {"amount": 12.5}, label=True))],
    )
    engine.wait_until(lambda: engine.samples_learned() == 1, what="the event to be learned")

    answer = engine.post("/predict", {"entity_id": "card-7", "features": {"amount": 12.5}}).json()
    assert answer["entity_known"] is True
    assert answer["feature_version"] == 1
    assert answer["model"] == {"name": "logreg", "version": 1}
    assert answer["fallback"] is None
    # Exactly the answer of the default model after learning that one event: a logistic
    # regression gives both classes, and the one it learned is now the likelier.
    expected = trained([({"amount": 12.5}, True)]).predict({"amount": 12.5})
    assert answer["prediction"] is expected.value is True
    assert answer["probabilities"] == {str(label).lower(): p for label, p in expected.proba.items()}
    assert answer["probabilities"]["true"] > answer["probabilities"]["false"]


async def test_engine_stops_cleanly_on_sigterm(engine_factory):
    engine = engine_factory().start()
    assert engine.stop(timeout=30) == 0
