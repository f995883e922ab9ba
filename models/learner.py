"""The one sequential learner of a model: learns each labelled example once, and cannot be poisoned.

Poisoning: an example that passes validation can still break a River model (a value near
1e308 overflows a scaler's variance into NaN weights, or makes a Hoeffding tree raise on
every later example). The learner keeps the model restorable to just before any example
it learned since its last checkpoint:

- a checkpoint is a pickle of the model, taken every `interval` examples, where the
  interval is chosen so that pickling costs about `checkpoint_budget` of the time spent
  per example (at least `min_interval`): cheap for a linear model, rarer for a forest;
- the examples since the checkpoint are kept (references, no copies);
- the model is verified by predicting on inputs it just learned: the last one at the end
  of every batch, the last `verify_inputs` ones before a checkpoint, a snapshot or a
  publish, and any input whose prediction came out NaN or infinite;
- when learning raises, or a verification fails, the learner heals: it restores the
  checkpoint and relearns the examples since, verifying each on its own input; an example
  after which the model fails is the culprit. The model is put back as it was before it
  (its metrics too), it is reported as diverged, and learning goes on.

Duplicates: an example is learned once, whatever redelivers it (a rebalance replay, a
restart). It is known by the offset of the record that completed it, per source
partition, and by its event id within a window.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

import msgspec
import orjson

from models.errors import ModelError
from models.examples import INLINE, Example
from models.guard import MODEL_ERROR, Refusal, heal, health
from models.online import Features, OnlineModel, Prediction, checked_predict
from models.recent_ids import RecentIds
from models.rollout import Rollout


@dataclass
class BatchOutcome:
    """What the learner did since the last batch ended."""

    learned: list[Example] = field(default_factory=list)
    refused: list[Refusal] = field(default_factory=list)  # left out: learning raised, or broke the model
    # Per example with its label inline: how many samples this learner had learned that the
    # model which predicted it had not (0 when the learner predicted it itself).
    model_lags: list[int] = field(default_factory=list)
    duplicates: int = 0


class Learner:
    def __init__(
        self,
        model: OnlineModel,
        *,
        dedupe_window: int = 100_000,
        min_interval: int = 1000,
        max_interval: int = 100_000,
        checkpoint_budget: float = 0.02,
        verify_inputs: int = 32,
        clock: Callable[[], float] = time.perf_counter,
    ) -> None:
        self.model = model
        self.rollout: Rollout | None = None
        self.dedupe_window = dedupe_window
        self.min_interval = min_interval
        self.max_interval = max_interval
        self.checkpoint_budget = checkpoint_budget
        self.verify_inputs = verify_inputs
        self._clock = clock
        self._learned_offsets: dict[tuple[str, int], int] = {}
        self._recent_ids = RecentIds(dedupe_window)
        self._outcome = BatchOutcome()
        self._since_checkpoint: list[Example] = []
        self._interval = min_interval
        self._checkpoint_at = clock()
        self._next_walk = 0.0  # when end_batch may walk the model's whole state again
        self.pickle_seconds = 0.0
        self._take_checkpoint()

    # -- learning -----------------------------------------------------------------------

    def has_learned(self, example: Example) -> bool:
        topic, partition, offset = example.source
        done = self._learned_offsets.get((topic, partition))
        return (done is not None and offset <= done) or example.event_id in self._recent_ids

    def learn(self, example: Example) -> bool:
        """Learns the example; False when it was learned before (or diverged before)."""
        if self.has_learned(example):
            self._outcome.duplicates += 1
            return False
        topic, partition, offset = example.source
        self._learned_offsets[(topic, partition)] = offset  # above the last one: has_learned says so
        self._recent_ids.add(example.event_id)
        if example.learner_predicts:
            predicted = self._predicted(example)
            if predicted is None:
                return False
            example = predicted
        model = self.model
        outcome = self._outcome
        if example.label_source == INLINE:
            outcome.model_lags.append(model.samples_learned - example.model_samples)
        try:
            model.learn(example.features, example.label, example.prediction, served=example.served)
        except Exception:  # noqa: BLE001 - a raising learner may leave partial state: heal
            self._heal(extra=[example])
            return not any(refusal.example.source == example.source for refusal in self._outcome.refused)
        self._since_checkpoint.append(example)
        outcome.learned.append(example)
        if self.rollout is not None:
            self.rollout.learn(example.features, example.label, example.prediction, example.challenger)
        if len(self._since_checkpoint) >= self._interval:
            self._checkpoint_verified()
        return True

    def _predicted(self, example: Example) -> Example | None:
        """The example with this model's prediction for its features, made now, right before
        it learns them (progressive validation, as the embedded worker predicts: exact against
        River's progressive_val_score); None when the model cannot answer for them (refused,
        with the reason a worker would have dead-lettered the event for)."""
        # The names this model sees, admitted (and any left out counted) once, as the embedded
        # worker does before it predicts: predicting and learning then take them as they are.
        x, _ = self.model.admit(example.features)
        try:
            prediction = self.predict(x)
        except ModelError as exc:
            self._outcome.refused.append(Refusal(example, MODEL_ERROR, str(exc)))
            return None
        rollout = self.rollout
        return msgspec.structs.replace(
            example,
            features=x,
            prediction=prediction,
            challenger=rollout.predict(x) if rollout is not None else None,
            model_version=self.model.version,
            model_samples=self.model.samples_learned,
            fresh=True,  # made by this model right before it learns: a heal makes it again
            learner_predicts=False,
        )

    def predict(self, x: Features) -> Prediction:
        """The model's answer for x, healing the model first if it has been poisoned.

        Raises ModelError when the model cannot answer for x itself (and is otherwise fine)."""
        try:
            return checked_predict(self.model, x)
        except ModelError:
            if not self._unhealthy():
                raise  # the model is fine: it cannot answer for this x
        self._heal()
        problem, prediction = self._predict(x)
        if problem is None:
            return prediction
        raise ModelError(problem)

    def end_batch(self) -> BatchOutcome:
        """Checks the model and hands out what happened since the last call: the examples
        learned (to log), those refused (to dead-letter), the duplicates dropped.

        Its answer on the last input is checked every time; its whole state as often as
        the walk costs at most `checkpoint_budget` of the time (every batch for a linear
        model, every few for a grown tree). A poison found a few batches late is undone
        all the same: the checkpoint still precedes it."""
        recent = [e.features for e in self._since_checkpoint[-1:]]
        problem = self.model.divergence(recent) if recent else None
        if problem is None and recent and self._clock() >= self._next_walk:
            started = self._clock()
            problem = health(self.model, recent)
            walked = self._clock()
            self._next_walk = walked + (walked - started) / self.checkpoint_budget
        if problem is not None:
            self._heal()
        outcome, self._outcome = self._outcome, BatchOutcome()
        return outcome

    def verified(self) -> bool:
        """A thorough check before the model leaves the learner (snapshot, publish); heals if needed.

        Checked again only after a heal: a healthy model's check (its whole state walked, and
        32 answers) was made twice, 3.8 % of a `hoeffding` worker's main thread."""
        if self._unhealthy(self.verify_inputs) is None:
            return True
        self._heal()
        return self._unhealthy(self.verify_inputs) is None

    def verified_checkpoint(self) -> bytes | None:
        """The model as it is now, checked as `verified` checks it, pickled as a checkpoint
        taken now: one pickle for the checkpoint and for what leaves the learner (a model
        version), where a tree's pickle takes milliseconds. None when the model stays
        unhealthy after healing."""
        if self._unhealthy(self.verify_inputs):
            self._heal()  # ends with a checkpoint of the healed model
            return self._checkpoint if self._unhealthy(self.verify_inputs) is None else None
        # Taken even when nothing was learned since the last one: the model may have changed
        # otherwise (a promotion renumbers it), and what leaves must be the model as it is.
        self._take_checkpoint()
        return self._checkpoint

    # -- the guard ----------------------------------------------------------------------

    def _predict(self, x: Features) -> tuple[str | None, Prediction]:
        try:
            return None, checked_predict(self.model, x)
        except ModelError as exc:
            return str(exc), Prediction(None)

    def _unhealthy(self, inputs: int = 1) -> str | None:
        return health(self.model, [e.features for e in self._since_checkpoint[-inputs:]])

    def _heal(self, extra: list[Example] | None = None) -> None:
        healing = heal(self.model, self._checkpoint, self._since_checkpoint + (extra or []))
        # Matched by source, never by identity: healing hands back copies of the examples
        # whose prediction it made again.
        culprits = {refusal.example.source for refusal in healing.culprits}
        relearned = {example.source: example for example in healing.kept}
        self._outcome.refused.extend(healing.culprits)
        # What is logged as learned is what the healed model learned: with the prediction made again.
        self._outcome.learned = [relearned.get(e.source, e) for e in self._outcome.learned if e.source not in culprits]
        self._outcome.learned.extend(relearned.get(e.source, e) for e in extra or () if e.source not in culprits)
        self._since_checkpoint = healing.kept
        self._take_checkpoint()

    def _checkpoint_verified(self) -> None:
        if self._unhealthy(self.verify_inputs):
            self._heal()  # ends with a checkpoint of its own
            return
        self._take_checkpoint()

    def _take_checkpoint(self) -> None:
        started = self._clock()
        examples = len(self._since_checkpoint)
        self._checkpoint = self.model.checkpoint()
        pickled = self._clock()
        self.pickle_seconds = pickled - started  # what pickling the model costs now (snapshots and publications use it)
        # Pickling read every object's __dict__, which slows every later attribute read
        # (models/pickling.py): go on with the same state loaded from the checkpoint.
        recent = self._since_checkpoint[-1].features if self._since_checkpoint else ()
        self.model.restore(self._checkpoint, recent)
        cost = self._clock() - started
        if examples:
            # Time per example is measured end to end (everything the process does for one),
            # which only makes checkpoints more frequent than the budget allows, never rarer.
            per_example = max((started - self._checkpoint_at) / examples, 1e-9)
            wanted = cost / (self.checkpoint_budget * per_example)
            self._interval = int(min(self.max_interval, max(self.min_interval, wanted)))
        self._since_checkpoint = []
        self._checkpoint_at = self._clock()

    def replace_model(self, model: OnlineModel) -> None:
        """Serves another model from now on (a promotion, a rollback); it learns from here."""
        self.model = model
        self._since_checkpoint = []
        self._take_checkpoint()

    # -- snapshots ----------------------------------------------------------------------

    def state(self) -> dict[str, Any]:
        """What a snapshot keeps besides the model: the duplicate filters and the rollout.

        The recent ids (up to DEDUPE_WINDOW of them) as one JSON array, in learning order:
        C calls, where a list of 100,000 strings took 16 ms of the loop to copy and pickle."""
        return {
            "learned_offsets": dict(self._learned_offsets),
            "recent_ids": orjson.dumps(list(self._recent_ids)),
            "rollout": self.rollout,
        }

    def restore_state(self, state: dict[str, Any]) -> None:
        self._learned_offsets = dict(state["learned_offsets"])
        # Oldest first: a JSON array; a JSON object of id -> null in snapshots written before
        # 2026-12-06, a list in those written before it was JSON.
        recent = state["recent_ids"]
        self._recent_ids = RecentIds(self.dedupe_window, orjson.loads(recent) if isinstance(recent, bytes) else recent)
        self.rollout = state.get("rollout")
        self._take_checkpoint()

    @property
    def checkpoint_interval(self) -> int:
        return self._interval
