import math
from types import SimpleNamespace

import numpy as np
import pytest

from models.factory import MODELS
from models.guard import non_finite_state
from tests.helpers import task_rows, trained


@pytest.mark.parametrize("name", sorted(MODELS))
def test_no_model_of_the_factory_holds_a_non_finite_number_fresh_or_trained(name):
    # The guard heals any model whose state holds one: a healthy model must never look poisoned.
    model = trained(task_rows(MODELS[name].task, 300), name)
    assert non_finite_state(model.estimator) is None
    assert non_finite_state(trained([], name).estimator) is None


class Base:
    __slots__ = ("weight",)


class Leaf(Base):
    __slots__ = ("bias",)

    def __init__(self, weight: float, bias: float) -> None:
        self.weight = weight
        self.bias = bias


@pytest.mark.parametrize(
    ("poisoned", "path"),
    [
        (SimpleNamespace(scaler=SimpleNamespace(var={"x": math.inf})), "model.scaler.var['x'] = inf"),
        (SimpleNamespace(counts={True: [1.0, (2.0, math.nan)]}), "model.counts[True][1][1] = nan"),
        (SimpleNamespace(weights=np.array([1.0, np.nan])), "model.weights holds NaN or infinity"),
        (SimpleNamespace(mean=np.float64(-np.inf)), "model.mean = -inf"),
        (SimpleNamespace(leaves=[Leaf(1.0, 2.0), Leaf(math.nan, 0.0)]), "model.leaves[1].weight = nan"),
        (SimpleNamespace(leaves=[Leaf(1.0, math.inf)]), "model.leaves[0].bias = inf"),
    ],
)
def test_a_non_finite_number_is_found_and_its_path_named(poisoned, path):
    assert non_finite_state(poisoned) == path


def test_finite_state_with_cycles_and_integer_arrays_is_healthy():
    node = SimpleNamespace(value=1.5, counts=np.array([1, 2, 3]), flags={True, None}, name="leaf")
    node.parent = SimpleNamespace(children=[node], total=np.float32(2.0))
    assert non_finite_state(node) is None
