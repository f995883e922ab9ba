"""The Open Inference Protocol over HTTP (KServe v2 REST), on the API's port.

JSON tensors and the binary tensor data extension (tritonclient's default): a body whose
JSON header is `Inference-Header-Content-Length` bytes long, followed by the inputs'
binary data in the order of the inputs that declare `binary_data_size`. Outputs are
binary when the request asks (`binary_data` on an output, or `binary_data_output`).
Errors are the protocol's `{"error": "..."}` with 400 or 404; bad input never gets a 5xx.
"""

from __future__ import annotations

import json
import re
from collections.abc import Callable
from typing import Any

import orjson
from starlette.requests import Request
from starlette.responses import Response
from starlette.routing import Route
from starlette.types import Receive, Scope, Send

from engine.asgi_layers import read_body, send_response
from engine.oip import inference
from engine.oip.tensors import ProtocolError, Tensor, decode_binary, decode_json, encode_binary, json_data
from engine.runtime import Runtime
from models.online import OnlineModel

HEADER_LENGTH = b"inference-header-content-length"
HEADER_LENGTH_VALUE = re.compile(r"[0-9]{1,12}")
MAX_INFER_BYTES = 64 << 20  # a few hundred thousand rows of a few features


def _json(body: Any, status: int = 200, headers: dict[str, str] | None = None) -> Response:
    return Response(
        orjson.dumps(body, option=orjson.OPT_SERIALIZE_NUMPY),
        status_code=status,
        headers=headers,
        media_type="application/json",
    )


def _error(exc: ProtocolError) -> Response:
    return _json({"error": exc.message}, exc.status)


async def server_metadata(request: Request) -> Response:
    return _json(inference.server_metadata())


async def live(request: Request) -> Response:
    return Response(status_code=200)


async def ready(request: Request) -> Response:
    runtime: Runtime = request.state.runtime
    # The protocol's answer is the status: 200 for true, a 4xx for false.
    return Response(status_code=200 if all(runtime.checks().values()) else 400)


async def model_metadata(request: Request) -> Response:
    return _describe(request, inference.metadata)


async def model_ready(request: Request) -> Response:
    try:
        ready = inference.model_ready(request.state.runtime, request.path_params["name"])
    except ProtocolError as exc:
        return _error(exc)
    return Response(status_code=200 if ready else 400)


async def model_config(request: Request) -> Response:
    return _describe(request, inference.config)


def _describe(request: Request, describe: Callable[[OnlineModel, str], dict[str, Any]]) -> Response:
    """The served model named in the path, described; the protocol's 404 for another name."""
    name = request.path_params["name"]
    try:
        model = inference.serving_model(request.state.runtime, name)
    except ProtocolError as exc:
        return _error(exc)
    return _json(describe(model, name))


INFER_PREFIX, INFER_SUFFIX = "/v2/models/", "/infer"


async def infer(scope: Scope, receive: Receive, send: Send) -> None:
    """POST /v2/models/{name}/infer as a plain ASGI endpoint, like POST /predict (see
    engine/fast_predict.py): Starlette's request objects and router cost about as much as
    the inference. Served before the router (engine/api.py, FAST_PATHS_BY_PREFIX), and
    mounted as the route's app, so there is one implementation."""
    runtime: Runtime = scope["state"]["runtime"]
    name = scope.get("path_params", {}).get("name") or scope["path"][len(INFER_PREFIX) : -len(INFER_SUFFIX)]
    header_length = None
    for key, value in scope["headers"]:
        if key == HEADER_LENGTH:
            header_length = value.decode("latin-1")
    try:
        body = await _read(receive)
        found = inference.served_for(runtime, name)  # an unknown name is a 404, whatever the body holds
        header, binary = _split(body, header_length)
        tensors = _inputs(header, binary)
        outputs = header.get("outputs")
        if outputs is not None and not (isinstance(outputs, list) and all(isinstance(o, dict) for o in outputs)):
            raise ProtocolError(400, "outputs must be a list of objects")
        requested = None if outputs is None else [str(o.get("name")) for o in outputs]
        result = await inference.infer(runtime, name, found, tensors, requested)
    except ProtocolError as exc:
        await _send(send, exc.status, orjson.dumps({"error": exc.message}))
        return
    await _send(send, 200, *_answer(header, result))


async def _read(receive: Receive) -> bytes:
    return await read_body(
        receive,
        MAX_INFER_BYTES,
        lambda: ProtocolError(400, f"body larger than {MAX_INFER_BYTES} bytes"),
        lambda: ProtocolError(400, "the client went away"),
    )


async def _send(send: Send, status: int, payload: bytes, json_length: int | None = None) -> None:
    if json_length is None:
        await send_response(send, status, payload, [(b"content-type", b"application/json")])
        return
    binary = [(b"content-type", b"application/octet-stream"), (HEADER_LENGTH, str(json_length).encode())]
    await send_response(send, status, payload, binary)


