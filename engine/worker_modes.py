"""What a stream worker predicts with and hands its examples to: one interface, two modes.

- `EmbeddedLearner` (the embedded default): the learner lives in the worker. It predicts
  with the live model (exact against River's progressive_val_score), learns each example as
  the batch goes, and after the batch's sends logs, snapshots and publishes.
- `LearnerApart` (scale-out): `engine learn` runs elsewhere. The worker predicts unlabelled
  events with the latest model version published on the models topic; a labelled event's
  example goes unpredicted, and the learner predicts it right before learning it. The
  batch's examples go to the examples topic for the learner.
"""

from __future__ import annotations

import logging
from collections.abc import Callable
from contextlib import AbstractAsyncContextManager, nullcontext
from typing import Any, Protocol

from aiokafka import AIOKafkaProducer

from engine.learning import LearningService
from engine.settings import Settings
from models.errors import ModelError
from models.examples import Example
from models.learner import BatchOutcome
from models.online import Prediction, checked_predict
from streams.model_topic import ModelReplica

log = logging.getLogger(__name__)


class WorkerMode(Protocol):
    """The learner's half of a stream worker (streams.events.ServingModels is its model)."""

    fresh_predictions: bool  # the predictions are the learner's own, made again exactly on a heal
    predicts_labelled: bool  # False: the learner predicts labelled events itself (streams/events.py)

    @property
    def version(self) -> int: ...
    @property
    def samples(self) -> int: ...
    def admit(self, x: dict[str, Any]) -> tuple[dict[str, Any], int]: ...
    def predict(self, x: dict[str, Any]) -> Prediction: ...  # raises ModelError
    def predict_challenger(self, x: dict[str, Any]) -> Prediction | None: ...
    def learn(self, example: Example) -> bool: ...
    def turn(self) -> AbstractAsyncContextManager[Any]: ...
    def end_batch(self) -> BatchOutcome: ...
    async def batch_sent(self, outcome: BatchOutcome, examples_end: int | None, encoded: list[bytes]) -> None: ...
    # `producer`: what the learner publishes its model versions with (its own connection).
    async def start(self, producer: AIOKafkaProducer) -> None: ...
    async def stop(self) -> None: ...


class EmbeddedLearner:
    """The learner inside the worker: predictions from the model of this instant."""

    fresh_predictions = True
    predicts_labelled = True

    def __init__(self, service: LearningService) -> None:
        self.service = service
        self.learner = service.learner
        # The learner's own methods, without a call layer of ours: each runs once per event
        # and model. (Its model can be replaced, a promotion: the model's methods cannot be.)
        self.predict: Callable[[dict[str, Any]], Prediction] = self.learner.predict
        self.learn: Callable[[Example], bool] = self.learner.learn

    @property
    def version(self) -> int:
        return self.learner.model.version

    @property
    def samples(self) -> int:
        return self.learner.model.samples_learned

    def admit(self, x: dict[str, Any]) -> tuple[dict[str, Any], int]:
        return self.learner.model.admit(x)

    def predict_challenger(self, x: dict[str, Any]) -> Prediction | None:
        rollout = self.learner.rollout
        return rollout.predict(x) if rollout is not None else None

    def turn(self) -> AbstractAsyncContextManager[Any]:
        # The learner's timers and admin commands run between batches.
        return self.service.lock

    def end_batch(self) -> BatchOutcome:
        return self.learner.end_batch()

    async def batch_sent(self, outcome: BatchOutcome, examples_end: int | None, encoded: list[bytes]) -> None:
        offset = examples_end if examples_end is not None else self.service.examples_offset
        await self.service.batch_done(outcome, offset, encoded)

    async def start(self, producer: AIOKafkaProducer) -> None:
        await self.service.start(producer)

    async def stop(self) -> None:
        await self.service.stop()


class LearnerApart:
    """`engine learn` runs apart: predictions from the latest published version."""

    fresh_predictions = False
    # A labelled event's prediction would come from a published copy, behind the learner by up
    # to a publish interval, and no one is answered with it: the learner makes it instead,
    # with the model that learns the event next, as progressive validation does.
    predicts_labelled = False

    def __init__(self, settings: Settings) -> None:
        """`settings`: the model's own (Settings.for_model)."""
        self.settings = settings
        self.replica = ModelReplica(settings.kafka_bootstrap, settings.models_topic, settings.model_key_prefix)
        self._examples: list[Example] = []

    @property
    def version(self) -> int:
        champion = self.replica.champion
        return champion.version if champion else 0

    @property
    def samples(self) -> int:
        champion = self.replica.champion
        return champion.samples_learned if champion else 0

    def admit(self, x: dict[str, Any]) -> tuple[dict[str, Any], int]:
        # Every name goes to the learner, which admits names in its one order: a published copy
        # knows only the names of its version, and would keep a new feature from ever being
        # learned. The copy leaves out, when it predicts, the names it does not know.
        return x, 0

    def predict(self, x: dict[str, Any]) -> Prediction:
        champion = self.replica.champion
        if champion is None:
            raise ModelError("no model published yet")
        return checked_predict(champion.model, x)

    def predict_challenger(self, x: dict[str, Any]) -> Prediction | None:
        challenger = self.replica.challenger
        if challenger is None:
            return None
        try:
            return checked_predict(challenger.model, x)
        except ModelError:  # the learner counts a challenger's failures
            return None

    def learn(self, example: Example) -> bool:
        self._examples.append(example)
        return True

    def turn(self) -> AbstractAsyncContextManager[Any]:
        return nullcontext()

    def end_batch(self) -> BatchOutcome:
        examples, self._examples = self._examples, []
        return BatchOutcome(learned=examples)

    async def batch_sent(self, outcome: BatchOutcome, examples_end: int | None, encoded: list[bytes]) -> None:
        return None  # the learner takes them from the examples topic

    async def start(self, producer: AIOKafkaProducer) -> None:
        await self.replica.start()
        if self.replica.champion is None:
            log.warning(
                "waiting for the learner of model %s (python -m engine learn) to publish it on %s",
                self.settings.model.name,
                self.replica.topic,
            )
        await self.replica.wait_for_champion()

    async def stop(self) -> None:
        await self.replica.stop()
