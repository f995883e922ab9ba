"""The HTTP API (Starlette): health, readiness, predictions, models and metrics."""

from __future__ import annotations

import asyncio
import hmac
import math
import os
import time
from contextlib import asynccontextmanager
from typing import Any, AsyncIterator, Awaitable, Callable

import orjson
from prometheus_client import CONTENT_TYPE_LATEST, CollectorRegistry, generate_latest
from prometheus_client.multiprocess import MultiProcessCollector
from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import Response
from starlette.routing import Route

from engine import metrics
from engine.openapi import OPENAPI
from engine.runtime import Runtime
from engine.serving import dumps_json
from engine.learning import new_command
from models.factory import MODELS
from models.rollout import MODES
from streams.feature_store import FeatureStore
from streams.records import InvalidMessage, validate_features, validate_id

MAX_BODY_BYTES = 1 << 20
MAX_BATCH_ROWS = 1000
MAX_ENTITY_IDS = 1000


class JSONResponse(Response):
    media_type = "application/json"

    def render(self, content: Any) -> bytes:
        return dumps_json(content)


def error(status: int, message: str, field: str | None = None) -> JSONResponse:
    body: dict[str, Any] = {"error": message}
    if field is not None:
        body["field"] = field
    return JSONResponse(body, status_code=status)


async def read_json(request: Request) -> Any:
    content_type = request.headers.get("content-type", "")
    if content_type.split(";")[0].strip().lower() != "application/json":
        raise RequestError(415, "Content-Type must be application/json")
    length = request.headers.get("content-length")
    if length is not None and length.isdigit() and int(length) > MAX_BODY_BYTES:
        raise RequestError(413, f"body larger than {MAX_BODY_BYTES} bytes")
    body = await request.body()
    if len(body) > MAX_BODY_BYTES:
        raise RequestError(413, f"body larger than {MAX_BODY_BYTES} bytes")
    try:
        return orjson.loads(body)
    except orjson.JSONDecodeError as exc:
        raise RequestError(400, f"body is not valid JSON: {exc}") from None


class RequestError(Exception):
    def __init__(self, status: int, message: str, field: str | None = None) -> None:
        super().__init__(message)
        self.status = status
        self.message = message
        self.field = field


def parse_predict_request(body: Any, runtime: Runtime) -> tuple[str, dict[str, Any]]:
    if not isinstance(body, dict):
        raise RequestError(422, "body must be a JSON object", "body")
    unknown = set(body) - {"entity_id", "features"}
    if unknown:
        name = sorted(unknown)[0]
        raise RequestError(422, f"unknown field {name!r}", name)
    settings = runtime.settings
    try:
        entity_id = validate_id(body, "entity_id", settings.max_id_length)
        features, _ = validate_features(
            body.get("features", {}), runtime.feature_registry.ranges, max_magnitude=settings.max_feature_magnitude
        )
    except InvalidMessage as exc:
        raise RequestError(422, exc.detail, exc.field) from None
    return entity_id, features


async def predict(request: Request) -> Response:
    runtime: Runtime = request.state.runtime
    try:
        entity_id, features = parse_predict_request(await read_json(request), runtime)
    except RequestError as exc:
        return error(exc.status, exc.message, exc.field)
    return JSONResponse(await runtime.predictor.predict(entity_id, features))


async def predict_batch(request: Request) -> Response:
    runtime: Runtime = request.state.runtime
    try:
        body = await read_json(request)
        if not isinstance(body, dict) or set(body) != {"rows"} or not isinstance(body["rows"], list):
            raise RequestError(422, 'body must be {"rows": [{"entity_id": ..., "features": {...}}, ...]}', "rows")
        if not 1 <= len(body["rows"]) <= MAX_BATCH_ROWS:
            raise RequestError(422, f"rows must hold 1 to {MAX_BATCH_ROWS} items", "rows")
        parsed = []
        for i, row in enumerate(body["rows"]):
            try:
                parsed.append(parse_predict_request(row, runtime))
            except RequestError as exc:
                field = f"rows[{i}]" if exc.field in (None, "body") else f"rows[{i}].{exc.field}"
                raise RequestError(exc.status, exc.message, field) from None
    except RequestError as exc:
        return error(exc.status, exc.message, exc.field)
    return JSONResponse({"results": [await runtime.predictor.predict(e, f) for e, f in parsed]})


async def online_features(request: Request) -> Response:
    runtime: Runtime = request.state.runtime
    ids = request.query_params.getlist("entity_id")
    if not 1 <= len(ids) <= MAX_ENTITY_IDS:
        return error(422, f"give 1 to {MAX_ENTITY_IDS} entity_id query parameters", "entity_id")
    return JSONResponse({"rows": FeatureStore(runtime.feature_registry, runtime.features).get_online_features(ids)})


