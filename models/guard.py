"""Finding the example that poisoned a model, and putting the model back as it was before it.

A model's state is healthy when no float in it is NaN or infinite (no model of the
factory holds one legitimately: checked on every one of them, fresh and trained) and it
answers finite numbers on the inputs it learned. Poison does not always show at once in
the answers: a value near 1e308 leaves a scaler's variance infinite and the predictions
finite, and the next example turns the weights to NaN. So the state itself is checked.
"""

from __future__ import annotations

import gc
import math
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import msgspec
import numpy as np

from models.examples import Example
from models.online import OnlineModel
from models.pickling import HEAP_TYPE, slot_names

# Why an example was refused (the dead-letter reasons of the same names).
MODEL_ERROR = "model_error"  # learning it raised: the model cannot take these features
MODEL_DIVERGED = "model_diverged"  # after learning it the model's state or answers are not finite


@dataclass(frozen=True)
class Refusal:
    example: Example
    reason: str  # MODEL_ERROR or MODEL_DIVERGED
    detail: str


_ATOMS = (int, str, bytes, bool, type(None))
_ATOM_TYPES = frozenset(_ATOMS)


def non_finite_state(obj: Any) -> str | None:
    """The path of a NaN or infinite float inside obj (attributes, containers, arrays), or None.

    The walk that runs every batch reads each object's attributes as the garbage collector
    sees them (`gc.get_referents`), not through `__dict__`: reading `__dict__` moves a fresh
    object's attributes into a dict, and every later read of them is slower
    (models/pickling.py). Only when it finds one is the walk made again with names, for the
    path."""
    if not _holds_non_finite(obj):
        return None
    return _non_finite_path(obj) or f"{type(obj).__name__}: a NaN or an infinity"


def _holds_non_finite(obj: Any) -> bool:
    seen: set[int] = set()
    stack: list[Any] = [obj]
    kinds = _KINDS
    while stack:
        value = stack.pop()
        kind = kinds.get(type(value))
        if kind is None:
            kind = _kind(type(value))
        if kind == _ATOM or id(value) in seen:
            continue
        seen.add(id(value))
        if kind in _LEAVES:
            if _leaf_problem(value, kind) is not None:
                return True
            continue
        if kind == _MAPPING:
            children: Any = value.values()
        elif kind == _SEQUENCE:
            children = value
        elif kind == _INSTANCE:
            # Its attribute values (or its dict, if one was made), its slots, and its class.
            children = gc.get_referents(value)
        else:  # an object of a class written in C: a function, a partial... as the named walk reads it
            attributes = getattr(value, "__dict__", None)
            children = attributes.values() if attributes else ()
        for child in children:
            child_kind = type(child)
            if child_kind is float:
                if not math.isfinite(child):
                    return True
            elif child_kind not in _ATOM_TYPES:
                stack.append(child)
    return False


def _non_finite_path(obj: Any) -> str | None:
    """Floats are checked where they stand. A grown tree holds a few thousand objects, so the
    walk decides what a type is once per type, not with a chain of isinstance per object,
    and formats nothing on the way: each object on the stack keeps its parent and its key,
    and only the path of the one found is written."""
    seen: set[int] = set()
    # (value, parent entry, key, how the key is written) - the root has no parent.
    stack: list[tuple[Any, Any, Any, str]] = [(obj, None, None, "")]
    kinds = _KINDS
    while stack:
        entry = stack.pop()
        value = entry[0]
        kind = kinds.get(type(value))
        if kind is None:
            kind = _kind(type(value))
        if kind == _ATOM or id(value) in seen:
            continue
        seen.add(id(value))
        if kind in _LEAVES:
            problem = _leaf_problem(value, kind)
            if problem is not None:
                return f"{_path(entry)}{problem}"
            continue
        if kind == _MAPPING:
            items: Any = value.items()
            step = "[{!r}]"
        elif kind == _SEQUENCE:
            items = enumerate(value)
            step = "[{}]"
        else:
            attributes = getattr(value, "__dict__", None)
            slots = slot_names(type(value))
            if slots:
                items = [*(attributes or {}).items(), *((n, getattr(value, n)) for n in slots if hasattr(value, n))]
            else:
                items = attributes.items() if attributes else ()
            step = ".{}"
        for key, child in items:
            child_kind = type(child)
            if child_kind is float:
                if not math.isfinite(child):
                    return f"{_path((child, entry, key, step))} = {child}"
            elif child_kind not in _ATOM_TYPES:
                stack.append((child, entry, key, step))
    return None


_ATOM, _FLOAT, _ARRAY, _NUMPY_SCALAR, _MAPPING, _SEQUENCE, _OBJECT, _INSTANCE = range(8)
_LEAVES = frozenset({_FLOAT, _ARRAY, _NUMPY_SCALAR})


def _leaf_problem(value: Any, kind: int) -> str | None:
    """How a float, a NumPy array or a NumPy scalar is not finite (the end of its path in a
    message), or None when it is."""
    if kind == _FLOAT:
        return None if math.isfinite(value) else f" = {value}"
    if kind == _ARRAY:
        return None if value.dtype.kind not in "fc" or np.isfinite(value).all() else " holds NaN or infinity"
    return None if np.isfinite(value) else f" = {value}"


