"""One implementation of "predict for these rows" for the Open Inference Protocol: the REST
and gRPC adapters decode their tensors into `Tensor`s, and this turns them into the rows
`/predict` takes (an entity id and its features), asks the same `Predictor` for each (so
the cache, the fallback chain and the join with the entity's online features are those of
`/predict`), and builds the output tensors.

Inputs: `entity_id`, BYTES [N] (or [N, 1]), and one input per feature, [N] or [N, 1]:
numbers (FP*, INT*, UINT*), BYTES for strings, BOOL. An omitted feature is missing for
every row; NaN in a floating-point input is missing for that row.

Outputs: `prediction`, BYTES [N] (the class, as /predict writes it: `true`, `cat`) for
classifiers, FP64 [N] for regressors (NaN when nothing could be predicted); classifiers
also `probabilities` FP64 [N, C] and `classes` BYTES [N, C] (the same C classes, sorted,
on every row).
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Any

from engine.contract import PredictRequest, RequestError
from engine.oip.tensors import ProtocolError, Tensor
from engine.request_rules import predict_input
from engine.runtime import Runtime, ServedModel
from models.online import OnlineModel

ENTITY_INPUT = "entity_id"
PLATFORM = "river"
SERVER_NAME = "rtml"
SERVER_VERSION = "0.1.0"
EXTENSIONS = ["binary_tensor_data", "model_configuration"]


@dataclass
class Output:
    name: str
    datatype: str
    shape: list[int]
    values: list[Any]


@dataclass
class Inference:
    model_name: str
    model_version: str
    outputs: list[Output]
    parameters: dict[str, Any]


def served_for(runtime: Runtime, name: str) -> tuple[ServedModel, OnlineModel]:
    """The model a v2 path names, and its serving model: 404 naming the choices for another
    name. Named models (MODELS) go by their names, the single model of an engine without
    MODELS by its serving model's factory."""
    default = runtime.model(None)
    found: ServedModel | None
    if default.settings.model.scoped:
        found, choices = runtime.served.get(name), list(runtime.served)
    else:
        live = default.predictor.model
        choices = [default.settings.model_name if live is None else live.name]
        found = default if name == choices[0] else None
    if found is None:
        raise ProtocolError(404, f"no model {name!r}; the models served: {', '.join(choices)}")
    model = found.predictor.model
    if model is None:
        raise ProtocolError(400, f"model {name!r} is not loaded yet")
    return found, model


def serving_model(runtime: Runtime, name: str) -> OnlineModel:
    return served_for(runtime, name)[1]


def model_ready(runtime: Runtime, name: str) -> bool:
    try:
        serving_model(runtime, name)
    except ProtocolError as exc:
        if exc.status == 404:
            raise
        return False
    return True


def rows_of(runtime: Runtime, tensors: list[Tensor]) -> list[tuple[str, dict[str, Any]]]:
    """The (entity id, features) of each row, judged by /predict's own rules."""
    by_name: dict[str, Tensor] = {}
    for tensor in tensors:
        if tensor.name in by_name:
            raise ProtocolError(400, f"input {tensor.name!r} is given twice")
        by_name[tensor.name] = tensor
    entity = by_name.pop(ENTITY_INPUT, None)
    if entity is None:
        raise ProtocolError(400, f"the input {ENTITY_INPUT!r} (BYTES [N]) is required")
    if entity.datatype != "BYTES":
        raise ProtocolError(400, f"input {ENTITY_INPUT!r} must be BYTES, not {entity.datatype}")
    n = entity.rows
    for tensor in by_name.values():
        if tensor.rows != n:
            raise ProtocolError(400, f"input {tensor.name!r} has {tensor.rows} rows, {ENTITY_INPUT!r} has {n}")
    entity_ids = [_text(ENTITY_INPUT, value) for value in entity.values]
    columns = [(name, [_feature(t, v) for v in t.values]) for name, t in by_name.items()]
    rows = []
    settings, ranges = runtime.settings, runtime.feature_registry.ranges
    for i, entity_id in enumerate(entity_ids):
        features = {name: values[i] for name, values in columns if values[i] is not None}
        try:
            entity_id, features, _ = predict_input(PredictRequest(entity_id, features=features), settings, ranges)
        except RequestError as exc:
            raise ProtocolError(400, f"row {i}: {exc.message}") from None
        rows.append((entity_id, features))
    return rows


def _text(name: str, value: bytes) -> str:
    try:
        return value.decode("utf-8")
    except UnicodeDecodeError:
        raise ProtocolError(400, f"input {name!r} holds bytes that are not UTF-8") from None


