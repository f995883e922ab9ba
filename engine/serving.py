"""From a validated request to an answer: cache, primary model, deadline breaker, fallback chain
(primary -> fallback model, if configured -> prior -> default).

The primary River model predicts inline on the event loop: it takes microseconds, and a
hop to a thread would cost more than it saves. A prediction slower than the deadline
opens a breaker, so the requests that follow are answered by the fallback at once until a
cool-down passes; a model that raises, or answers with a missing, NaN or infinite number,
is answered by the fallback for that request. Every link of the chain is held to the same
check, so a broken answer is never served as a normal one. Fallback answers are flagged
and never cached.
"""

from __future__ import annotations

import numbers
import time
from collections.abc import Callable
from typing import Any, Protocol, TypeGuard

import orjson

from engine import metrics
from engine.cache import PredictionCache, cache_key
from engine.prediction_log import ServedPredictionLog
from models.errors import ModelError
from models.json_bytes import kept_json
from models.online import OnlineModel, Prediction, checked_predict
from models.rollout import canary_answers
from streams.features import model_features
from streams.model_topic import ModelReplica


class ModelSource(Protocol):
    """Where a serving process gets its models from."""

    def champion(self) -> OnlineModel | None: ...
    def canary(self, entity_id: str) -> OnlineModel | None: ...
    def age_seconds(self) -> float | None: ...


class FixedModel:
    """One model held in this process (tests, benchmarks): never ages, no rollout."""

    def __init__(self, model: OnlineModel) -> None:
        self.model = model

    def champion(self) -> OnlineModel | None:
        return self.model

    def canary(self, entity_id: str) -> OnlineModel | None:
        return None

    def age_seconds(self) -> float | None:
        return 0.0


class PublishedModels:
    """The latest versions on the models topic. A canary challenger answers the share of
    entities whose hash falls below its share: the same entities in every process."""

    def __init__(self, replica: ModelReplica) -> None:
        self.replica = replica

    def champion(self) -> OnlineModel | None:
        version = self.replica.champion
        return None if version is None else version.model

    def canary(self, entity_id: str) -> OnlineModel | None:
        challenger = self.replica.challenger
        if challenger is None or not canary_answers(challenger.info.mode, challenger.info.share, entity_id):
            return None
        return challenger.model

    def age_seconds(self) -> float | None:
        confirmed = self.replica.confirmed_at
        return None if confirmed is None else max(0.0, time.time() - confirmed)


class DeadlineBreaker:
    """`clock` returns monotonic seconds; predictions are timed with it too, so tests can
    make a model slow without sleeping."""

    def __init__(
        self, deadline_seconds: float, cooldown_seconds: float, clock: Callable[[], float] = time.monotonic
    ) -> None:
        self.deadline_seconds = deadline_seconds
        self.cooldown_seconds = cooldown_seconds
        self.clock = clock
        self._open_until = 0.0

    @property
    def is_open(self) -> bool:
        return self.clock() < self._open_until

    def record(self, elapsed: float) -> None:
        if elapsed > self.deadline_seconds:
            metrics.DEADLINE_EXCEEDED.inc()
            self._open_until = self.clock() + self.cooldown_seconds


def is_sound(prediction: Prediction | None, is_classifier: bool) -> TypeGuard[Prediction]:
    """A fallback's answer fit to serve: an answer at all (a class, or a score that is a
    number), held to the one rule of a usable answer (Prediction.non_finite, as
    checked_predict holds the primary). orjson writes NaN as null: without this a broken
    model would answer `"probabilities": {"true": null}` as if all were well."""
    if prediction is None or prediction.value is None or prediction.non_finite() is not None:
        return False
    value = prediction.value
    return is_classifier or (isinstance(value, numbers.Real) and not isinstance(value, bool))


def _answer(model: OnlineModel, prediction: Prediction) -> dict[str, Any]:
    return {
        "prediction": prediction.value,
        "probabilities": prediction.proba,
        "model": {"name": model.name, "version": model.version},
    }


