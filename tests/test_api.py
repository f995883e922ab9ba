"""The HTTP contract, in process, without Kafka."""

import pytest
from starlette.testclient import TestClient

from engine.api import create_api
from engine.runtime import Runtime
from engine.settings import Settings
from streams.features import FeatureRegistry, apply_event


@pytest.fixture
def runtime():
    runtime = Runtime.from_settings(Settings.from_env({"REDIS_URL": ""}))
    runtime.feature_registry = FeatureRegistry([{"name": "amount", "kind": "raw", "min": 0, "max": 100}, {"name": "n", "agg": "count"}])
    runtime.entities = {"known": apply_event(None, 1.0, {"amount": 3.0}, runtime.feature_registry.aggregates)}
    return runtime


@pytest.fixture
def client(runtime):
    with TestClient(create_api(runtime)) as client:
        yield client


def test_predict_joins_online_features(client):
    answer = client.post("/predict", json={"entity_id": "known", "features": {"amount": 3.0}}).json()
    assert answer["entity_known"] is True and answer["feature_version"] == 1
    assert answer["model"] == {"name": "logreg", "version": 1}
    assert answer["cached"] is None and answer["fallback"] is None
    assert set(answer["probabilities"]) == {"false", "true"}


def test_unknown_entity_is_served_from_request_features(client):
    answer = client.post("/predict", json={"entity_id": "new", "features": {"amount": 3.0}}).json()
    assert answer["entity_known"] is False and answer["feature_age_seconds"] is None


@pytest.mark.parametrize(
    ("body", "field"),
    [
        ({"features": {}}, "entity_id"),
        ({"entity_id": True, "features": {}}, "entity_id"),
        ({"entity_id": "a", "features": []}, "features"),
        ({"entity_id": "a", "features": {"amount": 1000}}, "features.amount"),
        ({"entity_id": "a", "features": {"x": {"y": 1}}}, "features.x"),
        ({"entity_id": "a", "features": {}, "extra": 1}, "extra"),
        ([1, 2], "body"),
    ],
)
def test_invalid_bodies_get_422_naming_the_field(client, body, field):
    response = client.post("/predict", json=body)
    assert response.status_code == 422
    assert response.json()["field"] == field


def test_wrong_content_type_and_bad_json(client):
    assert client.post("/predict", content=b"{}", headers={"content-type": "text/plain"}).status_code == 415
    assert client.post("/predict", content=b"{no", headers={"content-type": "application/json"}).status_code == 400


def test_oversized_body_is_413(client):
    body = b'{"entity_id": "a", "features": {"x": "' + b"y" * (2 << 20) + b'"}}'
    assert client.post("/predict", content=body, headers={"content-type": "application/json"}).status_code == 413


def test_health_and_readiness(client):
    assert client.get("/healthz").json() == {"status": "alive"}
    ready = client.get("/readyz")
    assert ready.status_code == 503  # no stream in this process
    assert ready.json()["checks"]["stream_ready"] is False


def test_online_features_route(client):
    rows = client.get("/features?entity_id=known&entity_id=nobody").json()["rows"]
    assert rows[0]["values"] == {"n": 1.0} and rows[0]["updated_at"] == 1.0
    assert rows[1]["known"] is False
    assert client.get("/features").status_code == 422


def test_metrics_are_prometheus_text(client):
    client.get("/healthz")
    text = client.get("/metrics").text
    assert 'rtml_http_request_seconds_bucket{le="0.0001",route="/healthz",status="200"}' in text
