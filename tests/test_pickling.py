import copyreg
import pickle
import random

import pytest
from river import datasets

from models.pickling import dumps
from tests.helpers import trained


def test_a_generator_goes_on_drawing_exactly_as_the_original():
    original = random.Random(7)
    original.random()
    original.gauss(0.0, 1.0)  # leaves a second normal variate waiting in gauss_next
    restored = pickle.loads(dumps(original))
    assert restored.getstate() == original.getstate()
    assert [restored.gauss(0.0, 1.0), restored.random()] == [original.gauss(0.0, 1.0), original.random()]


class Dice(random.Random):
    pass


def test_a_subclass_pickles_as_the_standard_pickle_does():
    dice = Dice(3)
    assert dumps(dice) == pickle.dumps(dice, protocol=pickle.HIGHEST_PROTOCOL)


def test_a_checkpointed_forest_learns_on_exactly_as_one_never_pickled():
    rows = list(datasets.Phishing())
    model = trained(rows[:300], "arf")  # bagging draws from the forest's generators
    restored = trained([], "arf")
    restored.restore(model.checkpoint())
    for x, y in rows[300:500]:
        for m in (model, restored):
            m.learn(x, y, m.predict(x))
    assert restored.metric_values() == model.metric_values()
    assert restored.predict(rows[600][0]) == model.predict(rows[600][0])


def test_a_grown_tree_pickles_smaller_than_the_standard_pickle():
    # 625 words a generator, one per Gaussian of every leaf: as bytes, not 625 opcodes.
    model = trained(list(datasets.Phishing()), "hoeffding")
    assert len(dumps(model)) < 0.8 * len(pickle.dumps(model, protocol=pickle.HIGHEST_PROTOCOL))


class Celsius:
    def __init__(self, degrees: float) -> None:
        self.degrees = degrees


def celsius_from_kelvin(kelvin: float) -> Celsius:
    return Celsius(kelvin - 273.15)


def test_a_reducer_registered_with_copyreg_later_is_used():
    copyreg.pickle(Celsius, lambda c: (celsius_from_kelvin, (c.degrees + 273.15,)))
    try:
        payload = dumps(Celsius(20.0))
    finally:
        copyreg.dispatch_table.pop(Celsius)
    assert b"celsius_from_kelvin" in payload
    assert pickle.loads(payload).degrees == pytest.approx(20.0)