def _feature(tensor: Tensor, value: Any) -> Any:
    if tensor.datatype == "BYTES":
        return _text(tensor.name, value)
    if isinstance(value, float) and math.isnan(value):
        return None  # missing for this row
    return value


async def infer(
    runtime: Runtime,
    name: str,
    found: tuple[ServedModel, OnlineModel],
    tensors: list[Tensor],
    requested: list[str] | None,
) -> Inference:
    """`found`: what `served_for` gave for `name`, asked before the inputs were read (an
    unknown name is a 404 whatever the body holds)."""
    served, model = found
    rows = rows_of(runtime, tensors)
    answers = [await served.predictor.predict(entity_id, features) for entity_id, features in rows]
    outputs = _outputs(model, answers)
    if requested is not None:
        known = {output.name: output for output in outputs}
        unknown = [r for r in requested if r not in known]
        if unknown:
            raise ProtocolError(400, f"no output {unknown[0]!r}; the outputs: {', '.join(known)}")
        outputs = [known[r] for r in requested]
    parameters: dict[str, Any] = {"model_version": model.version}
    fallbacks = [a["fallback"]["reason"] for a in answers if a["fallback"] is not None]
    if fallbacks:
        parameters["fallback"] = fallbacks[0]
        parameters["fallback_rows"] = len(fallbacks)
    return Inference(name, str(model.version), outputs, parameters)


def class_text(label: Any) -> str:
    """A class as /predict writes it (JSON keys): true, false, 3, cat."""
    if isinstance(label, bool):
        return "true" if label else "false"
    return str(label)


def _outputs(model: OnlineModel, answers: list[dict[str, Any]]) -> list[Output]:
    n = len(answers)
    if not model.is_classifier:
        values = [math.nan if a["prediction"] is None else float(a["prediction"]) for a in answers]
        return [Output("prediction", "FP64", [n], values)]
    predictions = [b"" if a["prediction"] is None else class_text(a["prediction"]).encode() for a in answers]
    probabilities = [{class_text(k): float(p) for k, p in (a["probabilities"] or {}).items()} for a in answers]
    classes = sorted({label for row in probabilities for label in row})
    c = len(classes)
    return [
        Output("prediction", "BYTES", [n], predictions),
        Output("probabilities", "FP64", [n, c], [row.get(label, 0.0) for row in probabilities for label in classes]),
        Output("classes", "BYTES", [n, c], [label.encode() for _ in range(n) for label in classes]),
    ]


def metadata(model: OnlineModel, name: str) -> dict[str, Any]:
    features = [{"name": feature, "datatype": "FP64", "shape": [-1]} for feature in sorted(model.feature_names)]
    return {
        "name": name,
        "versions": [str(model.version)],
        "platform": PLATFORM,
        "inputs": [{"name": ENTITY_INPUT, "datatype": "BYTES", "shape": [-1]}, *features],
        "outputs": _output_metadata(model),
    }


def _output_metadata(model: OnlineModel) -> list[dict[str, Any]]:
    if not model.is_classifier:
        return [{"name": "prediction", "datatype": "FP64", "shape": [-1]}]
    return [
        {"name": "prediction", "datatype": "BYTES", "shape": [-1]},
        {"name": "probabilities", "datatype": "FP64", "shape": [-1, -1]},
        {"name": "classes", "datatype": "BYTES", "shape": [-1, -1]},
    ]


CONFIG_TYPES = {"BYTES": "TYPE_STRING", "FP64": "TYPE_FP64"}


def config(model: OnlineModel, name: str) -> dict[str, Any]:
    """Triton's model configuration: no batch dimension of Triton's own (max_batch_size 0),
    the rows are the first dimension of every tensor."""
    meta = metadata(model, name)
    return {
        "name": name,
        "platform": PLATFORM,
        "backend": PLATFORM,
        "max_batch_size": 0,
        "input": [
            {"name": t["name"], "data_type": CONFIG_TYPES[t["datatype"]], "dims": t["shape"], "optional": i > 0}
            for i, t in enumerate(meta["inputs"])
        ],
        "output": [
            {"name": t["name"], "data_type": CONFIG_TYPES[t["datatype"]], "dims": t["shape"]} for t in meta["outputs"]
        ],
    }


def server_metadata() -> dict[str, Any]:
    return {"name": SERVER_NAME, "version": SERVER_VERSION, "extensions": EXTENSIONS}