async def offline_features(request: Request) -> Response:
    runtime: Runtime = request.state.runtime
    ids = request.query_params.getlist("entity_id")
    if not 1 <= len(ids) <= MAX_ENTITY_IDS:
        return error(422, f"give 1 to {MAX_ENTITY_IDS} entity_id query parameters", "entity_id")
    try:
        timestamp = float(request.query_params.get("ts", ""))
    except ValueError:
        return error(422, "ts must be epoch seconds (event time)", "ts")
    if not math.isfinite(timestamp):
        return error(422, "ts must be a finite number of epoch seconds (event time)", "ts")
    # Parquet reads block: keep them off the event loop that serves /predict.
    rows = await asyncio.to_thread(runtime.offline_log.get_offline_features, ids, timestamp)
    return JSONResponse({"rows": rows})


async def healthz(request: Request) -> Response:
    return JSONResponse({"status": "alive"})


async def readyz(request: Request) -> Response:
    runtime: Runtime = request.state.runtime
    checks = runtime.checks()
    ready = all(checks.values())
    # Reported, not required: a model that answered badly is served around by the fallback
    # chain (and must stay in rotation to recover); without Redis the engine serves uncached.
    checks["model_healthy"] = runtime.predictor.healthy
    redis = None if runtime.redis is None else await runtime.redis.ping()
    return JSONResponse({"ready": ready, "checks": checks, "redis": redis}, status_code=200 if ready else 503)


async def list_models(request: Request) -> Response:
    runtime: Runtime = request.state.runtime
    replica = runtime.models
    published = replica.champion if replica is not None else None
    live = runtime.predictor.model
    registry = runtime.registry_record()
    serving = None
    if live is not None:
        info = published.info if published is not None else {}
        serving = {
            "name": live.name,
            "version": live.version,
            "task": live.task.value,
            "samples_learned": live.samples_learned,
            "metrics": live.metric_values(),
            "concept_drifts": live.drifts_detected,
            "revision": published.revision if published else None,
            "published_at": published.published_at if published else None,
            "model_age_seconds": runtime.predictor.models.age_seconds(),
            "predictions_awaiting_label": runtime.pending_predictions(),
            "prediction_model_lag": info.get("prediction_model_lag"),
        }
    return JSONResponse(
        {
            "serving": serving,
            "versions": registry.get("versions", []),
            "serving_version": registry.get("serving"),
            "rollout": published.info.get("rollout") if published is not None else None,
            "applied": registry.get("applied", []),
            "snapshots": runtime.snapshots.listing(),
            "available": [
                {"name": spec.name, "task": spec.task.value, "description": spec.description}
                for spec in MODELS.values()
            ],
        }
    )


def check_admin(request: Request) -> JSONResponse | None:
    """Admin routes need `Authorization: Bearer $ADMIN_TOKEN`: 401 without one, 403 when wrong."""
    runtime: Runtime = request.state.runtime
    header = request.headers.get("authorization", "")
    if not header.lower().startswith("bearer ") or not header[7:].strip():
        return error(401, "admin route: send Authorization: Bearer <ADMIN_TOKEN>")
    expected = runtime.settings.admin_token
    if not expected or not hmac.compare_digest(header[7:].strip().encode(), expected.encode()):
        return error(403, "wrong admin token" if expected else "admin routes are off: ADMIN_TOKEN is not set")
    return None


async def run_command(request: Request, action: str, **args: Any) -> Response:
    """Hands the command to the learner and answers with its result; 202 with how to follow
    it when the learner has not answered in time (it is down, or busy)."""
    runtime: Runtime = request.state.runtime
    name = request.path_params["name"]
    live = runtime.predictor.model
    if live is None:
        return error(503, "no model is loaded yet")
    if name != live.name:
        return error(404, f"the serving model is {live.name!r}, not {name!r}", "name")
    command = new_command(action, name, **args)
    result = await runtime.command(command)
    if result is None:
        return JSONResponse(
            {"accepted": command["id"], "detail": "the learner has not answered yet; GET /models lists "
             "each command it carried out under `applied`, by this id"},
            status_code=202,
        )
    body = {k: v for k, v in result.items() if k not in ("ok", "status", "id")}
    if not result["ok"]:
        return error(result["status"], body.get("error", "refused"))
    # The learner has published the outcome; this process may still be reading it.
    return JSONResponse({"id": command["id"], **body})


async def promote(request: Request) -> Response:
    refused = check_admin(request)
    if refused is not None:
        return refused
    try:
        body = await read_json(request)
    except RequestError as exc:
        return error(exc.status, exc.message, exc.field)
    version = body.get("version") if isinstance(body, dict) else None
    if isinstance(version, bool) or not isinstance(version, int):
        return error(422, "body must be {\"version\": <integer>}", "version")
    return await run_command(request, "promote", version=version)