class _InferEndpoint:
    """An ASGI callable, so that a Starlette Route mounts it as an app."""

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        await infer(scope, receive, send)


def _split(body: bytes, header_length: str | None) -> tuple[dict[str, Any], bytes]:
    if header_length is None:
        json_part, binary = body, b""
    else:
        if not HEADER_LENGTH_VALUE.fullmatch(header_length) or int(header_length) > len(body):
            raise ProtocolError(400, f"Inference-Header-Content-Length {header_length!r} does not fit the body")
        json_part, binary = body[: int(header_length)], body[int(header_length) :]
    try:
        header = orjson.loads(json_part)
    except orjson.JSONDecodeError as exc:
        header = _json_with_nan(json_part, exc)
    if not isinstance(header, dict):
        raise ProtocolError(400, "the request must be a JSON object")
    return header, binary


def _json_with_nan(raw: bytes, error: Exception) -> Any:
    """Python's reading, which takes NaN: clients built on Python's json (tritonclient) write
    a missing value of a float tensor as NaN, which JSON proper does not have."""
    try:
        header = json.loads(raw)
        orjson.dumps(header)  # Python's reading also lets lone surrogates (\ud800) through
    except (ValueError, RecursionError, orjson.JSONEncodeError):
        raise ProtocolError(400, f"the request is not valid JSON: {error}") from None
    return header


def _inputs(header: dict[str, Any], binary: bytes) -> list[Tensor]:
    inputs = header.get("inputs")
    if not isinstance(inputs, list) or not inputs:
        raise ProtocolError(400, "inputs must be a non-empty list")
    tensors, offset = [], 0
    for i, spec in enumerate(inputs):
        if not isinstance(spec, dict):
            raise ProtocolError(400, f"inputs[{i}] must be an object")
        name, datatype, shape = spec.get("name"), spec.get("datatype"), spec.get("shape")
        if not isinstance(name, str) or not isinstance(datatype, str):
            raise ProtocolError(400, f"inputs[{i}] needs a name and a datatype")
        if type(shape) is not list or not all(type(d) is int for d in shape):
            raise ProtocolError(400, f"input {name!r} needs a shape, a list of integers")
        size = _parameters(spec).get("binary_data_size")
        if size is not None:
            if not isinstance(size, int) or size < 0 or offset + size > len(binary):
                raise ProtocolError(400, f"input {name!r}: binary_data_size {size!r} runs past the binary data")
            tensors.append(decode_binary(name, datatype, shape, binary[offset : offset + size]))
            offset += size
        elif "data" in spec:
            tensors.append(decode_json(name, datatype, shape, spec["data"]))
        else:
            raise ProtocolError(400, f"input {name!r} has neither data nor binary_data_size")
    return tensors


def _parameters(spec: dict[str, Any]) -> dict[str, Any]:
    parameters = spec.get("parameters")
    return parameters if isinstance(parameters, dict) else {}


def _answer(header: dict[str, Any], result: inference.Inference) -> tuple[bytes, int | None]:
    """The response body, and the length of its JSON part when binary data follow it."""
    binary_all = bool(_parameters(header).get("binary_data_output", False))
    wanted = {
        str(o.get("name")): bool(_parameters(o).get("binary_data", binary_all)) for o in header.get("outputs") or []
    }
    outputs, blobs = [], []
    for output in result.outputs:
        tensor: dict[str, Any] = {"name": output.name, "datatype": output.datatype, "shape": output.shape}
        if wanted.get(output.name, binary_all):
            blob = encode_binary(output.datatype, output.values)
            tensor["parameters"] = {"binary_data_size": len(blob)}
            blobs.append(blob)
        else:
            tensor["data"] = json_data(output.datatype, output.values)
        outputs.append(tensor)
    body: dict[str, Any] = {
        "model_name": result.model_name,
        "model_version": result.model_version,
        "parameters": result.parameters,
        "outputs": outputs,
    }
    if isinstance(header.get("id"), str):
        body["id"] = header["id"]
    encoded = orjson.dumps(body)
    if not blobs:
        return encoded, None
    return b"".join([encoded, *blobs]), len(encoded)


ROUTES = [
    Route("/v2", server_metadata, methods=["GET"]),
    Route("/v2/health/live", live, methods=["GET"]),
    Route("/v2/health/ready", ready, methods=["GET"]),
    Route("/v2/models/{name}", model_metadata, methods=["GET"]),
    Route("/v2/models/{name}/ready", model_ready, methods=["GET"]),
    Route("/v2/models/{name}/config", model_config, methods=["GET"]),
    Route("/v2/models/{name}/infer", _InferEndpoint(), methods=["POST"]),
]
