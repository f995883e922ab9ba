"""Cache keys, the fallback chain and the deadline breaker, without Kafka or Redis."""

import math
import tracemalloc

import pytest
from prometheus_client import REGISTRY

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


class FakeClock:
    def __init__(self):
        self.now = 0.0

    def __call__(self):
        return self.now


def predictor(model=None, entities=None, cache=True, deadline=1.0, clock=None):
    return Predictor(
        model or trained_model(),
        entities if entities is not None else {},
        PredictionCache(L1Cache(100, 60), None) if cache else None,
        DeadlineBreaker(deadline, cooldown_seconds=60, clock=clock or FakeClock()),
    )


def learn_prior(model, labels):
    for y in labels:
        model.prior.learn_one({}, y)
    model.samples_learned = len(labels)


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


async def test_the_l1_cache_holds_about_the_bytes_it_counts():
    # CACHE_L1_BYTES bounds the cache by the entries' lengths: an answer must not hold more.
    p = predictor()
    p.cache.l1.max_entries = 1000
    tracemalloc.start()
    try:
        before = tracemalloc.get_traced_memory()[0]
        for i in range(500):
            await p.predict(f"u{i}", {"a": 1.0})
        held = tracemalloc.get_traced_memory()[0] - before
    finally:
        tracemalloc.stop()
    counted = p.cache.l1.bytes
    assert len(p.cache.l1._entries) == 500
    assert held < 1.5 * counted, (held, counted)  # orjson's own buffers would be 4 KiB an entry


def test_cache_key_ignores_feature_order_but_not_values():
    key = lambda f: cache_key("m", 1, 5, "u", 3, f)  # noqa: E731
    assert key({"a": 1, "b": 2}) == key({"b": 2, "a": 1})
    assert key({"a": 1}) != key({"a": 2})
    assert cache_key("m", 1, 5, "u", 3, {}) != cache_key("m", 1, 6, "u", 3, {})


class Exploding(OnlineModel):
    def predict(self, x):
        raise RuntimeError("model is broken")


class Slow(OnlineModel):
    """Takes 50 ms of a fake clock per prediction."""

    def __init__(self, name, clock):
        super().__init__(name)
        self.clock = clock
        self.calls = 0

    def predict(self, x):
        self.calls += 1
        self.clock.now += 0.05
        return super().predict(x)


class Broken(OnlineModel):
    """Answers with the prediction it is given, as a model whose weights overflowed would."""

    def __init__(self, name, answer, fallback_name=""):
        super().__init__(name, fallback_name=fallback_name)
        self.answer = answer

    def predict(self, x):
        return self.answer


def model_healthy(model="logreg"):
    return REGISTRY.get_sample_value("rtml_model_healthy", {"model": model})


async def test_model_error_is_answered_by_the_prior_and_flagged():
    model = Exploding("logreg")
    learn_prior(model, (True, True, False))
    answer = await predictor(model).predict("u", {"a": 1.0})
    assert answer["fallback"] == {"reason": "model_error", "source": "prior"}
    assert answer["prediction"] is True
    assert answer["probabilities"][True] == pytest.approx(2 / 3)
    assert answer["cached"] is None


async def test_fallback_answers_are_not_cached():
    p = predictor(Exploding("logreg"))
    await p.predict("u", {"a": 1.0})
    assert (await p.predict("u", {"a": 1.0}))["cached"] is None


async def test_slow_model_opens_the_breaker_and_later_requests_are_fallbacks_until_the_cooldown():
    clock = FakeClock()
    model = Slow("logreg", clock)
    p = predictor(model, cache=False, deadline=0.01, clock=clock)
    first = await p.predict("u", {"a": 1.0})
    assert first["fallback"] is None  # already computed: answered, but the breaker opens
    second = await p.predict("u", {"a": 1.0})
    assert second["fallback"] == {"reason": "deadline", "source": "default"}
    assert second["prediction"] is None and model.calls == 1  # the slow model was not asked
    clock.now += 60
    third = await p.predict("u", {"a": 1.0})
    assert third["fallback"] is None and model.calls == 2


def test_breaker_opens_only_beyond_the_deadline_and_closes_after_the_cooldown():
    clock = FakeClock()
    breaker = DeadlineBreaker(0.05, cooldown_seconds=5, clock=clock)
    breaker.record(0.05)
    assert not breaker.is_open
    breaker.record(0.051)
    assert breaker.is_open
    clock.now = 4.999
    assert breaker.is_open
    clock.now = 5.0
    assert not breaker.is_open


@pytest.mark.parametrize(
    ("name", "answer"),
    [
        ("logreg", Prediction(True, {True: math.nan, False: math.nan})),
        ("logreg", Prediction(True, {True: math.inf, False: 0.0})),
        ("logreg", Prediction(True, {True: None, False: 1.0})),
        ("logreg", Prediction(None, {True: 0.5, False: 0.5})),
        ("linreg", Prediction(math.nan)),
        ("linreg", Prediction(-math.inf)),
    ],
)
async def test_a_broken_answer_is_a_flagged_model_error_fallback(name, answer):
    model = Broken(name, answer)
    learn_prior(model, (True, True, False) if name == "logreg" else (1.0, 2.0))
    p = predictor(model)
    served = await p.predict("u", {"a": 1.0})
    assert served["fallback"] == {"reason": "model_error", "source": "prior"}
    if name == "logreg":
        assert served["prediction"] is True
        assert served["probabilities"] == pytest.approx({True: 2 / 3, False: 1 / 3})
    else:
        assert served["prediction"] == 1.5 and served["probabilities"] is None
    assert not p.healthy and model_healthy() == 0
    assert (await p.predict("u", {"a": 1.0}))["cached"] is None  # never cached


async def test_a_classifier_answer_without_probabilities_is_sound():
    p = predictor(Broken("logreg", Prediction(True)), cache=False)
    assert (await p.predict("u", {"a": 1.0}))["fallback"] is None and p.healthy


async def test_health_comes_back_with_the_next_sound_prediction():
    model = Broken("logreg", Prediction(True, {True: math.nan, False: math.nan}))
    p = predictor(model, cache=False)
    assert p.healthy and model_healthy() == 1  # healthy until a prediction says otherwise
    await p.predict("u", {"a": 1.0})
    assert not p.healthy
    model.answer = Prediction(True, {True: 0.9, False: 0.1})
    await p.predict("u", {"a": 1.0})
    assert p.healthy and model_healthy() == 1


async def test_an_exception_makes_the_model_unhealthy():
    p = predictor(Exploding("logreg"), cache=False)
    await p.predict("u", {"a": 1.0})
    assert not p.healthy and model_healthy() == 0


async def test_a_broken_fallback_model_falls_through_to_the_prior():
    model = Broken("linreg", Prediction(math.nan), fallback_name="linreg")
    for y in (1.0, 3.0):
        model.learn({"a": 1.0}, y, Prediction(None))
    model.fallback.predict_one = lambda x: math.inf  # its weights overflowed
    served = await predictor(model, cache=False).predict("u", {"a": 1.0})
    assert served["fallback"] == {"reason": "model_error", "source": "prior"}
    assert served["prediction"] == 2.0


async def test_a_broken_prior_falls_through_to_the_default():
    model = Broken("linreg", Prediction(math.nan))
    model.samples_learned = 1
    model.prior.predict_one = lambda x: math.nan
    served = await predictor(model, cache=False).predict("u", {"a": 1.0})
    assert served["fallback"] == {"reason": "model_error", "source": "default"}
    assert served["prediction"] is None and served["probabilities"] is None


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
