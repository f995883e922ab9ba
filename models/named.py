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
from dataclasses import dataclass
from typing import Any

from models.errors import EngineError
from models.factory import Task, get_spec


class ModelsError(EngineError, ValueError):
    pass


# Names go into topic names, record keys, folder names and URLs: keep them plain.
_NAME = re.compile(r"[A-Za-z0-9][A-Za-z0-9_-]{0,63}")
_TARGET = re.compile(r"[^\s,=@]{1,256}")


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

    @property
    def task(self) -> Task:
        return get_spec(self.factory).task

    def label_of(self, label: Any) -> Any:
        """What this model learns from a (validated) label, or MISSING when it has nothing to
        learn from it: an object label for a model without a target, a label without its target."""
        if self.target is None:
            return MISSING if type(label) is dict else label
        if type(label) is not dict:
            return MISSING
        value = label.get(self.target)
        return MISSING if value is None else value

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
                " (names: letters, digits, - and _, at most 64, starting with a letter or digit)"
            )
        get_spec(factory)
        if any(model.name == name for model in models):
            raise ModelsError(f"MODELS names {name!r} twice")
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
