import tracemalloc

import msgspec
import numpy as np
import orjson

from models.examples import INLINE, Example, encode_examples
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


def test_the_encoded_example_is_its_record_key_for_key():
    # Readers of the examples topic and the training log (learners, the retrainer, replays)
    # read `to_record`'s document: every optional field, and NumPy numbers as their values.
    plain = example(3)
    variants = [
        plain,
        msgspec.structs.replace(plain, challenger=Prediction(False, {True: 0.4, False: 0.6})),
        msgspec.structs.replace(plain, fresh=True, model_samples=12, served=True, predicted_at=5.5),
        msgspec.structs.replace(
            plain, label=2.5, prediction=Prediction(np.float64(2.25), None), label_source="labels_topic"
        ),
        msgspec.structs.replace(plain, prediction=Prediction(np.int64(1), {np.int64(0): np.float32(0.5), 1: 0.5})),
        msgspec.structs.replace(plain, prediction=Prediction(None), learner_predicts=True),
    ]
    for variant in variants:
        record = orjson.loads(variant.encode())
        assert record == orjson.loads(orjson.dumps(variant.to_record(), option=orjson.OPT_SERIALIZE_NUMPY))
        assert list(record) == list(variant.to_record())
    assert Example.from_record(orjson.loads(variants[2].encode())) == variants[2]


def test_several_models_examples_are_encoded_as_each_alone():
    # One event's examples for several models share its features dict: its JSON is written
    # once for all of them, and every record must still be the one its example encodes alone.
    shared = [example(i) for i in range(3)]
    other_model = [
        msgspec.structs.replace(e, prediction=Prediction(False, {True: 0.1, False: 0.9}), model_version=8)
        for e in shared
    ]
    admitted_apart = msgspec.structs.replace(shared[1], features={"amount": np.float64(1.5)})
    learned = [shared, [other_model[0], admitted_apart, other_model[2]], []]
    assert other_model[0].features is shared[0].features
    assert encode_examples(learned) == [[e.encode() for e in examples] for examples in learned]


def test_a_record_decodes_as_its_document_reads():
    # The learner's fast way (Example.decode) against the general one (from_record), on every
    # optional field, labels and classes of every JSON type, and a record written before
    # label_source and predicted_at existed.
    plain = example(5)
    records = [
        plain.encode(),
        msgspec.structs.replace(plain, challenger=Prediction(False, {True: 0.4, False: 0.6})).encode(),
        msgspec.structs.replace(plain, fresh=True, model_samples=12, served=True, predicted_at=5.5).encode(),
        msgspec.structs.replace(plain, prediction=Prediction(None), learner_predicts=True).encode(),
        msgspec.structs.replace(plain, label="cat", prediction=Prediction("dog", {"cat": 0.25, "dog": 0.75})).encode(),
        msgspec.structs.replace(plain, label=3, prediction=Prediction(2, {2: 1, 3: 0})).encode(),
        msgspec.structs.replace(plain, label=2.5, prediction=Prediction(2.25)).encode(),
        orjson.dumps({k: v for k, v in plain.to_record().items() if k not in ("label_source", "predicted_at")}),
    ]
    for raw in records:
        decoded, general = Example.decode(raw), Example.from_record(orjson.loads(raw))
        assert decoded == general
        assert type(decoded.label) is type(general.label)
        assert [type(p) for p in (decoded.prediction.proba or {}).values()] == [
            type(p) for p in (general.prediction.proba or {}).values()
        ]
