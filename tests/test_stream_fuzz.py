"""Whatever lands on the events and labels topics, the stream takes it: every message is
learned, waits for its other half, or is dead-lettered with a reason; nothing escapes."""

from __future__ import annotations

import orjson
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from streams.dead_letters import DeadLetterReason
from tests.conftest import Pipeline

json_values = st.recursive(
    st.none()
    | st.booleans()
    | st.integers(min_value=-(2**80), max_value=2**80)
    | st.floats(allow_nan=False, allow_infinity=False)
    | st.text(max_size=20),
    lambda children: st.lists(children, max_size=4) | st.dictionaries(st.text(max_size=8), children, max_size=4),
    max_leaves=12,
)
feature_values = (
    st.none() | st.booleans() | st.integers(min_value=-(2**70), max_value=2**70) | st.floats() | st.text(max_size=5)
)
ids = st.integers(min_value=0, max_value=30).map(str) | st.integers(min_value=0, max_value=30) | json_values


def encode(value):
    try:
        return orjson.dumps(value)
    except TypeError:  # NaN, infinity, or keys orjson will not write: send what a producer might
        return repr(value).encode()


events = st.one_of(
    st.binary(max_size=64),
    json_values.map(encode),
    st.fixed_dictionaries(
        {
            "event_id": ids,
            "entity_id": ids,
            "ts": json_values | st.floats(),
            "features": st.dictionaries(st.sampled_from(["https", "long_url", "age", "x"]), feature_values, max_size=4),
        },
        optional={"label": json_values},
    ).map(encode),
)
labels = st.one_of(
    st.binary(max_size=32),
    json_values.map(encode),
    st.fixed_dictionaries({"event_id": ids, "label": json_values}, optional={"ts": json_values}).map(encode),
)


@settings(max_examples=300, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(st.lists(st.tuples(st.booleans(), events, labels), min_size=1, max_size=12))
def test_every_message_is_learned_waits_or_is_dead_lettered(batches):
    pipeline = Pipeline(definitions=[{"name": "n", "agg": "count"}, {"name": "age_max", "source": "age", "agg": "max"}])
    for labels_first, event_bytes, label_bytes in batches:
        if labels_first:
            pipeline.send_labels([label_bytes])
        pipeline.send_events([event_bytes])
        if not labels_first:
            pipeline.send_labels([label_bytes])
    expiry = pipeline.join.expire(now=float("inf"))  # whatever still waits is given up, with a reason

    letters = [*pipeline.dead_letters, *expiry.dead_letters]
    assert all(DeadLetterReason(str(getattr(letter, "reason", ""))) for letter in letters)
    rows = sum(row["version"] for _, row in pipeline.rows.items())
    # Each event is applied to its entity (then learned or awaiting its label) or dead-lettered.
    event_letters = [x for x in letters if getattr(getattr(x, "record", None), "topic", "") == "events"]
    assert rows + len(event_letters) == len(batches)
    assert pipeline.model.samples_learned <= rows
