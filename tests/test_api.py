"""The HTTP contract, in process, without Kafka."""

import msgspec
import pytest
from hypothesis import given
from hypothesis import settings as hypothesis_settings
from hypothesis import strategies as st
from starlette.testclient import TestClient

from engine import contract
from engine.api import ROUTES, create_api
from engine.contract import MAX_BATCH_ROWS, MAX_BODY_BYTES, MAX_ENTITY_IDS
from engine.runtime import Runtime
from engine.serving import FixedModel
from engine.settings import Settings
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
        "error": "features.https=1e+308 beyond the magnitude limit 1e+15",
        "field": "features.https",
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


# -- the contract: one declaration for validation, error fields and /openapi.json ----------------


def _resolve(document, schema):
    while "$ref" in schema:
        schema = document["components"]["schemas"][schema["$ref"].rsplit("/", 1)[1]]
    return schema


def test_openapi_describes_every_route_and_method(client):
    document = client.get("/openapi.json").json()
    assert document["openapi"] == "3.1.0"
    served = {(route.path, method.lower()) for route in ROUTES for method in route.methods - {"HEAD"}}
    described = {(path, method) for path, operations in document["paths"].items() for method in operations}
    assert described == served
    for path, operations in document["paths"].items():
        for method, operation in operations.items():
            assert operation["summary"] and {"200", "202"} & set(operation["responses"]), (path, method)
            if "requestBody" in operation:
                assert {"400", "413", "415", "422"} <= set(operation["responses"]), path
            admin = path.startswith("/models/{name}/")
            assert ("security" in operation) == admin, path
            if admin:
                assert {"401", "403"} <= set(operation["responses"]), path


def test_openapi_limits_come_from_the_same_constants(client):
    document = client.get("/openapi.json").json()
    batch = _resolve(
        document, document["paths"]["/predict/batch"]["post"]["requestBody"]["content"]["application/json"]["schema"]
    )
    assert (batch["properties"]["rows"]["minItems"], batch["properties"]["rows"]["maxItems"]) == (1, MAX_BATCH_ROWS)
    assert batch["additionalProperties"] is False
    for path in ("/features", "/features/offline"):
        (ids,) = [p for p in document["paths"][path]["get"]["parameters"] if p["name"] == "entity_id"]
        assert ids["in"] == "query" and ids["required"] and ids["explode"]
        assert (ids["schema"]["minItems"], ids["schema"]["maxItems"]) == (1, MAX_ENTITY_IDS)
    assert str(MAX_BODY_BYTES) in document["paths"]["/predict"]["post"]["responses"]["413"]["description"]


def test_the_batch_limit_is_the_declared_one(client):
    row = {"entity_id": "a", "features": {"amount": 1.0}}
    assert len(client.post("/predict/batch", json={"rows": [row] * MAX_BATCH_ROWS}).json()["results"]) == MAX_BATCH_ROWS
    too_many = client.post("/predict/batch", json={"rows": [row] * (MAX_BATCH_ROWS + 1)})
    assert too_many.status_code == 422 and too_many.json()["field"] == "rows"
    assert client.post("/predict/batch", json={"rows": []}).json()["field"] == "rows"


def test_the_entity_id_limit_is_the_declared_one(client):
    ids = "&".join(f"entity_id=e{i}" for i in range(MAX_ENTITY_IDS))
    assert len(client.get(f"/features?{ids}").json()["rows"]) == MAX_ENTITY_IDS
    too_many = client.get(f"/features?{ids}&entity_id=one-more")
    assert too_many.status_code == 422 and too_many.json()["field"] == "entity_id"


def test_the_body_limit_is_the_declared_one(client):
    def body(size):
        head, tail = b'{"entity_id": "a", "features": {"x": "', b'"}}'
        return head + b"y" * (size - len(head) - len(tail)) + tail

    headers = {"content-type": "application/json"}
    assert client.post("/predict", content=body(MAX_BODY_BYTES), headers=headers).status_code == 200
    assert client.post("/predict", content=body(MAX_BODY_BYTES + 1), headers=headers).status_code == 413


@pytest.mark.parametrize(
    ("body", "field"),
    [
        ({"rows": [{"entity_id": "a"}, {"entity_id": "b", "features": {"x": [1]}}]}, "rows[1].features.x"),
        ({"rows": [{"entity_id": "a"}, {"features": {}}]}, "rows[1].entity_id"),
        ({"rows": [{"entity_id": "a"}, 3]}, "rows[1]"),
        ({"rows": [{"entity_id": "a", "extra": 1}]}, "rows[0].extra"),
        ({"rows": [{"entity_id": ""}]}, "rows[0].entity_id"),
        ({"rows": {}}, "rows"),
        ({"rows": [], "more": 1}, "more"),
        ({}, "rows"),
        ([], "body"),
    ],
)
def test_batch_shape_errors_name_the_row_and_the_field(client, body, field):
    response = client.post("/predict/batch", json=body)
    assert response.status_code == 422 and response.json()["field"] == field


