import orjson
import pytest

from streams.records import InvalidMessage, parse_event, parse_label

RANGES = {"amount": (0.0, 100.0)}


def raw(**fields):
    base = {"event_id": "e1", "entity_id": "u1", "ts": 10.0, "features": {"amount": 5.0}}
    base.update(fields)
    return orjson.dumps({k: v for k, v in base.items() if v is not ...})


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
    ],
)
def test_bad_events_have_a_reason(data, reason):
    assert reason_of(data) == reason


def test_oversized_is_checked_before_parsing():
    assert reason_of(raw(), max_bytes=10) == "oversized"


def test_label_contract():
    assert parse_label(orjson.dumps({"event_id": 7, "label": 1.5}), 1000).event_id == "7"
    for data in (b"[]", orjson.dumps({"label": 1}), orjson.dumps({"event_id": "e", "label": None})):
        with pytest.raises(InvalidMessage):
            parse_label(data, 1000)
