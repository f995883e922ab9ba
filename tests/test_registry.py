"""Versions, promote and rollback: in the registry and through the admin routes."""

import pytest
from river import datasets
from starlette.testclient import TestClient

from engine.api import create_api
from engine.runtime import Runtime
from engine.settings import Settings
from models.online import OnlineModel
from models.registry import ModelRegistry, RegistryError

ROWS = list(datasets.Phishing())


def trained(rows, name="logreg"):
    model = OnlineModel(name)
    for x, y in rows:
        model.learn(x, y, model.predict(x))
    return model


def test_rollback_restores_exactly_the_previous_predictions(tmp_path):
    registry = ModelRegistry(tmp_path)
    live = trained(ROWS[:300])
    registry.ensure_serving(live)
    before = [live.predict(x) for x, _ in ROWS[1000:1050]]
    candidate = registry.register(trained(ROWS[:900], "hoeffding"), "candidate", parent=1)
    promoted = registry.promote(candidate, live)
    assert promoted.name == "hoeffding" and promoted.version == candidate
    promoted.learn(*ROWS[950], promoted.predict(ROWS[950][0]))  # serving changes it
    back = registry.rollback(promoted)
    assert back.version == 1
    assert [back.predict(x) for x, _ in ROWS[1000:1050]] == before
    assert registry.serving == 1
    entries = {v["version"]: v for v in registry.versions()}
    assert entries[candidate]["parent"] == 1 and entries[candidate]["kind"] == "candidate"
    assert entries[candidate]["samples_learned"] == 901  # its state when it stopped serving


def test_errors(tmp_path):
    registry = ModelRegistry(tmp_path)
    registry.ensure_serving(OnlineModel("logreg"))
    with pytest.raises(RegistryError):
        registry.promote(42, None)
    with pytest.raises(RegistryError):
        registry.rollback(OnlineModel("logreg"))


@pytest.fixture
def client(tmp_path):
    runtime = Runtime.from_settings(Settings.from_env({"REDIS_URL": "", "ADMIN_TOKEN": "s3cret"}))
    runtime.model = trained(ROWS[:200])
    runtime.model_registry = ModelRegistry(tmp_path)
    runtime.model_registry.ensure_serving(runtime.model)
    with TestClient(create_api(runtime)) as client:
        client.runtime = runtime
        yield client


def test_admin_routes_need_the_token(client):
    assert client.post("/models/logreg/rollback").status_code == 401
    assert client.post("/models/logreg/rollback", headers={"Authorization": "Bearer nope"}).status_code == 403


def test_promote_and_rollback_over_http(client):
    auth = {"Authorization": "Bearer s3cret"}
    registry = client.runtime.model_registry
    body = {"entity_id": "e", "features": ROWS[1100][0]}
    before = client.post("/predict", json=body).json()
    candidate = registry.register(trained(ROWS[:1000]), "candidate", parent=1)
    promoted = client.post("/models/logreg/promote", json={"version": candidate}, headers=auth)
    assert promoted.status_code == 200 and promoted.json()["serving"]["version"] == candidate
    after = client.post("/predict", json=body).json()
    assert after["model"]["version"] == candidate and after["probabilities"] != before["probabilities"]
    assert client.get("/models").json()["serving_version"] == candidate
    assert client.post("/models/logreg/rollback", headers=auth).status_code == 200
    again = client.post("/predict", json=body).json()
    assert again["model"]["version"] == 1 and again["probabilities"] == before["probabilities"]
    assert client.post("/models/logreg/promote", json={"version": 99}, headers=auth).status_code == 409
    assert client.post("/models/logreg/promote", json={"version": "1"}, headers=auth).status_code == 422
    assert client.post("/models/arf/rollback", headers=auth).status_code == 404
