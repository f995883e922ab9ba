"""What a decoded request means, by the stream's own rules: the same limits and checks as
events and labels on Kafka (streams/records.py), with a 422 naming the field."""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from msgspec import UNSET

from engine.contract import LabelsRequest, PredictRequest, RequestError
from engine.settings import Settings
from models.factory import Task
from streams.records import InvalidMessage, fit_label, validate_features, validate_id


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


def labels_input(request: LabelsRequest, settings: Settings, task: Task) -> list[tuple[str, Any]]:
    """(event id, label) of each item, by the rules of the labels topic; 422 naming the item."""
    labels = []
    for i, item in enumerate(request.labels):
        try:
            event_id = validate_id({"event_id": item.event_id}, "event_id", settings.max_id_length)
            label = fit_label(item.label, settings.max_feature_magnitude, task)
        except InvalidMessage as exc:
            raise RequestError(422, exc.detail, f"labels[{i}].{exc.field}") from None
        labels.append((event_id, label))
    return labels
