import pytest

from streams.dead_letters import DeadLetterReason, EngineError, InvalidMessage, dead_letter_headers
from streams.records import InvalidMessage as FromRecords


def headers(original=None, reason="not_json", detail="oops"):
    return dead_letter_headers(reason, detail, topic="events", partition=2, offset=41, original_headers=original)


def test_our_headers_describe_the_source_message():
    assert headers() == [
        ("dlq.reason", b"not_json"),
        ("dlq.detail", b"oops"),
        ("dlq.source.topic", b"events"),
        ("dlq.source.partition", b"2"),
        ("dlq.source.offset", b"41"),
    ]


def test_original_headers_follow_ours_unchanged():
    original = [("traceparent", b"00-abc-01"), ("schema", b"\x00\x01"), ("traceparent", b"second"), ("empty", None)]
    assert headers(original)[5:] == original


def test_original_headers_may_come_as_a_mapping():
    assert headers({"traceparent": b"00-abc-01"})[5:] == [("traceparent", b"00-abc-01")]


def test_an_original_header_named_like_ours_is_kept_after_ours():
    result = headers([("dlq.reason", b"wrong_type")], reason=DeadLetterReason.DUPLICATE_EVENT)
    assert [value for name, value in result if name == "dlq.reason"] == [b"duplicate_event", b"wrong_type"]


def test_detail_is_truncated_to_1000_characters_and_always_encodes():
    assert headers(detail="x" * 5000)[1] == ("dlq.detail", b"x" * 1000)
    assert headers(detail="bad \ud800 surrogate")[1] == ("dlq.detail", b"bad \\ud800 surrogate")


def test_an_unknown_reason_is_refused():
    with pytest.raises(ValueError):
        headers(reason="because")


def test_reasons_are_strings_with_their_values():
    assert DeadLetterReason("model_diverged") == "model_diverged"
    assert str(DeadLetterReason.OUT_OF_RANGE) == "out_of_range"  # what metric labels get
    assert len(DeadLetterReason) == 11


def test_invalid_message_is_an_engine_error_importable_from_records():
    error = InvalidMessage("out_of_range", "features.x=1e300 beyond the magnitude limit 1e+15", "features.x")
    assert FromRecords is InvalidMessage and isinstance(error, EngineError)
    assert (error.reason, error.field) == (DeadLetterReason.OUT_OF_RANGE, "features.x")
    assert str(error) == "out_of_range: features.x=1e300 beyond the magnitude limit 1e+15"
