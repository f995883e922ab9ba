"""Named models: what `MODELS` declares, one entry per model learning on the same stream.

`MODELS="fraud=logreg@is_fraud,amount=linreg@amount"`: each entry names a model, the
factory that builds it, and optionally the target it learns. A model without a target
learns the scalar `label`; with one, the event's label is an object and the model learns
`label[target]`. The first model listed is the default. `MODEL` alone declares one model,
named after its factory, that keeps the topics, keys and folders of a single-model engine
(`scoped` False); models declared in `MODELS` have their own, named after them.
"""

from __future__ import annotations

import re
from dataclasses import dataclass, field
from typing import Any

from models.errors import EngineError
from models.factory import Task, get_spec


class ModelsError(EngineError, ValueError):
    pass


# Names go into topic names, record keys, folder names and URLs: keep them plain.
_NAME = re.compile(r"[A-Za-z0-9][A-Za-z0-9_-]{0,63}")
# A target names its model's examples topic and folders too (name.target): Kafka's characters.
_TARGET = re.compile(r"[A-Za-z0-9_-][A-Za-z0-9._-]{0,63}")


class _Missing:
    def __repr__(self) -> str:
        return "MISSING"


MISSING: Any = _Missing()  # a label without this model's target


@dataclass(frozen=True, slots=True)
class NamedModel:
    name: str
    factory: str
    target: str | None = None
    scoped: bool = False  # its topics, keys and folders carry its name
    binary: bool = field(init=False, repr=False, compare=False)

    def __post_init__(self) -> None:
        object.__setattr__(self, "binary", get_spec(self.factory).task is Task.BINARY)

    @property
    def task(self) -> Task:
        return get_spec(self.factory).task

    @property
    def scope(self) -> str:
        """What its topics and folders are named after: the name, and the target it learns
        (another target is another examples log: its old examples would teach the wrong one)."""
        return self.name if self.target is None else f"{self.name}.{self.target}"

    def label_of(self, label: Any) -> Any:
        """What this model learns from a (validated) label, or MISSING when it has nothing to
        learn from it: an object label for a model without a target, a label without its target.
        A binary model learns 0/1 as false/true (River would learn 2 as true)."""
        if self.target is None:
            if type(label) is dict:
                return MISSING
            value = label
        else:
            if type(label) is not dict:
                return MISSING
            value = label.get(self.target)
            if value is None:
                return MISSING
        if self.binary and type(value) is not bool:
            return value == 1
        return value

    def describe(self) -> str:
        return f"{self.name}={self.factory}" + (f"@{self.target}" if self.target else "")


def parse_models(declared: str, single: str) -> tuple[NamedModel, ...]:
    """The models `MODELS` declares, or the one `MODEL` names when `MODELS` is empty."""
    if not declared.strip():
        get_spec(single)  # an unknown factory is refused with the choices
        return (NamedModel(single, single),)
    models: list[NamedModel] = []
    for entry in (part.strip() for part in declared.split(",")):
        name, equals, rest = entry.partition("=")
        factory, at, target = rest.partition("@")
        name, factory, target = name.strip(), factory.strip(), target.strip()
        if not equals or not _NAME.fullmatch(name) or not factory or (at and not _TARGET.fullmatch(target)):
            raise ModelsError(
                f"MODELS entry {entry!r} is not name=factory or name=factory@target"
                " (names: letters, digits, - and _, at most 64, starting with a letter or digit;"
                " targets: letters, digits, ., - and _, at most 64)"
            )
        get_spec(factory)
        # Folders are named after models: two names a case-insensitive file system sees as one are one.
        same = next((model.name for model in models if model.name.lower() == name.lower()), None)
        if same == name:
            raise ModelsError(f"MODELS names {name!r} twice")
        if same is not None:
            raise ModelsError(f"MODELS names {same!r} and {name!r}: names differ by more than case (they name folders)")
        models.append(NamedModel(name, factory, target or None, scoped=True))
    return tuple(models)


def targets_by_task(models: tuple[NamedModel, ...]) -> tuple[tuple[Task, ...], dict[str, tuple[Task, ...]]]:
    """The tasks of the models learning the scalar label, and per target the tasks of those learning it."""
    scalar = tuple(m.task for m in models if m.target is None)
    targets: dict[str, tuple[Task, ...]] = {}
    for m in models:
        if m.target is not None:
            targets[m.target] = (*targets.get(m.target, ()), m.task)
    return scalar, targets
