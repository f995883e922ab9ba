"""Fuzzes the event and label contracts: whatever arrives on the events and labels topics
is either a valid Event/Label or an InvalidMessage with a dead-letter reason, never
another exception (which would stop the stream)."""

import json
import math
from datetime import timedelta, timezone

from hypothesis import event, example, given, settings
from hypothesis import strategies as st

from models.factory import Task
from streams.dead_letters import DeadLetterReason
from streams.records import (
    DEFAULT_MAX_ID_LENGTH,
    DEFAULT_MAX_MAGNITUDE,
    Contract,
    Event,
    InvalidMessage,
    Label,
    _checked_event,
    _checked_label,
    parse_event,
    parse_label,
)

MAX_BYTES = 65536
fuzz = settings(max_examples=500, deadline=None)

edge_floats = st.sampled_from(
    [
        math.nan,
        math.inf,
        -math.inf,
        1e308,
        -1e308,
        1.7976931348623157e308,
        1e-320,
        -5e-324,
        0.0,
        -0.0,
        DEFAULT_MAX_MAGNITUDE,
        math.nextafter(DEFAULT_MAX_MAGNITUDE, math.inf),
    ]
)
edge_integers = st.sampled_from([2**63 - 1, 2**63, 2**64 - 1, 2**64, 2**70, -(2**70), 10**15, 10**15 + 1])
numbers = st.floats() | edge_floats | st.integers() | edge_integers | st.integers(-(10**400), 10**400)
offsets = st.timedeltas(min_value=-timedelta(hours=23, minutes=59), max_value=timedelta(hours=23, minutes=59))
iso_times = st.datetimes(timezones=st.none() | st.builds(timezone, offsets)).map(lambda moment: moment.isoformat())
scalars = st.none() | st.booleans() | numbers | st.text() | iso_times
json_values = st.recursive(
    scalars,
    lambda children: st.lists(children, max_size=5) | st.dictionaries(st.text(), children, max_size=5),
    max_leaves=20,
)
ids = st.text(max_size=300) | st.integers() | edge_integers | json_values
features = st.dictionaries(st.text(max_size=10), scalars | json_values, max_size=8) | json_values
event_shaped = st.fixed_dictionaries(
    {"event_id": ids, "entity_id": ids, "ts": numbers | iso_times | json_values, "features": features},
    optional={"label": scalars | json_values},
)
label_shaped = st.fixed_dictionaries(
    {"event_id": ids, "label": scalars | json_values}, optional={"ts": numbers | iso_times | json_values}
)


@st.composite
def encoded(draw, documents):
    """A document as some producer would write it: Python's json writes NaN, Infinity,
    integers beyond 64 bits and, without ensure_ascii, lone surrogates as invalid UTF-8."""
    ascii_only = draw(st.booleans())
    return json.dumps(draw(documents), ensure_ascii=ascii_only).encode("utf-8", "surrogatepass")


def outcome(parse, raw):
    """The parsed message, or None when it was dead-lettered with a reason.

    The outcomes show with `pytest --hypothesis-show-statistics`."""
    try:
        parsed = parse(raw)
    except InvalidMessage as exc:
        assert isinstance(exc.reason, DeadLetterReason)
        event(f"dead letter: {exc.reason}")
        return None
    event("accepted")
    return parsed


def parse_as_event(raw):
    return parse_event(raw, MAX_BYTES, {"amount": (0.0, 100.0)})


def parse_as_label(raw):
    return parse_label(raw, MAX_BYTES)


def assert_valid_id(value):
    assert isinstance(value, str) and 0 < len(value) <= DEFAULT_MAX_ID_LENGTH


def assert_valid_number(value):
    assert math.isfinite(value) and abs(value) <= DEFAULT_MAX_MAGNITUDE


def assert_valid_event(event):
    assert isinstance(event, Event)
    assert_valid_id(event.event_id)
    assert_valid_id(event.entity_id)
    assert isinstance(event.ts, float) and math.isfinite(event.ts)
    for value in event.features.values():
        assert isinstance(value, (str, bool, int, float))
        if not isinstance(value, (str, bool)):
            assert_valid_number(value)
    if event.has_label:
        assert_valid_label_value(event.label)


def assert_valid_label(label):
    assert isinstance(label, Label)
    assert_valid_id(label.event_id)
    assert_valid_label_value(label.label)
    assert label.ts is None or (isinstance(label.ts, float) and math.isfinite(label.ts))


def assert_valid_label_value(value):
    assert isinstance(value, (str, bool, int, float))
    if not isinstance(value, (str, bool)):
        assert_valid_number(value)


@fuzz
@given(st.binary(max_size=512))
def test_any_bytes_on_the_events_topic(raw):
    event = outcome(parse_as_event, raw)
    if event is not None:
        assert_valid_event(event)


@fuzz
@given(st.binary(max_size=512))
def test_any_bytes_on_the_labels_topic(raw):
    label = outcome(parse_as_label, raw)
    if label is not None:
        assert_valid_label(label)


