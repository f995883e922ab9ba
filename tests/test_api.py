"""The HTTP contract, in process, without Kafka."""

import pytest
from starlette.testclient import TestClient

from engine.api import create_api
from engine.runtime import Runtime
from engine.settings import Settings
from engine.serving import FixedModel
from models.online import OnlineModel, Prediction
from streams.features import FeatureRegistry, apply_event


@pytest.fixture
def runtime(tmp_path):
    registry = FeatureRegistry([{"name": "amount", "kind": "raw", "min": 0, "max": 100}, {"name": "n", "agg": "count"}])
    entities = {"known": apply_event(None, 1.0, {"amount": 3.0}, registry.aggregates)}
    settings = Settings.from_env({"REDIS_URL": "", "STATE_DIR": str(tmp_path)})
    runtime = Runtime.in_process(settings, FixedModel(OnlineModel("logreg")), entities)
    runtime.feature_registry = registry
    return runtime


@pytest.fixture
def client(runtime):
    async def start():
        return runtime

    with TestClient(create_api(start)) as client:
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
        ({"entity_id": "a", "features": {"https": 1e308}}, "features.https"),
        ({"entity_id": "a", "features": {"https": -1e308}}, "features.https"),
        ({"entity_id": "a" * 257, "features": {}}, "entity_id"),
    ],
)
def test_invalid_bodies_get_422_naming_the_field(client, body, field):
    response = client.post("/predict", json=body)
    assert response.status_code == 422
    assert response.json()["field"] == field


def test_a_number_beyond_the_magnitude_limit_is_422_naming_the_feature(client):
    response = client.post("/predict", json={"entity_id": "a", "features": {"https": 1e308}})
    assert response.status_code == 422
    assert response.json() == {
        "error": "features.https=1e+308 beyond the magnitude limit 1e+15", "field": "features.https"
    }


def test_the_limits_come_from_the_settings(runtime):
    runtime.settings = Settings.from_env({"REDIS_URL": "", "MAX_FEATURE_MAGNITUDE": "1e3", "MAX_ID_LENGTH": "3"})

    async def start():
        return runtime

    with TestClient(create_api(start)) as client:
        assert client.post("/predict", json={"entity_id": "abc", "features": {"x": 1000}}).status_code == 200
        too_big = client.post("/predict", json={"entity_id": "abc", "features": {"x": 1001}})
        assert too_big.json()["field"] == "features.x"
        assert client.post("/predict", json={"entity_id": "abcd", "features": {}}).json()["field"] == "entity_id"


def test_batch_errors_name_the_row_and_the_field(client):
    rows = [{"entity_id": "a", "features": {}}] * 3 + [{"entity_id": "a", "features": {"https": 1e308}}]
    response = client.post("/predict/batch", json={"rows": rows})
    assert response.status_code == 422 and response.json()["field"] == "rows[3].features.https"


@pytest.mark.parametrize("ts", ["nan", "inf", "-inf", "NaN", "soon", ""])
def test_offline_features_refuse_a_timestamp_that_is_not_a_finite_number(client, ts):
    response = client.get(f"/features/offline?entity_id=known&ts={ts}")
    assert response.status_code == 422 and response.json()["field"] == "ts"


def test_wrong_content_type_and_bad_json(client):
    assert client.post("/predict", content=b"{}", headers={"content-type": "text/plain"}).status_code == 415
    assert client.post("/predict", content=b"{no", headers={"content-type": "application/json"}).status_code == 400


def test_oversized_body_is_413(client):
    body = b'{"entity_id": "a", "features": {"x": "' + b"y" * (2 << 20) + b'"}}'
    assert client.post("/predict", content=body, headers={"content-type": "application/json"}).status_code == 413


def test_health_and_readiness(client):
    assert client.get("/healthz").json() == {"status": "alive"}
    ready = client.get("/readyz")
    assert ready.status_code == 200
    assert ready.json()["checks"] == {"model_loaded": True, "features_caught_up": True, "model_healthy": True}


def test_not_ready_without_a_model(tmp_path):
    settings = Settings.from_env({"REDIS_URL": "", "STATE_DIR": str(tmp_path)})
    runtime = Runtime.in_process(settings, NoModelYet(), {})

    async def start():
        return runtime

    with TestClient(create_api(start)) as client:
        ready = client.get("/readyz")
        assert ready.status_code == 503 and ready.json()["checks"]["model_loaded"] is False
        answer = client.post("/predict", json={"entity_id": "a", "features": {}}).json()
        assert answer["fallback"] == {"reason": "model_not_loaded", "source": "default"}
        assert answer["prediction"] is None


class NoModelYet:
    def champion(self):
        return None

    def canary(self, entity_id):
        return None

    def age_seconds(self):
        return None


def test_readiness_reports_an_unhealthy_model(client, runtime):
    model = runtime.predictor.model
    for y in (True, False, True, True):
        model.prior.learn_one({}, y)
    model.predict = lambda x: Prediction(True, {True: float("nan"), False: float("nan")})
    answer = client.post("/predict", json={"entity_id": "a", "features": {}}).json()
    assert answer["fallback"] == {"reason": "model_error", "source": "prior"}
    assert answer["probabilities"] == {"true": 0.75, "false": 0.25}  # not {"true": null, ...}
    assert client.get("/readyz").json()["checks"]["model_healthy"] is False


def test_online_features_route(client):
    rows = client.get("/features?entity_id=known&entity_id=nobody").json()["rows"]
    assert rows[0]["values"] == {"n": 1.0} and rows[0]["updated_at"] == 1.0
    assert rows[1]["known"] is False
    assert client.get("/features").status_code == 422


def test_metrics_are_prometheus_text(client):
    client.get("/healthz")
    text = client.get("/metrics").text
    assert 'rtml_http_request_seconds_bucket{le="0.0001",route="/healthz",status="200"}' in text
