"""Served predictions with an event_id, without Kafka: what is logged, once, and what a
client is told; the loop through the broker is tests/integration/test_served_learning.py."""

import orjson
from prometheus_client import REGISTRY
from starlette.testclient import TestClient

from engine.api import create_api
from engine.cache import L1Cache, PredictionCache
from engine.prediction_log import ServedPredictionLog
from engine.runtime import Runtime
from engine.serving import DeadlineBreaker, FixedModel, Predictor
from engine.settings import Settings
from models.examples import Example
from models.online import OnlineModel, Prediction
from streams.batch_consumer import Record
from streams.features import FeatureRegistry, apply_event, model_features
from streams.join import Join
from streams.records import Contract
from tests.conftest import MemoryTable
from tests.helpers import learning_lanes
from tests.test_serving import trained_model

REGISTRY_N = FeatureRegistry([{"name": "n", "agg": "count"}])


def served(buffer=100):
    # A producer is there (the log's sending task is not started: the buffer is what is checked).
    log = ServedPredictionLog(lambda: object(), "app-predictions", 4, buffer=buffer)
    entities = {"card-1": apply_event(None, 1.0, {"a": 1.0}, REGISTRY_N.aggregates)}
    cache = PredictionCache(L1Cache(100, 60), None)
    return Predictor(trained_model(), entities, cache, DeadlineBreaker(1.0, 60), log), log


def unlogged(reason):
    return REGISTRY.get_sample_value("rtml_served_predictions_unlogged_total", {"reason": reason}) or 0.0


async def test_a_served_prediction_with_an_id_is_logged_as_the_stream_logs_one():
    predictor, log = served()
    answer = await predictor.predict("card-1", {"a": 0.0}, "order-1")
    assert answer["event_id"] == "order-1" and answer["logged"] == "queued"
    [(event_id, record, _)] = log._buffer
    assert event_id == "order-1"
    # The features as the model saw them: the request's, joined with the entity's online ones.
    assert record["features"] == model_features({"a": 0.0}, predictor.entities.get("card-1")["values"])
    assert record["features"] == {"a": 0.0, "n": 1.0}
    # Without MODELS, the one model's prediction at the record's top level, as the stream writes it.
    assert "models" not in record
    entry = record
    assert entry["prediction"] == {
        "value": answer["prediction"],
        "proba": [[label, p] for label, p in answer["probabilities"].items()],
    }
    assert entry["model_version"] == 1 and entry["model_samples"] == 20
    assert record["served"] == {"cached": None, "fallback": None, "rollout": None}

    # The join takes it like a prediction of the stream: the label makes a served example.
    learned = []
    join = Join(Contract(), MemoryTable(), learning_lanes(lambda example: learned.append(example) or True))

    join.on_predictions(0, [Record("app-predictions", 0, 0, b"order-1", orjson.dumps(record), (), None)])
    join.on_labels(
        0, [Record("labels", 0, 0, b"order-1", orjson.dumps({"event_id": "order-1", "label": True}), (), None)]
    )
    [example] = learned
    assert isinstance(example, Example) and example.served and example.features == {"a": 0.0, "n": 1.0}
    assert example.prediction == Prediction(answer["prediction"], answer["probabilities"])


async def test_a_repeated_id_is_answered_but_logged_once_and_the_answer_says_so():
    predictor, log = served()
    first = await predictor.predict("card-1", {"a": 0.0}, "order-1")
    again = await predictor.predict("card-1", {"a": 1.0}, "order-1")
    assert first["logged"] == "queued" and again["logged"] == "duplicate"
    assert again["prediction"] is not None
    assert len(log._buffer) == 1 and log._buffer[0][1]["features"]["a"] == 0.0  # the first one wins


async def test_a_cached_answer_is_logged_with_the_classes_the_model_learned():
    predictor, log = served()
    await predictor.predict("card-1", {"a": 0.0}, "order-1")
    cached = await predictor.predict("card-1", {"a": 0.0}, "order-2")
    assert cached["cached"] == "l1" and cached["logged"] == "queued"
    # JSON turned the class True into the key "true" in the cache: the log has the class back.
    labels = [label for label, _ in log._buffer[1][1]["prediction"]["proba"]]
    assert sorted(labels) == [False, True]


async def test_a_full_buffer_leaves_the_prediction_unlogged_and_counted_never_refused():
    predictor, _ = served(buffer=2)
    before = unlogged("buffer_full")
    answers = [await predictor.predict("card-1", {"a": float(i)}, f"order-{i}") for i in range(3)]
    assert [a["logged"] for a in answers] == ["queued", "queued", "unlogged"]
    assert all(a["prediction"] is not None for a in answers)
    assert unlogged("buffer_full") == before + 1


async def test_before_kafka_is_reached_a_served_prediction_is_answered_and_counted_unlogged():
    log = ServedPredictionLog(lambda: None, "app-predictions", 4)
    before = unlogged("kafka")
    assert log.log("order-1", {"event_id": "order-1"}) == "unlogged" and not log._buffer
    assert unlogged("kafka") == before + 1


