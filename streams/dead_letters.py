"""Why a message was dead-lettered, the error that says so, and the headers it is sent with."""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from enum import StrEnum

# Re-exported: the base lives in models/ so that models/ can raise it too.
from models.errors import EngineError as EngineError

MAX_DETAIL_CHARS = 1000


class DeadLetterReason(StrEnum):
    # A StrEnum so that it is its own value wherever a string is expected: metric labels, headers.
    OVERSIZED = "oversized"
    NOT_JSON = "not_json"
    NOT_OBJECT = "not_object"
    MISSING_FIELD = "missing_field"
    WRONG_TYPE = "wrong_type"
    NON_FINITE = "non_finite"
    OUT_OF_RANGE = "out_of_range"
    DUPLICATE_EVENT = "duplicate_event"
    UNKNOWN_EVENT = "unknown_event"
    MODEL_ERROR = "model_error"
    MODEL_DIVERGED = "model_diverged"


class InvalidMessage(EngineError):
    """A message the stream cannot use: it goes to the dead-letter topic with `reason`.

    `field` names the offending field (`entity_id`, `features.amount`) when there is one,
    so that HTTP callers can point at it without parsing `detail`.
    """

    def __init__(self, reason: DeadLetterReason | str, detail: str, field: str | None = None) -> None:
        # Converting refuses an unknown reason with ValueError, also under `python -O`.
        self.reason = DeadLetterReason(reason)
        self.detail = detail
        self.field = field
        super().__init__(f"{self.reason}: {detail}")


def dead_letter_headers(
    reason: DeadLetterReason | str,
    detail: str,
    *,
    topic: str,
    partition: int,
    offset: int,
    original_headers: Iterable[tuple[str, bytes | None]] | Mapping[str, bytes | None] | None,
) -> list[tuple[str, bytes | None]]:
    """The headers of a dead letter: ours, then the original message's, unchanged.

    Keeping the original headers (the Kafka Connect convention) keeps trace ids and schema
    markers with the message. An original header named like ours (a dead letter replayed
    and dead-lettered again) is kept too, after ours.
    """
    ours = [
        ("dlq.reason", _utf8(str(DeadLetterReason(reason)))),
        ("dlq.detail", _utf8(detail[:MAX_DETAIL_CHARS])),
        ("dlq.source.topic", _utf8(str(topic))),
        ("dlq.source.partition", str(partition).encode()),
        ("dlq.source.offset", str(offset).encode()),
    ]
    if isinstance(original_headers, Mapping):
        original_headers = original_headers.items()
    return ours + list(original_headers or ())


def _utf8(text: str) -> bytes:
    # A detail can quote message content; a header that fails to encode would lose the dead letter.
    return text.encode("utf-8", "backslashreplace")
