"""What a decoded request means, by the stream's own rules: the same limits and checks as
events and labels on Kafka (streams/records.py), with a 422 naming the field."""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any
from urllib.parse import parse_qsl

from msgspec import UNSET

from engine.contract import LabelsRequest, PredictRequest, RequestError
from engine.settings import Settings
from streams.records import InvalidMessage, LabelRule, fit_any_label, validate_features, validate_id


def predict_input(
    request: PredictRequest, settings: Settings, ranges: Mapping[str, tuple[float, float]]
) -> tuple[str, dict[str, Any], str | None]:
    """The entity id, the usable features and the event id (or None) of a decoded request,
    by the stream's own rules."""
    try:
        entity_id = validate_id({"entity_id": request.entity_id}, "entity_id", settings.max_id_length)
        event_id = (
            None
            if request.event_id is UNSET
            else validate_id({"event_id": request.event_id}, "event_id", settings.max_id_length)
        )
        features, _ = validate_features(
            request.features,
            ranges,
            max_magnitude=settings.max_feature_magnitude,
            max_features=settings.max_features_per_event,
        )
    except InvalidMessage as exc:
        raise RequestError(422, exc.detail, exc.field) from None
    return entity_id, features, event_id


def model_asked(query_string: bytes, body_model: Any) -> str | None:
    """The named model a prediction request asks for (`?model=` or the body's `model`), or
    None for the default; 422 when the two disagree."""
    in_query = None
    if query_string:
        for name, value in parse_qsl(query_string.decode("latin-1")):
            if name == "model":
                in_query = value
    in_body = None if body_model is UNSET else body_model
    if in_query is not None and in_body is not None and in_query != in_body:
        raise RequestError(422, f"the query asks for model {in_query!r}, the body for {in_body!r}", "model")
    return in_body if in_body is not None else in_query


def labels_input(request: LabelsRequest, settings: Settings, rule: LabelRule) -> list[tuple[str, Any]]:
    """(event id, label) of each item, by the rules of the labels topic; 422 naming the item."""
    labels = []
    for i, item in enumerate(request.labels):
        try:
            event_id = validate_id({"event_id": item.event_id}, "event_id", settings.max_id_length)
            label = fit_any_label(item.label, settings.max_feature_magnitude, rule)
        except InvalidMessage as exc:
            raise RequestError(422, exc.detail, f"labels[{i}].{exc.field}") from None
        labels.append((event_id, label))
    return labels