async def test_without_an_id_nothing_is_logged_and_the_answer_is_unchanged():
    predictor, log = served()
    answer = await predictor.predict("card-1", {"a": 0.0})
    assert "event_id" not in answer and "logged" not in answer and not log._buffer


def test_predict_routes_take_an_event_id_under_the_rules_of_event_ids(tmp_path):
    settings = Settings.from_env({"REDIS_URL": "", "STATE_DIR": str(tmp_path), "MAX_ID_LENGTH": "8"})
    runtime = Runtime.in_process(settings, FixedModel(OnlineModel("logreg")), {})

    async def start():
        return runtime

    with TestClient(create_api(start)) as client:
        ok = client.post("/predict", json={"entity_id": "a", "features": {}, "event_id": 7}).json()
        assert ok["event_id"] == "7" and ok["logged"] == "unlogged"  # no Kafka in this process
        for bad in ("", True, "x" * 9, 1.5):
            refused = client.post("/predict", json={"entity_id": "a", "features": {}, "event_id": bad})
            assert refused.status_code == 422 and refused.json()["field"] == "event_id", bad
        rows = [{"entity_id": "a", "features": {}, "event_id": "r-1"}, {"entity_id": "b", "features": {}}]
        results = client.post("/predict/batch", json={"rows": rows}).json()["results"]
        assert results[0]["event_id"] == "r-1" and "event_id" not in results[1]
        refused = client.post("/predict/batch", json={"rows": [rows[1], {**rows[0], "event_id": "x" * 9}]})
        assert refused.json()["field"] == "rows[1].event_id"


def test_post_labels_checks_each_label_against_the_task_and_the_token(tmp_path):
    settings = Settings.from_env({"REDIS_URL": "", "STATE_DIR": str(tmp_path), "LABELS_TOKEN": "t0ken"})
    runtime = Runtime.in_process(settings, FixedModel(OnlineModel("logreg")), {})
    sent = []

    async def send_labels(labels):
        sent.extend(labels)
        return len(labels)

    runtime.send_labels = send_labels

    async def start():
        return runtime

    body = {"labels": [{"event_id": "o-1", "label": True}, {"event_id": 2, "label": 0}]}
    with TestClient(create_api(start)) as client:
        assert client.post("/labels", json=body).status_code == 401
        assert client.post("/labels", json=body, headers={"authorization": "Bearer nope"}).status_code == 403
        auth = {"authorization": "Bearer t0ken"}
        accepted = client.post("/labels", json=body, headers=auth)
        assert accepted.status_code == 202 and accepted.json() == {"accepted": 2}
        assert sent == [("o-1", True), ("2", False)]  # 0/1 are a binary model's false/true
        wrong = client.post(
            "/labels", json={"labels": [body["labels"][0], {"event_id": "o-3", "label": 2}]}, headers=auth
        )
        assert wrong.status_code == 422 and wrong.json()["field"] == "labels[1].label"
        assert "binary" in wrong.json()["error"]
        assert client.post("/labels", json={"labels": []}, headers=auth).status_code == 422
        assert client.post("/labels", json={"labels": [{"event_id": "x"}] * 1001}, headers=auth).status_code == 422
        assert len(sent) == 2


async def test_a_canary_answer_is_logged_with_the_challengers_version():
    champion, challenger = trained_model(), trained_model(40)
    challenger.version = 7

    class Canary:  # a canary rollout that answers every entity
        def champion(self):
            return champion

        def canary(self, entity_id):
            return challenger

        def age_seconds(self):
            return 0.0

    log = ServedPredictionLog(lambda: object(), "app-predictions", 1)
    predictor = Predictor(Canary(), {}, None, DeadlineBreaker(1.0, 60), log)
    answer = await predictor.predict("card-1", {"a": 1.0}, "order-1")
    assert answer["rollout"] == "canary" and answer["model"]["version"] == 7
    [(_, record, _)] = log._buffer
    assert record["model_version"] == 7 and record["model_samples"] == 40


async def test_two_named_models_asked_about_one_event_are_both_logged():
    log = ServedPredictionLog(lambda: object(), "app-predictions", 1)
    entities = {"card-1": apply_event(None, 1.0, {"a": 1.0}, REGISTRY_N.aggregates)}
    first = Predictor(trained_model(), entities, None, DeadlineBreaker(1.0, 60), log, "fraud", scoped=True)
    second = Predictor(trained_model(), entities, None, DeadlineBreaker(1.0, 60), log, "fraud_tree", scoped=True)
    assert (await first.predict("card-1", {}, "order-1"))["logged"] == "queued"
    assert (await second.predict("card-1", {}, "order-1"))["logged"] == "queued"
    assert (await second.predict("card-1", {}, "order-1"))["logged"] == "duplicate"
    assert [list(record["models"]) for _, record, _ in log._buffer] == [["fraud"], ["fraud_tree"]]
