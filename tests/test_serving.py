"""Cache keys, the fallback chain and the deadline breaker, without Kafka or Redis."""

import time

import pytest

from engine.cache import L1Cache, PredictionCache, cache_key
from engine.serving import DeadlineBreaker, Predictor, dumps_json
from models.online import OnlineModel, Prediction
from streams.features import apply_event


def trained_model(n=20):
    model = OnlineModel("logreg")
    for i in range(n):
        x = {"a": float(i % 2)}
        model.learn(x, i % 2 == 0, model.predict(x))
    return model


def predictor(model=None, entities=None, cache=True, deadline=1.0):
    return Predictor(
        model or trained_model(),
        entities if entities is not None else {},
        PredictionCache(L1Cache(100, 60), None) if cache else None,
        DeadlineBreaker(deadline, cooldown_seconds=60),
    )


async def test_second_identical_request_is_an_l1_hit_with_the_same_answer():
    p = predictor()
    first = await p.predict("u", {"a": 1.0})
    second = await p.predict("u", {"a": 1.0})
    assert first["cached"] is None and second["cached"] == "l1"
    assert second["prediction"] == first["prediction"]
    # What the client receives is the same JSON.
    same_fields = ("prediction", "probabilities", "model")
    assert dumps_json({k: second[k] for k in same_fields}) == dumps_json({k: first[k] for k in same_fields})


async def test_learning_or_a_feature_update_is_never_hidden_by_the_cache():
    model = trained_model()
    entities = {"u": apply_event(None, 1.0, {}, [])}
    p = predictor(model, entities)
    await p.predict("u", {"a": 1.0})
    x = {"a": 1.0}
    model.learn(x, True, model.predict(x))  # the model moved on
    assert (await p.predict("u", {"a": 1.0}))["cached"] is None
    entities["u"] = apply_event(entities["u"], 2.0, {}, [])  # the entity's features moved on
    assert (await p.predict("u", {"a": 1.0}))["cached"] is None
    assert (await p.predict("u", {"a": 1.0}))["cached"] == "l1"


def test_cache_key_ignores_feature_order_but_not_values():
    key = lambda f: cache_key("m", 1, 5, "u", 3, f)  # noqa: E731
    assert key({"a": 1, "b": 2}) == key({"b": 2, "a": 1})
    assert key({"a": 1}) != key({"a": 2})
    assert cache_key("m", 1, 5, "u", 3, {}) != cache_key("m", 1, 6, "u", 3, {})


def test_l1_is_bounded_and_expires():
    l1 = L1Cache(max_entries=2, ttl_seconds=10)
    l1.set("a", b"1", now=0)
    l1.set("b", b"2", now=0)
    l1.set("c", b"3", now=0)
    assert l1.get("a", now=1) is None and len(l1) == 2
    assert l1.get("b", now=11) is None


class Exploding(OnlineModel):
    def predict(self, x):
        raise RuntimeError("model is broken")


class Slow(OnlineModel):
    def predict(self, x):
        time.sleep(0.05)
        return super().predict(x)


async def test_model_error_is_answered_by_the_prior_and_flagged():
    model = Exploding("logreg")
    for y in (True, True, False):
        model.prior.learn_one({}, y)
    model.samples_learned = 3
    answer = await predictor(model).predict("u", {"a": 1.0})
    assert answer["fallback"] == {"reason": "model_error", "source": "prior"}
    assert answer["prediction"] is True
    assert answer["probabilities"][True] == pytest.approx(2 / 3)
    assert answer["cached"] is None


async def test_fallback_answers_are_not_cached():
    p = predictor(Exploding("logreg"))
    await p.predict("u", {"a": 1.0})
    assert (await p.predict("u", {"a": 1.0}))["cached"] is None


async def test_slow_model_opens_the_breaker_and_later_requests_are_fast_fallbacks():
    p = predictor(Slow("logreg"), cache=False, deadline=0.01)
    first = await p.predict("u", {"a": 1.0})
    assert first["fallback"] is None  # already computed: answered, but the breaker opens
    started = time.perf_counter()
    second = await p.predict("u", {"a": 1.0})
    assert time.perf_counter() - started < 0.01
    assert second["fallback"] == {"reason": "deadline", "source": "default"}
    assert second["prediction"] is None


async def test_untrained_tree_falls_back_to_default():
    answer = await predictor(OnlineModel("hoeffding"), cache=False).predict("u", {"a": 1.0})
    assert answer["fallback"] == {"reason": "model_not_trained", "source": "default"}


def test_regression_prior_is_the_mean():
    model = OnlineModel("linreg")
    for y in (1.0, 2.0, 6.0):
        model.learn({"a": 1.0}, y, model.predict({"a": 1.0}))
    assert model.predict_prior().value == 3.0


async def test_fallback_model_answers_before_the_prior():
    model = Exploding("logreg", fallback_name="hoeffding")
    for i in range(200):
        x = {"a": float(i % 2)}
        model.learn(x, i % 2 == 0, Prediction(None))
    answer = await predictor(model, cache=False).predict("u", {"a": 0.0})
    assert answer["fallback"] == {"reason": "model_error", "source": "fallback_model"}
    assert answer["model"]["name"] == "hoeffding"
    assert answer["prediction"] is True  # the tree learned a == 0 -> True


def test_fallback_model_must_share_the_task():
    with pytest.raises(ValueError, match="binary"):
        OnlineModel("logreg", fallback_name="linreg")
