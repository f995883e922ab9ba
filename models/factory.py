"""The models the engine can run, chosen by name in settings.

Each name builds a fresh River estimator with fixed hyperparameters and seed, so the
engine and an offline `progressive_val_score` replay build identical models.
"""

from __future__ import annotations

import enum
from collections.abc import Callable
from dataclasses import dataclass

from river import base, forest, linear_model, optim, preprocessing, tree

from models.errors import EngineError


class Task(enum.StrEnum):
    BINARY = "binary"
    MULTICLASS = "multiclass"
    REGRESSION = "regression"


@dataclass(frozen=True)
class ModelSpec:
    name: str
    task: Task
    build: Callable[[], base.Estimator]
    description: str


SEED = 42

_SPECS = [
    ModelSpec(
        "logreg",
        Task.BINARY,
        lambda: preprocessing.StandardScaler() | linear_model.LogisticRegression(),
        "StandardScaler | LogisticRegression",
    ),
    ModelSpec(
        "hoeffding",
        Task.BINARY,
        lambda: tree.HoeffdingTreeClassifier(),
        "HoeffdingTreeClassifier",
    ),
    ModelSpec(
        "arf",
        Task.BINARY,
        lambda: forest.ARFClassifier(n_models=10, seed=SEED),
        "ARFClassifier (10 trees)",
    ),
    ModelSpec(
        "softmax",
        Task.MULTICLASS,
        lambda: preprocessing.StandardScaler() | linear_model.SoftmaxRegression(),
        "StandardScaler | SoftmaxRegression",
    ),
    ModelSpec(
        "hoeffding-multiclass",
        Task.MULTICLASS,
        lambda: tree.HoeffdingTreeClassifier(),
        "HoeffdingTreeClassifier",
    ),
    ModelSpec(
        "arf-multiclass",
        Task.MULTICLASS,
        lambda: forest.ARFClassifier(n_models=10, seed=SEED),
        "ARFClassifier (10 trees)",
    ),
    ModelSpec(
        "linreg",
        Task.REGRESSION,
        lambda: preprocessing.StandardScaler() | linear_model.LinearRegression(optimizer=optim.SGD(0.01)),
        "StandardScaler | LinearRegression (SGD 0.01)",
    ),
    ModelSpec(
        "hoeffding-regressor",
        Task.REGRESSION,
        lambda: preprocessing.StandardScaler() | tree.HoeffdingAdaptiveTreeRegressor(seed=SEED),
        "StandardScaler | HoeffdingAdaptiveTreeRegressor",
    ),
    ModelSpec(
        "arf-regressor",
        Task.REGRESSION,
        lambda: forest.ARFRegressor(n_models=10, seed=SEED),
        "ARFRegressor (10 trees)",
    ),
]

MODELS: dict[str, ModelSpec] = {spec.name: spec for spec in _SPECS}


class UnknownModelError(EngineError, ValueError):
    pass


def get_spec(name: str) -> ModelSpec:
    try:
        return MODELS[name]
    except KeyError:
        raise UnknownModelError(f"unknown model {name!r}; choose one of {sorted(MODELS)}") from None


def build_model(name: str) -> base.Estimator:
    return get_spec(name).build()