def test_an_out_of_range_number_is_not_json_as_before(client):
    body = b'{"entity_id": "a", "features": {"x": 1e400}}'
    assert client.post("/predict", content=body, headers={"content-type": "application/json"}).status_code == 400


def test_integer_ids_beyond_64_bits_are_read_exactly(client):
    # Read as a float (and refused) before msgspec; the stream reads such ids exactly too.
    answer = client.post("/predict", json={"entity_id": 2**70, "features": {}}).json()
    assert answer["entity_id"] == str(2**70)


def test_answers_match_their_declarations(client):
    msgspec.convert(
        client.post("/predict", json={"entity_id": "known", "features": {"amount": 3.0}}).json(),
        contract.PredictionAnswer,
    )
    batch = client.post("/predict/batch", json={"rows": [{"entity_id": "known"}, {"entity_id": 7}]}).json()
    assert len(msgspec.convert(batch, contract.PredictionBatch).results) == 2
    msgspec.convert(client.get("/features?entity_id=known&entity_id=nobody").json(), contract.FeatureRows)
    msgspec.convert(client.get("/healthz").json(), contract.Liveness)
    msgspec.convert(client.get("/readyz").json(), contract.Readiness)
    msgspec.convert(client.get("/models").json(), contract.ModelsListing)
    refused = client.post("/predict", json={"entity_id": True}).json()
    assert msgspec.convert(refused, contract.Error).field == "entity_id"


def test_a_model_not_loaded_answer_matches_the_declaration(tmp_path):
    runtime = Runtime.in_process(Settings.from_env({"REDIS_URL": "", "STATE_DIR": str(tmp_path)}), NoModelYet(), {})

    async def start():
        return runtime

    with TestClient(create_api(start)) as client:
        answer = msgspec.convert(client.post("/predict", json={"entity_id": "a"}).json(), contract.PredictionAnswer)
        assert answer.model is None and answer.fallback.reason == "model_not_loaded"


JSON_VALUES = st.recursive(
    st.none()
    | st.booleans()
    | st.integers(-(2**70), 2**70)
    | st.floats(allow_nan=False, allow_infinity=False)
    | st.text(max_size=3),
    lambda inner: (
        st.lists(inner, max_size=3)
        | st.dictionaries(st.sampled_from(["entity_id", "features", "x"]), inner, max_size=3)
    ),
    max_leaves=8,
)
ROWS = st.lists(
    st.fixed_dictionaries(
        {"entity_id": st.text(max_size=2) | st.integers() | JSON_VALUES},
        optional={
            "features": st.dictionaries(st.text(max_size=2), JSON_VALUES, max_size=3) | JSON_VALUES,
            "extra": JSON_VALUES,
        },
    )
    | JSON_VALUES,
    max_size=4,
)


@given(body=st.fixed_dictionaries({"rows": ROWS}, optional={"more": JSON_VALUES}) | JSON_VALUES)
@hypothesis_settings(max_examples=300, deadline=None)
def test_every_refused_body_gets_a_field_the_walk_found(body):
    """msgspec puts the location of an error in its message only: the API finds the field by
    walking the declaration instead, and must find one wherever msgspec refuses."""
    raw = msgspec.json.encode(body)
    try:
        msgspec.json.decode(raw, type=contract.PredictBatchRequest)
    except msgspec.ValidationError as exc:
        refused = contract.refusal(contract.PredictBatchRequest, raw, exc)
        assert refused.status == 422 and refused.field is not None
        assert " - at `$" not in refused.message, refused.message  # the walk reached the level at fault


def test_v2_infer_is_served_before_the_router_and_measured_by_its_route(client):
    from prometheus_client import REGISTRY

    def count() -> float:
        labels = {"route": "/v2/models/{name}/infer", "status": "200"}
        return REGISTRY.get_sample_value("rtml_http_request_seconds_count", labels) or 0.0

    body = {
        "id": "r1",
        "inputs": [
            {"name": "entity_id", "datatype": "BYTES", "shape": [2], "data": ["known", "new"]},
            {"name": "amount", "datatype": "FP64", "shape": [2], "data": [3.0, 4.0]},
        ],
    }
    before = count()
    answer = client.post("/v2/models/logreg/infer", json=body)
    assert answer.status_code == 200 and answer.json()["id"] == "r1"
    outputs = {o["name"]: o for o in answer.json()["outputs"]}
    assert outputs["prediction"]["shape"] == [2]
    assert count() == before + 1
    # The same answer as /predict for the row.
    single = client.post("/predict", json={"entity_id": "known", "features": {"amount": 3.0}}).json()
    assert outputs["probabilities"]["data"][:2] == [single["probabilities"][c] for c in ("false", "true")]
    assert client.post("/v2/models/other/infer", json=body).status_code == 404
    assert client.post("/v2/models/a/b/infer", json=body).status_code == 404  # no route has two names
    # The name is looked up first, as Triton does: a client that gets the name wrong hears so
    # even when its body is wrong too.
    unknown = client.post("/v2/models/other/infer", json={})
    assert unknown.status_code == 404 and "no model 'other'" in unknown.json()["error"]
    assert client.post("/v2/models/logreg/infer", json={}).status_code == 400
