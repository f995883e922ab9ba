"""Pickling models for checkpoints, snapshots and published versions, with Random states as bytes.

River's trees keep a `random.Random` in every Gaussian of every leaf (a grown `hoeffding`
on Phishing holds 180 of them; forests have more), and the standard pickle writes each
one's state as a tuple of 625 ints, one opcode per int: two thirds of the tree's pickle.
Written here as one bytes object, the same state pickles in 3.8 ms instead of 6.3 and loads
in 3.9 instead of 8.0 (that tree, 30,000 events). The state is kept to the bit: a forest's
bagging draws from these generators, and a restored model must go on exactly as River's.
`pickle.loads` reads these pickles as it reads any other, and older pickles load as before.

Objects load with their attributes where Python keeps a fresh object's (inline, beside the
object): CPython 3.11 moves them into a dict the first time anything reads `__dict__` (a
default pickle or unpickle does), and every attribute read after that takes a slower path:
River's `logreg` predicted and learned 11% slower once pickled (13.3 against 12.0 µs an
event). A plain object is written with a state setter of ours (`set_attributes`, which
sets each attribute as `__init__` would), so what loads is as fast as what was built. A
learner puts the copy it loads from each checkpoint in place of the model it pickled
(`Learner._take_checkpoint`), and the health walk reads objects without reading `__dict__`.
"""

from __future__ import annotations

import collections
import copyreg
import gc
import io
import pickle
import random
import types
from array import array
from collections.abc import Iterable
from typing import Any

from river import preprocessing
from river._river_rust.vectordict import VectorDict

_WORDS = "I"  # Mersenne Twister words are 32-bit: "I" holds them on every platform CPython runs on


def _random_from_state(version: int, words: bytes, gauss_next: float | None) -> random.Random:
    generator = random.Random.__new__(random.Random)  # not seeded first: setstate replaces all of it
    generator.setstate((version, tuple(array(_WORDS, words)), gauss_next))
    return generator


def _reduce_random(generator: random.Random) -> tuple[Any, ...]:
    version, internal, gauss_next = generator.getstate()
    return _random_from_state, (version, array(_WORDS, internal).tobytes(), gauss_next)


def set_attributes(obj: Any, state: dict[str, Any]) -> None:
    set_attribute = object.__setattr__  # as the default load does, without a class's own __setattr__
    for name, value in state.items():
        set_attribute(obj, name, value)


def _set_through_setstate(obj: Any, state: dict[str, Any]) -> None:
    """For the classes of _DEFAULTS_ONLY_SETSTATE: their own __setstate__ decides the
    attributes (on a scratch instance: it writes into __dict__), and they are set inline."""
    cls: Any = type(obj)
    scratch = cls.__new__(cls)
    scratch.__setstate__(state)
    set_attributes(obj, scratch.__dict__)


# River classes whose own __setstate__ only adds defaults for attributes older pickles lack,
# then updates __dict__ (tests/test_pickling.py holds them to it): kept inline all the same.
_DEFAULTS_ONLY_SETSTATE = frozenset(
    {preprocessing.StandardScaler, preprocessing.MinMaxScaler, preprocessing.MaxAbsScaler}
)

_BUILTIN_BASES = (dict, list, set, frozenset, tuple, type, int, float, str, bytes)
_SETTERS: dict[type, Any] = {}  # class -> its state setter, or None: the default reduction


def _setter_for(cls: type) -> Any:
    """The state setter for a class reduced as a plain object (its __dict__ is its state), or
    None when anything about it could make that differ from the default reduction."""
    plain = (
        cls.__reduce_ex__ is object.__reduce_ex__
        and cls.__reduce__ is object.__reduce__
        and cls.__getstate__ is object.__getstate__
        and not hasattr(cls, "__getnewargs_ex__")
        and not hasattr(cls, "__getnewargs__")
        and not issubclass(cls, _BUILTIN_BASES)
        and cls.__flags__ & HEAP_TYPE  # a class written in Python: no state of its own in C
        and not slot_names(cls)
    )
    if not plain:
        return None
    if not hasattr(cls, "__setstate__"):
        return set_attributes
    return _set_through_setstate if cls in _DEFAULTS_ONLY_SETSTATE else None


HEAP_TYPE = 1 << 9  # Py_TPFLAGS_HEAPTYPE: a class written in Python
_NEW_OBJECT = copyreg.__newobj__  # type: ignore[attr-defined]  # what the default reduction creates objects with


_SLOTS: dict[type, tuple[str, ...]] = {}


def slot_names(cls: type) -> tuple[str, ...]:
    """The slots that hold state, declared along the class's MRO (once per class; abc.ABC
    and typing.Generic declare empty ones)."""
    names = _SLOTS.get(cls)
    if names is None:
        found: list[str] = []
        for klass in cls.__mro__:
            declared = klass.__dict__.get("__slots__", ())
            for name in (declared,) if isinstance(declared, str) else declared:
                if isinstance(name, str) and name not in ("__dict__", "__weakref__") and name not in found:
                    found.append(name)
        names = _SLOTS[cls] = tuple(found)
    return names