async def rollback(request: Request) -> Response:
    refused = check_admin(request)
    if refused is not None:
        return refused
    return await run_command(request, "rollback")


async def start_rollout(request: Request) -> Response:
    """Body {"version": N, "mode": "shadow"|"canary", "share": 0.1, "min_labels": 1000, "margin": 0.0}."""
    runtime: Runtime = request.state.runtime
    refused = check_admin(request)
    if refused is not None:
        return refused
    try:
        body = await read_json(request)
        if not isinstance(body, dict):
            raise RequestError(422, "body must be a JSON object", "body")
        version = body.get("version")
        if isinstance(version, bool) or not isinstance(version, int):
            raise RequestError(422, "version must be an integer", "version")
        options = {
            "mode": body.get("mode", "shadow"),
            "share": body.get("share", 0.0),
            "min_labels": body.get("min_labels", runtime.settings.rollout_min_labels),
            "margin": body.get("margin", runtime.settings.rollout_margin),
        }
        if options["mode"] not in MODES:
            raise RequestError(422, f"mode must be one of {list(MODES)}", "mode")
        for name in ("share", "margin"):
            value = options[name]
            if isinstance(value, bool) or not isinstance(value, (int, float)) or not math.isfinite(value):
                raise RequestError(422, f"{name} must be a number", name)
        if not 0.0 <= options["share"] <= 1.0:
            raise RequestError(422, "share must be between 0 and 1", "share")
        if isinstance(options["min_labels"], bool) or not isinstance(options["min_labels"], int) or options["min_labels"] < 1:
            raise RequestError(422, "min_labels must be a positive integer", "min_labels")
    except RequestError as exc:
        return error(exc.status, exc.message, exc.field)
    return await run_command(request, "rollout", version=version, **options)


async def stop_rollout(request: Request) -> Response:
    refused = check_admin(request)
    if refused is not None:
        return refused
    return await run_command(request, "rollout_stop")


async def openapi_document(request: Request) -> Response:
    return JSONResponse(OPENAPI)


async def prometheus_metrics(request: Request) -> Response:
    if os.environ.get("PROMETHEUS_MULTIPROC_DIR"):
        # Every process of `engine run` writes there: this process answers for all of them.
        registry = CollectorRegistry()
        MultiProcessCollector(registry)
        return Response(generate_latest(registry), media_type=CONTENT_TYPE_LATEST)
    return Response(generate_latest(), media_type=CONTENT_TYPE_LATEST)


class RequestMetrics:
    """Pure ASGI middleware: request latency by route and status, in seconds."""

    def __init__(self, app: Starlette) -> None:
        self.app = app

    async def __call__(self, scope: dict, receive: Any, send: Any) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        started = time.perf_counter()
        status = 500

        async def send_with_status(message: dict) -> None:
            nonlocal status
            if message["type"] == "http.response.start":
                status = message["status"]
            await send(message)

        try:
            await self.app(scope, receive, send_with_status)
        finally:
            # The route's template (/models/{name}/promote), never the raw path: clients must
            # not be able to create unbounded series. The router records the route it matched.
            route = scope.get("route")
            template = getattr(route, "path", None) or "other"
            metrics.REQUEST_SECONDS.labels(template, str(status)).observe(time.perf_counter() - started)


def create_api(start_runtime: Callable[[], Awaitable[Runtime]]) -> Any:
    """The ASGI app; `start_runtime` builds the process's shared objects on the running loop."""

    @asynccontextmanager
    async def lifespan(app: Starlette) -> AsyncIterator[dict[str, Any]]:
        runtime = await start_runtime()
        try:
            yield {"runtime": runtime}
        finally:
            await runtime.stop()

    app = Starlette(
        routes=[
            Route("/healthz", healthz, methods=["GET"]),
            Route("/readyz", readyz, methods=["GET"]),
            Route("/predict", predict, methods=["POST"]),
            Route("/predict/batch", predict_batch, methods=["POST"]),
            Route("/openapi.json", openapi_document, methods=["GET"]),
            Route("/models", list_models, methods=["GET"]),
            Route("/models/{name}/promote", promote, methods=["POST"]),
            Route("/models/{name}/rollback", rollback, methods=["POST"]),
            Route("/models/{name}/rollout", start_rollout, methods=["POST"]),
            Route("/models/{name}/rollout/stop", stop_rollout, methods=["POST"]),
            Route("/features", online_features, methods=["GET"]),
            Route("/features/offline", offline_features, methods=["GET"]),
            Route("/metrics", prometheus_metrics, methods=["GET"]),
        ],
        lifespan=lifespan,
    )
    return RequestMetrics(app)