def _classes_restored(proba: dict[Any, float], model: OnlineModel) -> dict[Any, float]:
    """A cached answer's probabilities went through JSON, whose keys are strings: `true`
    was the class True. Maps them back to the classes the model learned."""
    known = model.predict_prior().proba or {}
    by_key = {orjson.loads(dumps_json({label: 0})).popitem()[0]: label for label in known}
    return {by_key.get(key, key): p for key, p in proba.items()}


JSON_OPTIONS = orjson.OPT_NON_STR_KEYS | orjson.OPT_SERIALIZE_NUMPY


def dumps_json(value: Any) -> bytes:
    """Class labels can be booleans or numbers (JSON keys must be strings); River returns numpy floats."""
    return orjson.dumps(value, option=JSON_OPTIONS)


class Predictor:
    def __init__(
        self,
        models: ModelSource | OnlineModel,
        entities: Any,
        cache: PredictionCache | None,
        breaker: DeadlineBreaker,
        served_log: ServedPredictionLog | None = None,
        name: str = "",
        scoped: bool = False,
    ) -> None:
        """`name`: the named model this predictor answers for (its series, cache keys and
        served records carry it); empty: named after the model's factory. `scoped`: one of
        MODELS (its served records name it), not the single model of an engine without MODELS."""
        self.models = FixedModel(models) if isinstance(models, OnlineModel) else models
        self.named = name
        self.scoped = scoped
        self.entities = entities
        self.cache = cache
        self.breaker = breaker
        self.served_log = served_log
        self._healthy: bool | None = None
        self._set_healthy(True)

    @property
    def name(self) -> str:
        if self.named:
            return self.named
        model = self.models.champion()
        return model.name if model is not None else ""

    @property
    def model(self) -> OnlineModel | None:
        return self.models.champion()

    @property
    def healthy(self) -> bool:
        """False from a primary prediction that raised or was not finite until the next sound one."""
        return self._healthy is True

    def _set_healthy(self, healthy: bool) -> None:
        if healthy != self._healthy:  # a gauge write is a locked mmap write: only on a change
            metrics.MODEL_HEALTHY.labels(self.name).set(1 if healthy else 0)
        self._healthy = healthy

    async def predict(self, entity_id: str, features: dict[str, Any], event_id: str | None = None) -> dict[str, Any]:
        """The answer for the entity now; with an `event_id`, also logged for its label to
        teach the model (the response says whether it was)."""
        answer, x = await self._predict(entity_id, features)
        if event_id is not None:
            answer["event_id"] = event_id
            answer["logged"] = self._log_served(event_id, entity_id, features, x, answer)
        return answer

    def _log_served(
        self,
        event_id: str,
        entity_id: str,
        features: dict[str, Any],
        x: dict[str, Any] | None,
        answer: dict[str, Any],
    ) -> str:
        """Logs the served answer with `x`, the features the model saw (None when it did not
        predict: a cached answer, or no model yet)."""
        if self.served_log is None:
            metrics.SERVED_UNLOGGED.labels("no_log").inc()
            return "unlogged"
        # The model that answered: a canary's challenger for the entities it answers.
        model = self.models.canary(entity_id) if answer["rollout"] == "canary" else None
        model = model or self.models.champion()
        if x is None:
            state = self.entities.get(entity_id)
            x = model_features(features, state["values"] if state else {})
            if model is not None:
                x, _ = model.admit(x)  # the names the model would have seen
        proba = answer["probabilities"]
        if proba and answer["cached"] and model is not None:
            proba = _classes_restored(proba, model)
        now = time.time()
        entry = {
            "prediction": Prediction(answer["prediction"], proba).to_record(),
            "model_version": model.version if model is not None else 0,
            "model_samples": model.samples_learned if model is not None else 0,
        }
        record = {
            "event_id": event_id,
            "entity_id": entity_id,
            "ts": now,
            "features": x,
            "predicted_at": now,
            "served": {"cached": answer["cached"], "fallback": answer["fallback"], "rollout": answer["rollout"]},
        }
        if self.scoped:
            record["models"] = {self.name: entry}  # the one model that answered: its label teaches it alone
        else:
            record.update(entry)  # the single model of an engine without MODELS: the record as it always was
        return self.served_log.log(event_id, record, self.name)

    async def _predict(self, entity_id: str, features: dict[str, Any]) -> tuple[dict[str, Any], dict[str, Any] | None]:
        """The answer, and the features the model predicted from (None when it did not)."""
        state = self.entities.get(entity_id)
        feature_version = state["version"] if state else None
        freshness = {
            "entity_known": state is not None,
            "feature_version": feature_version,
            "feature_age_seconds": max(0.0, time.time() - state["updated_at"]) if state else None,
            "model_age_seconds": self.models.age_seconds(),
        }
        champion = self.models.champion()
        if champion is None:
            metrics.FALLBACKS_OF(self.name, "model_not_loaded").inc()
            return {
                "entity_id": entity_id,
                "prediction": None,
                "probabilities": None,
                "model": None,
                "cached": None,
                "fallback": {"reason": "model_not_loaded", "source": "default"},
                "rollout": None,
                **freshness,
            }, None
        challenger = self.models.canary(entity_id)
        canary = challenger is not None
        model = challenger if challenger is not None else champion
        if canary:
            metrics.ROLLOUT_SERVED_OF(self.name).inc()
        key = None
        if self.cache is not None:
            key = cache_key(
                f"{self.name}/{model.name}", model.version, model.samples_learned, entity_id, feature_version, features
            )
            cached, tier = await self.cache.get(key)
            if cached is not None:
                return {
                    "entity_id": entity_id,
                    **orjson.loads(cached),
                    "cached": tier,
                    "fallback": None,
                    "rollout": "canary" if canary else None,
                    **freshness,
                }, None

        # Left out once here: the model's own predict then finds nothing new to leave out.
        x, _ = model.admit(model_features(features, state["values"] if state else {}))
        answer, fallback = self._primary_or_fallback(model, x)
        if key is not None and fallback is None:
            assert self.cache is not None  # a key is only made for a cache
            self.cache.put(key, kept_json(answer, JSON_OPTIONS))
        return {
            "entity_id": entity_id,
            **answer,
            "cached": None,
            "fallback": fallback,
            "rollout": "canary" if canary else None,
            **freshness,
        }, x

    def _primary_or_fallback(
        self, model: OnlineModel, x: dict[str, Any]
    ) -> tuple[dict[str, Any], dict[str, str] | None]:
        if self.breaker.is_open:
            return self._fallback("deadline", x)
        started = self.breaker.clock()
        try:
            prediction = checked_predict(model, x)
        except ModelError:  # a broken model is answered by the fallback, never a 5xx
            self._set_healthy(False)
            return self._fallback("model_error", x)
        finally:
            elapsed = self.breaker.clock() - started
            metrics.PREDICTION_SECONDS.observe(elapsed)
            self.breaker.record(elapsed)
            if self.cache is not None:
                self.cache.record_prediction(elapsed)
        if prediction.value is None and not prediction.proba:
            return self._fallback("model_not_trained", x)
        self._set_healthy(True)
        return _answer(model, prediction), None

    def _fallback(self, reason: str, x: dict[str, Any]) -> tuple[dict[str, Any], dict[str, str]]:
        metrics.FALLBACKS_OF(self.name, reason).inc()
        model = self.models.champion()
        assert model is not None  # a fallback is only asked for once a model answered or failed
        prediction = model.predict_fallback(x)
        if is_sound(prediction, model.is_classifier):
            source, name = "fallback_model", model.fallback_name
        else:
            prediction = model.predict_prior()
            if not is_sound(prediction, model.is_classifier):
                prediction = Prediction(None)
            source = name = "prior" if prediction.value is not None else "default"
        answer = _answer(model, prediction)
        answer["model"] = {"name": name, "version": model.version}
        return answer, {"reason": reason, "source": source}
