import collections
import copyreg
import pickle
import random

import orjson
import pytest
from river import datasets

from models.factory import MODELS, get_spec
from models.pickling import _DEFAULTS_ONLY_SETSTATE, _set_through_setstate, dumps, share_names
from tests.helpers import task_rows, trained


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


@pytest.mark.parametrize("name", sorted(MODELS))
def test_every_model_restored_from_its_checkpoint_learns_on_exactly_as_one_never_pickled(name):
    """A learner goes on, after each checkpoint, with the objects loaded from it (their
    attributes set by our state setter): nothing of the model may differ from the original."""
    rows = task_rows(get_spec(name).task, 400)
    model, untouched = trained(rows[:200], name), trained(rows[:200], name)
    model.restore(model.checkpoint())  # as the learner does after each checkpoint
    for x, y in rows[200:]:
        for m in (model, untouched):
            m.learn(x, y, m.predict(x))
    assert model.metric_values() == untouched.metric_values()
    assert [model.predict(x) for x, _ in rows[:50]] == [untouched.predict(x) for x, _ in rows[:50]]


@pytest.mark.parametrize("cls", sorted(_DEFAULTS_ONLY_SETSTATE, key=lambda c: c.__name__))
def test_scalers_setstate_only_adds_defaults_so_their_state_is_set_as_theirs_would(cls):
    """Their own __setstate__ decides the attributes, including the default an older pickle
    lacks; the result is the attributes it would have written into __dict__."""
    state = dict(vars(cls()))
    del state["window_size"]  # a pickle from before the attribute
    theirs = cls.__new__(cls)
    theirs.__setstate__(dict(state))
    ours = cls.__new__(cls)
    _set_through_setstate(ours, dict(state))
    assert vars(ours) == vars(theirs) and ours.window_size is None


class Thermostat:
    def __init__(self) -> None:
        self.target = 20.0
        self.owner = self  # a cycle: the object is made before its state is set

    @property
    def mode(self) -> str:
        return "heat"


class Logged:
    def __init__(self) -> None:
        self.entries = [1.0]

    def __setstate__(self, state: dict) -> None:
        self.__dict__.update(state, restored=True)


def test_plain_objects_with_cycles_and_their_own_setstate_load_as_the_standard_pickle_loads():
    thermostat = pickle.loads(dumps(Thermostat()))
    assert thermostat.target == 20.0 and thermostat.owner is thermostat and thermostat.mode == "heat"
    logged = pickle.loads(dumps(Logged()))
    assert vars(logged) == {"entries": [1.0], "restored": True}  # its own __setstate__ ran


def test_state_entries_setattr_would_not_take_are_loaded_into_dict_as_the_standard_pickle_does():
    shadowed, numbered = Thermostat(), Thermostat()
    shadowed.__dict__["mode"] = "cool"  # shadowed by the read-only property, still state
    numbered.__dict__[7] = "a key that is not a name"
    assert vars(pickle.loads(dumps(shadowed)))["mode"] == "cool"
    assert vars(pickle.loads(dumps(numbered)))[7] == "a key that is not a name"


def test_a_reloaded_model_looks_features_up_by_the_names_events_carry():
    """JSON decoders hand out one string object per repeated key; a model reloaded from its
    checkpoint holds those objects again (dict lookups then match on identity), and learns on
    exactly as a model never pickled."""
    events = [orjson.loads(orjson.dumps(x)) for x, _ in list(datasets.Phishing())[:400]]
    labels = [y for _, y in list(datasets.Phishing())[:400]]
    names = list(events[-1])
    assert all(name is other for name, other in zip(names, events[0]))  # the decoder's one object per key
    model, reloaded = trained([], "logreg"), trained([], "logreg")
    for x, y in zip(events[:300], labels[:300]):
        for m in (model, reloaded):
            m.learn(x, y, m.predict(x))
    reloaded.restore(reloaded.checkpoint(), names)
    scaler = reloaded.estimator["StandardScaler"]
    weights = reloaded.estimator["LogisticRegression"]._weights
    for keys in (scaler.counts, scaler.means, scaler.vars, weights.keys(), reloaded.feature_names):
        assert all(any(key is name for name in names) for key in keys)
    assert list(weights.keys()) == list(model.estimator["LogisticRegression"]._weights.keys())
    for x, y in zip(events[300:], labels[300:]):
        for m in (model, reloaded):
            m.learn(x, y, m.predict(x))
    assert reloaded.metric_values() == model.metric_values()
    assert reloaded.predict(events[0]) == model.predict(events[0])


def test_sharing_names_keeps_each_container_in_its_order_and_leaves_ordered_dicts_alone():
    name = "".join(["am", "ount"])  # built at run time: not the interned literal
    copy = pickle.loads(pickle.dumps(name))
    assert copy == name and copy is not name
    plain = {"z": 1, copy: 2, "a": 3}
    counts = collections.Counter({copy: 4})
    ordered = collections.OrderedDict({copy: 5})
    share_names([[plain, counts, ordered]], [name])
    assert list(plain) == ["z", "amount", "a"] and next(k for k in plain if k == name) is name
    assert next(iter(counts)) is name and counts[name] == 4
    assert next(iter(ordered)) is copy  # its own order list would go stale