@fuzz
@given(encoded(json_values | event_shaped))
def test_any_json_on_the_events_topic(raw):
    event = outcome(parse_as_event, raw)
    if event is not None:
        assert_valid_event(event)


@fuzz
@given(encoded(json_values | label_shaped))
def test_any_json_on_the_labels_topic(raw):
    label = outcome(parse_as_label, raw)
    if label is not None:
        assert_valid_label(label)


valid_numbers = st.floats(min_value=-DEFAULT_MAX_MAGNITUDE, max_value=DEFAULT_MAX_MAGNITUDE) | st.integers(
    -(10**15), 10**15
)
valid_ids = st.text(min_size=1, max_size=DEFAULT_MAX_ID_LENGTH) | st.integers(-(10**200), 10**200)
valid_events = st.fixed_dictionaries(
    {
        "event_id": valid_ids,
        "entity_id": valid_ids,
        "ts": valid_numbers | iso_times,
        "features": st.dictionaries(st.text(max_size=10), st.none() | st.booleans() | st.text() | valid_numbers),
    },
    optional={"label": st.booleans() | st.text() | valid_numbers},
)


@fuzz
@given(valid_events)
def test_every_valid_event_is_accepted_as_sent(document):
    event = parse_event(json.dumps(document).encode(), MAX_BYTES, {})
    assert event.event_id == str(document["event_id"]) and event.entity_id == str(document["entity_id"])
    assert event.features == {name: value for name, value in document["features"].items() if value is not None}
    assert event.label == document.get("label", event.label)


LATEST_TS = 1e14  # most valid_numbers are earlier: events get as far as the label check
AMOUNT_RANGE = {"amount": (0.0, 100.0)}


def judged_thoroughly(raw, task=None, ranges=AMOUNT_RANGE):
    return _checked_event(raw, MAX_BYTES, ranges, DEFAULT_MAX_MAGNITUDE, DEFAULT_MAX_ID_LENGTH, 256, task, LATEST_TS)


def judgement(parse, raw):
    try:
        return repr(parse(raw))  # the repr tells 1 from 1.0 and from True, which == does not
    except InvalidMessage as exc:
        return (exc.reason, exc.detail)


@fuzz
@given(encoded(json_values | event_shaped | valid_events), st.sampled_from([None, *Task]))
def test_the_fast_path_judges_every_event_as_the_thorough_one_does(raw, task):
    """Events go through msgspec first and the rule-by-rule reading only when that refuses
    them: both must give the same event, or the same reason and detail."""
    fast = judgement(lambda r: parse_event(r, MAX_BYTES, AMOUNT_RANGE, task=task, latest_ts=LATEST_TS), raw)
    assert fast == judgement(lambda r: judged_thoroughly(r, task), raw)


PLAIN_EVENT = b'{"event_id":"e1","entity_id":"u1","ts":1000.0,"features":{"amount":5.0,"n":2,"kind":"a"}'


@fuzz
@given(
    encoded(json_values | event_shaped | valid_events),
    st.sampled_from([None, *Task]),
    st.sampled_from([{}, AMOUNT_RANGE]),
)
@example(PLAIN_EVENT + b"}", Task.BINARY, {})
@example(PLAIN_EVENT + b',"label":true}', Task.REGRESSION, {})  # a boolean teaches no regression model
@example(PLAIN_EVENT + b',"label":true}', Task.MULTICLASS, {})
@example(PLAIN_EVENT + b',"label":1}', Task.BINARY, {})
@example(PLAIN_EVENT + b',"label":null}', Task.BINARY, {})
@example(PLAIN_EVENT.replace(b"1000.0", b"1e15") + b"}", None, {})  # after the latest time accepted
@example(PLAIN_EVENT.replace(b'"u1"', b"7") + b"}", None, {})
@example(PLAIN_EVENT.replace(b'"n":2', b'"n":null') + b"}", None, {})
def test_the_stream_judges_every_event_as_the_thorough_path_does(raw, task, ranges):
    """`Contract.event`, the stream's way in, has the common case written out: without
    declared ranges it takes that shortcut, which must judge as the rule-by-rule reading."""
    contract = Contract(MAX_BYTES, ranges, task=task)
    stream = judgement(lambda r: contract.event(r, now=LATEST_TS - contract.max_ahead_seconds), raw)
    assert stream == judgement(lambda r: judged_thoroughly(r, task, ranges), raw)


@fuzz
@given(encoded(json_values | label_shaped), st.sampled_from([None, *Task]))
def test_the_fast_path_judges_every_label_as_the_thorough_one_does(raw, task):
    fast = judgement(lambda r: parse_label(r, MAX_BYTES, task=task), raw)
    limits = (DEFAULT_MAX_MAGNITUDE, DEFAULT_MAX_ID_LENGTH)
    assert fast == judgement(lambda r: _checked_label(r, MAX_BYTES, *limits, task), raw)
