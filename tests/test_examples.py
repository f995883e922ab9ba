import tracemalloc

import orjson

from models.examples import INLINE, Example
from models.online import Prediction


def example(i: int) -> Example:
    features = {"amount": 12.5 + i, "country": "FR", "new_device": i % 2 == 0}
    return Example(
        f"e{i}", 1.0 + i, features, True, Prediction(True, {True: 0.75, False: 0.25}), 3, ("events", 0, i), INLINE
    )


def test_an_example_reads_back_as_it_was_encoded():
    original = example(7)
    assert Example.from_record(orjson.loads(original.encode())) == original


def test_encoded_examples_hold_about_their_own_size():
    # The training log keeps up to 50,000 encoded examples until it flushes: each must hold
    # its own bytes, not the 4 KiB buffer orjson wrote it into.
    examples = [example(i) for i in range(1000)]
    tracemalloc.start()
    try:
        before = tracemalloc.get_traced_memory()[0]
        encoded = [e.encode() for e in examples]
        held = tracemalloc.get_traced_memory()[0] - before
    finally:
        tracemalloc.stop()
    assert held < 1.5 * sum(len(b) for b in encoded), held