_DESCRIPTORS: dict[type, frozenset[str]] = {}


def _data_descriptors(cls: type) -> frozenset[str]:
    """Names whose setting object.__setattr__ would hand to a descriptor of the class (a
    property), where the default load writes into __dict__."""
    names = _DESCRIPTORS.get(cls)
    if names is None:
        names = _DESCRIPTORS[cls] = frozenset(
            name
            for klass in cls.__mro__[:-1]
            for name, value in vars(klass).items()
            if hasattr(type(value), "__set__") and name not in ("__dict__", "__weakref__")
        )
    return names


class _Pickler(pickle.Pickler):
    def reducer_override(self, obj: Any) -> Any:
        cls = type(obj)
        if cls in self.dispatch_table:  # a reducer registered for the class comes first, as without this
            return NotImplemented
        try:
            setter = _SETTERS[cls]
        except KeyError:
            setter = _SETTERS[cls] = _setter_for(cls)
        if setter is None:
            return NotImplemented
        state = obj.__dict__
        if not state or not _data_descriptors(cls).isdisjoint(state) or not all(type(k) is str for k in state):
            return NotImplemented  # (setattr takes names only: a key put into __dict__ by hand is not one)
        return _NEW_OBJECT, (cls,), state, None, None, setter


def dumps(obj: Any) -> bytes:
    buffer = io.BytesIO()
    pickler = _Pickler(buffer, protocol=pickle.HIGHEST_PROTOCOL)
    # copyreg's table as it is now (a library may register a reducer after this module is
    # imported), and only the exact Random class: a subclass may carry state of its own.
    pickler.dispatch_table = {**copyreg.dispatch_table, random.Random: _reduce_random}
    pickler.dump(obj)
    return buffer.getvalue()


def share_names(roots: Iterable[Any], names: Iterable[str]) -> None:
    """Puts `names`, the string objects events carry as feature names, in place of the equal
    strings a loaded model holds as dict keys and set members, in every dict, set and River
    VectorDict reachable from `roots` (in place, in the same order).

    Why: JSON decoders hand out one string object per repeated key (orjson's and msgspec's
    key caches), and a model that learned from events holds those very objects, so each of
    its lookups by name matches on identity. A model loaded from a pickle holds copies, and
    every lookup compares the bytes: `logreg` learned 3-5 % slower after each checkpoint's
    reload (16.2-16.5 against 15.6-15.7 µs an event), and as fast again once its names were
    shared. Walked without reading any object's `__dict__` (see the module's doc)."""
    canonical = {name: name for name in names if type(name) is str}
    if not canonical:
        return
    seen: set[int] = set()
    stack = list(roots)
    while stack:
        obj = stack.pop()
        cls = type(obj)
        if cls in _ATOMS or id(obj) in seen:
            continue
        seen.add(id(obj))
        if cls in _PLAIN_DICTS:
            if _stale(obj, canonical):
                items = list(dict.items(obj))
                dict.clear(obj)
                dict.update(obj, [(_shared(k, canonical), v) for k, v in items])
            stack.extend(dict.values(obj))
        elif cls is set:
            if _stale(obj, canonical):
                members = [_shared(k, canonical) for k in obj]
                obj.clear()
                obj.update(members)
            stack.extend(obj)
        elif cls is list or cls is tuple or cls is frozenset:
            stack.extend(obj)
        elif cls is VectorDict:
            if _stale(obj.keys(), canonical):
                items = list(obj.items())
                obj.clear()
                obj.update({_shared(k, canonical): v for k, v in items})
        elif cls.__flags__ & HEAP_TYPE and not isinstance(obj, (type, types.ModuleType, types.FunctionType)):
            stack.extend(gc.get_referents(obj))  # its attributes, without reading __dict__


def _shared(key: Any, canonical: dict[str, str]) -> Any:
    """The name events carry in place of `key`, when it is one of them."""
    return canonical.get(key, key) if type(key) is str else key


def _stale(keys: Iterable[Any], canonical: dict[str, str]) -> bool:
    """Whether any of `keys` is a copy of a name events carry."""
    return any(_shared(key, canonical) is not key for key in keys)


_ATOMS = frozenset({str, int, float, bool, bytes, type(None), complex})
# Dicts whose contents dict's own methods may rewrite: no order or state kept beside them
# (an OrderedDict keeps its order in a list of its own, and is left as it is).
_PLAIN_DICTS = frozenset({dict, collections.defaultdict, collections.Counter})


class Pickled:
    """An object already pickled with `dumps`, to be written inside another pickle as it is:
    loading the outer pickle loads it (with `pickle.loads`, as any reader would)."""

    __slots__ = ("data",)

    def __init__(self, data: bytes) -> None:
        self.data = data

    def __reduce__(self) -> tuple[Any, ...]:
        return pickle.loads, (self.data,)
