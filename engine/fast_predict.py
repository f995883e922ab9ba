"""POST /predict as a plain ASGI endpoint: the hot path, without Starlette's request objects,
router and middleware stack.

Those cost about as much as the prediction itself (measured: 103 µs a request in process
through Starlette, most of it not ours). This path reads the body from `receive`, applies
the same declaration and checks as every other JSON route. engine/api.py lists it in
FAST_PATHS (served before Starlette's router, engine/asgi_layers.py) and mounts the same
callable as the documented route, so there is one implementation of the endpoint.
"""

from __future__ import annotations

import msgspec
from starlette.types import Receive, Scope, Send

from engine.asgi_layers import read_body, send_response
from engine.contract import (
    BODY_TOO_LARGE,
    MAX_BODY_BYTES,
    Error,
    JsonBody,
    PredictRequest,
    RequestError,
    check_body_headers,
)
from engine.request_rules import model_asked, predict_input
from engine.runtime import Runtime
from engine.serving import dumps_json

PREDICT_BODY = JsonBody(PredictRequest)
JSON_HEADERS = [(b"content-type", b"application/json")]
CLIENT_GONE = "the client went away"


async def predict(scope: Scope, receive: Receive, send: Send) -> None:
    runtime: Runtime = scope["state"]["runtime"]
    try:
        headers = dict(scope["headers"])
        length = headers.get(b"content-length")
        check_body_headers(headers.get(b"content-type", b"").decode("latin-1"), length and length.decode("latin-1"))
        body = PREDICT_BODY.decode(await _read(receive))
        entity_id, features, event_id = predict_input(body, runtime.settings, runtime.feature_registry.ranges)
        query = scope.get("query_string")
        predictor = (
            runtime.predictor
            if not query and body.model is msgspec.UNSET
            else runtime.model(model_asked(query or b"", body.model)).predictor
        )
    except RequestError as exc:
        payload = msgspec.json.encode(Error(exc.message, msgspec.UNSET if exc.field is None else exc.field))
        await _answer(send, exc.status, payload)
        return
    await _answer(send, 200, dumps_json(await predictor.predict(entity_id, features, event_id)))


async def _read(receive: Receive) -> bytes:
    return await read_body(
        receive, MAX_BODY_BYTES, lambda: RequestError(413, BODY_TOO_LARGE), lambda: RequestError(400, CLIENT_GONE)
    )


async def _answer(send: Send, status: int, payload: bytes) -> None:
    await send_response(send, status, payload, JSON_HEADERS)


class _Endpoint:
    """An ASGI callable, so that a Starlette Route mounts it as an app, not as a
    request -> response function."""

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        await predict(scope, receive, send)


ENDPOINT = _Endpoint()
