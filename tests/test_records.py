import json
import time

import orjson
import pytest

from models.factory import Task
from streams.dead_letters import DeadLetterReason
from streams.records import Contract, InvalidMessage, parse_event, parse_label, validate_features

RANGES = {"amount": (0.0, 100.0)}


def raw(**fields):
    base = {"event_id": "e1", "entity_id": "u1", "ts": 10.0, "features": {"amount": 5.0}}
    base.update(fields)
    # The standard library writes integers beyond 64 bits, as some producers do.
    return json.dumps({k: v for k, v in base.items() if v is not ...}).encode()


def reason_of(data: bytes, max_bytes: int = 10_000) -> str:
    with pytest.raises(InvalidMessage) as caught:
        parse_event(data, max_bytes, RANGES)
    return caught.value.reason


def test_valid_event_keeps_feature_order_and_label():
    event = parse_event(raw(features={"b": 1, "a": 2.5, "c": "x", "d": True}, label=False), 10_000, {})
    assert list(event.features) == ["b", "a", "c", "d"]
    assert event.has_label and event.label is False


def test_null_features_are_dropped_and_reported():
    event = parse_event(raw(features={"amount": None, "x": 1}), 10_000, RANGES)
    assert event.features == {"x": 1}
    assert event.null_features == ("amount",)


def test_iso_timestamp_is_accepted():
    assert parse_event(raw(ts="1970-01-01T00:01:00+00:00"), 10_000, {}).ts == 60.0


@pytest.fixture
def machine_in_new_york(monkeypatch):
    monkeypatch.setenv("TZ", "America/New_York")
    time.tzset()
    yield
    monkeypatch.undo()
    time.tzset()


def test_iso_timestamp_without_a_time_zone_is_utc_whatever_the_machine_time_zone(machine_in_new_york):
    assert parse_event(raw(ts="1970-01-01T00:01:00"), 10_000, {}).ts == 60.0


@pytest.mark.parametrize(
    ("data", "reason"),
    [
        (b"{oops", "not_json"),
        (b'"a string"', "not_object"),
        (raw(event_id=...), "missing_field"),
        (raw(features=...), "missing_field"),
        (raw(ts=...), "missing_field"),
        (raw(event_id=True), "wrong_type"),
        (raw(entity_id=""), "wrong_type"),
        (raw(features=[1]), "wrong_type"),
        (raw(features={"a": {"nested": 1}}), "wrong_type"),
        (raw(ts="not a time"), "wrong_type"),
        (raw(label=[1]), "wrong_type"),
        (raw(features={"amount": "cheap"}), "wrong_type"),
        (b'{"event_id": "e", "entity_id": "u", "ts": 1, "features": {"a": NaN}}', "non_finite"),
        (b'{"event_id": "e", "entity_id": "u", "ts": 1, "features": {"a": 1e999}}', "non_finite"),
        (raw(features={"amount": 100.5}), "out_of_range"),
        (raw(features={"amount": -1}), "out_of_range"),
        (raw(features={"x": 1e308}), "out_of_range"),
        (raw(features={"x": -1e308}), "out_of_range"),
        (raw(features={"x": 2**70}), "out_of_range"),
        (raw(label=1e300), "out_of_range"),
        (raw(event_id="e" * 257), "out_of_range"),
        (raw(entity_id=10**300), "out_of_range"),
    ],
)
def test_bad_events_have_a_reason(data, reason):
    assert reason_of(data) == reason


def test_a_number_beyond_the_limit_names_the_field_and_the_limit():
    with pytest.raises(InvalidMessage) as caught:
        parse_event(raw(features={"amount": 5.0, "big": 2e15}), 10_000, RANGES)
    assert caught.value.reason is DeadLetterReason.OUT_OF_RANGE
    assert caught.value.field == "features.big"
    assert caught.value.detail == "features.big=2000000000000000.0 beyond the magnitude limit 1e+15"


def test_the_limits_are_parameters():
    data = raw(event_id="e" * 300, features={"x": 5e15})
    event = parse_event(data, 10_000, {}, max_magnitude=1e16, max_id_length=300)
    assert event.features == {"x": 5e15}
    with pytest.raises(InvalidMessage) as caught:
        parse_event(data, 10_000, {}, max_magnitude=1e16, max_id_length=299)
    assert caught.value.detail == "event_id is 300 characters long, more than the limit 299"


def test_a_megabyte_long_event_id_is_out_of_range():
    with pytest.raises(InvalidMessage) as caught:
        parse_event(raw(event_id="e" * (1 << 20)), 2 << 20, {})
    assert caught.value.detail == "event_id is 1048576 characters long, more than the limit 256"


def test_subnormal_numbers_are_finite_and_valid():
    assert parse_event(raw(features={"x": 1e-320, "y": -5e-324}), 10_000, {}).features == {"x": 1e-320, "y": -5e-324}


def test_booleans_are_not_held_to_the_magnitude_limit():
    assert validate_features({"x": True}, {}, max_magnitude=0.5) == ({"x": True}, ())


def test_an_integer_id_beyond_64_bits_is_read_exactly():
    event = parse_event(raw(event_id=2**70, entity_id=-(2**70)), 10_000, {})
    assert event.event_id == "1180591620717411303424"
    assert event.entity_id == "-1180591620717411303424"
    label = parse_label(json.dumps({"event_id": 2**70, "label": 1}).encode(), 1000)
    assert label.event_id == "1180591620717411303424"


def test_a_float_id_is_still_refused():
    assert reason_of(raw(event_id=1.5)) == "wrong_type"


def test_nan_is_refused_even_next_to_a_big_integer_id():
    data = json.dumps({"event_id": 2**70, "entity_id": "u", "ts": 1, "features": {"a": float("nan")}})
    assert reason_of(data.encode()) == "non_finite"