_KINDS: dict[type, int] = {}


def _kind(kind: type) -> int:
    if issubclass(kind, float):
        found = _FLOAT
    elif issubclass(kind, (*_ATOMS, type)):  # a class: its code, not the model's state
        found = _ATOM
    elif issubclass(kind, np.ndarray):
        found = _ARRAY
    elif issubclass(kind, np.generic):
        found = _NUMPY_SCALAR
    elif issubclass(kind, dict):
        found = _MAPPING
    elif issubclass(kind, (list, tuple, set, frozenset)):
        found = _SEQUENCE
    elif kind.__flags__ & HEAP_TYPE:
        found = _INSTANCE
    else:
        found = _OBJECT
    _KINDS[kind] = found
    return found


def _path(entry: tuple[Any, Any, Any, str]) -> str:
    parts = []
    while entry[1] is not None:
        _, parent, key, step = entry
        parts.append(step.format(key))
        entry = parent
    return "model" + "".join(reversed(parts))


def health(model: OnlineModel, inputs: Sequence[dict[str, Any]]) -> str | None:
    """Why the model is unusable (non-finite state, or a bad answer on these inputs), or None."""
    state = non_finite_state(model.estimator)
    if state is not None:
        return f"the model's state holds a non-finite number: {state}"
    answer = model.divergence(inputs)
    return None if answer is None else f"the model answers {answer}"


Problem = tuple[str, str]  # (reason, detail)


def learn_checked(
    model: OnlineModel, example: Example, *, check_state: bool, tainted: bool = False
) -> tuple[Example, Problem | None]:
    """Learns one example; returns it (its prediction made again if `tainted`, see `heal`)
    and why the model is unusable after it, or None."""
    if tainted and example.fresh:
        example = _predicted_again(model, example)
    try:
        model.learn(example.features, example.label, example.prediction, served=example.served)
    except Exception as exc:  # noqa: BLE001 - that is the failure being looked for
        return example, (MODEL_ERROR, f"learning raised {type(exc).__name__}: {exc}")
    problem = health(model, [example.features]) if check_state else _answer_problem(model, example)
    return example, None if problem is None else (MODEL_DIVERGED, problem)


def _answer_problem(model: OnlineModel, example: Example) -> str | None:
    answer = model.divergence([example.features])
    return None if answer is None else f"the model answers {answer}"


def _predicted_again(model: OnlineModel, example: Example) -> Example:
    try:
        again = model.predict(example.features)
    except Exception:  # noqa: BLE001 - keep the prediction that was made
        return example
    return example if again.non_finite() is not None else msgspec.structs.replace(example, prediction=again)


@dataclass
class Healing:
    kept: list[Example]
    culprits: list[Refusal]


def heal(model: OnlineModel, checkpoint: bytes, examples: Sequence[Example], stride: int = 32) -> Healing:
    """Relearns `examples` from the healthy `checkpoint`, leaving out each example after
    which the model is unusable; the model ends as if the culprits had never come.

    One pass learns them with a cheap check (its answer on the example), and checks the
    whole state every `stride` examples; a failure is then pinned down by relearning the
    stretch since the last healthy state with a full check after every example.

    Once a culprit is out, a `fresh` example's prediction (made by this model right before
    it learned the example, so possibly by the poisoned model) is made again by the healed
    model: what the model would have answered had the culprit never come."""
    kept: list[Example] = []
    culprits: list[Refusal] = []
    base = checkpoint
    model.restore(base)
    start = 0
    while start < len(examples):
        stretch = list(examples[start : start + stride])
        learned, problem = _learn_stretch(model, stretch, bool(culprits), check_state=False)
        if problem is None and health(model, [e.features for e in learned[-4:]]) is None:
            kept.extend(learned)
            base = model.checkpoint()
            start += len(stretch)
            continue
        # Somewhere in this stretch: find the first example after which the state is bad.
        model.restore(base)
        learned, problem = _learn_stretch(model, stretch, bool(culprits), check_state=True)
        if problem is None:  # the cheap pass failed but every full check passed: keep them all
            kept.extend(learned)
            base = model.checkpoint()
            start += len(stretch)
            continue
        culprit_index = len(learned) - 1
        model.restore(base)
        good, _ = _learn_stretch(model, stretch[:culprit_index], bool(culprits), check_state=False)
        kept.extend(good)
        culprits.append(Refusal(learned[culprit_index], *problem))
        base = model.checkpoint()
        start += culprit_index + 1
    return Healing(kept, culprits)


def _learn_stretch(
    model: OnlineModel, stretch: list[Example], tainted: bool, *, check_state: bool
) -> tuple[list[Example], Problem | None]:
    """Learns examples in order until one fails; returns those learned (the failing one last) and why."""
    learned = []
    for example in stretch:
        example, problem = learn_checked(model, example, check_state=check_state, tainted=tainted)
        learned.append(example)
        if problem is not None:
            return learned, problem
    return learned, None