def test_a_deeply_nested_message_with_a_float_id_is_not_json():
    depth = 1010  # within orjson's depth limit, beyond the standard library's
    data = b'{"event_id": 1.5, "x": ' + b"[" * depth + b"]" * depth + b"}"
    assert reason_of(data, max_bytes=1 << 20) == "not_json"


def test_reasons_are_checked_without_assert():
    assert InvalidMessage("wrong_type", "x").reason is DeadLetterReason.WRONG_TYPE
    with pytest.raises(ValueError):
        InvalidMessage("no_such_reason", "x")


def test_oversized_is_checked_before_parsing():
    assert reason_of(raw(), max_bytes=10) == "oversized"


def test_label_contract():
    assert parse_label(orjson.dumps({"event_id": 7, "label": 1.5}), 1000).event_id == "7"
    for data in (b"[]", orjson.dumps({"label": 1}), orjson.dumps({"event_id": "e", "label": None})):
        with pytest.raises(InvalidMessage):
            parse_label(data, 1000)


@pytest.mark.parametrize(
    ("task", "label", "learned"),
    [
        (Task.BINARY, True, True),
        (Task.BINARY, False, False),
        (Task.BINARY, 1, True),
        (Task.BINARY, 0, False),
        (Task.BINARY, 1.0, True),
        (Task.MULTICLASS, "cat", "cat"),
        (Task.MULTICLASS, 3, 3),
        (Task.MULTICLASS, True, True),
        (Task.REGRESSION, 2.5, 2.5),
        (Task.REGRESSION, -7, -7),
    ],
)
def test_labels_that_fit_the_task_are_accepted_on_both_topics(task, label, learned):
    event = parse_event(raw(label=label), 10_000, {}, task=task)
    assert event.label == learned and type(event.label) is type(learned)
    assert parse_label(orjson.dumps({"event_id": "e1", "label": label}), 10_000, task=task).label == learned


@pytest.mark.parametrize(
    ("task", "label"),
    [
        (Task.BINARY, 2),
        (Task.BINARY, -1),
        (Task.BINARY, 0.5),
        (Task.BINARY, "true"),
        (Task.MULTICLASS, 1.5),
        (Task.MULTICLASS, 2.0),
        (Task.REGRESSION, "3.5"),
        (Task.REGRESSION, True),
    ],
)
def test_labels_that_do_not_fit_the_task_are_wrong_type_naming_the_task(task, label):
    for parse in (
        lambda: parse_event(raw(label=label), 10_000, {}, task=task),
        lambda: parse_label(orjson.dumps({"event_id": "e1", "label": label}), 10_000, task=task),
    ):
        with pytest.raises(InvalidMessage) as caught:
            parse()
        assert caught.value.reason == DeadLetterReason.WRONG_TYPE
        assert caught.value.field == "label" and f"a {task} model" in caught.value.detail


def test_an_event_too_far_ahead_of_the_wall_clock_is_out_of_range():
    now = time.time()
    contract = Contract(max_ahead_seconds=3600.0)
    assert contract.event(raw(ts=now + 3000), now).ts == now + 3000  # clocks disagree: a little ahead is fine
    for ts in (now + 3700, "2200-01-01T00:00:00Z", "9999-12-31T23:59:59"):
        with pytest.raises(InvalidMessage) as caught:
            contract.event(raw(ts=ts), now)
        assert caught.value.reason == DeadLetterReason.OUT_OF_RANGE and caught.value.field == "ts"


def test_too_many_feature_names_in_one_event_is_out_of_range():
    contract = Contract(max_features=4)
    assert len(contract.event(raw(features={f"f{i}": i for i in range(4)})).features) == 4
    with pytest.raises(InvalidMessage) as caught:
        contract.event(raw(features={f"f{i}": i for i in range(5)}))
    assert caught.value.reason == DeadLetterReason.OUT_OF_RANGE and caught.value.field == "features"
    assert "5 names, more than the limit 4" in caught.value.detail


@pytest.mark.parametrize(
    "fields",
    [
        {"event_id": "€" * 12},  # the length limit counts characters, not bytes
        {"event_id": "😀" * 12},
        {"event_id": "😀" * 13},
        {"entity_id": 10**11},  # an integer id's length is that of its digits
        {"entity_id": 10**12},
        {"features": {"x": 2}},  # an integer is within 2.5 when within 2
        {"features": {"x": 3}},
        {"features": {"x": -3}},
        {"features": {"x": 2.5, "y": -2.5}},
        {"features": {"x": 2.5000000000000004}},
        {"features": {"a": 1, "b": 2, "c": None}},  # three names: the limit, with a null among them
        {"features": {"a": 1, "b": 2, "c": 0, "d": None}},
        {"features": {"amount": 100}},  # a declared range, at its bound and past it
        {"features": {"amount": 100.5}},
        {"features": {"amount": "100"}},
        {"label": 1, "features": {}},
        {"label": 3, "features": {}},
    ],
)
def test_the_decoder_that_checks_limits_in_c_judges_as_the_rules_do(fields):
    """Events that keep every limit are checked by msgspec while decoding; the rule-by-rule
    reading decides the others. At each limit both must give the same event or reason."""
    from streams.records import _checked_event

    limits = {"max_magnitude": 2.5, "max_id_length": 12, "max_features": 3}
    data = raw(**fields)

    def judged(parse):
        try:
            return repr(parse())
        except InvalidMessage as exc:
            return (exc.reason, exc.detail)

    fast = judged(lambda: parse_event(data, 10_000, RANGES, task=Task.BINARY, latest_ts=1e9, **limits))
    thorough = judged(lambda: _checked_event(data, 10_000, RANGES, 2.5, 12, 3, Task.BINARY, 1e9))
    assert fast == thorough
