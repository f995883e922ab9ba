"""The HTTP API (Starlette): health, readiness, predictions, models and metrics."""

from __future__ import annotations

import asyncio
import os
from collections.abc import AsyncIterator, Awaitable, Callable
from contextlib import asynccontextmanager
from typing import Any

import orjson
from msgspec import UNSET
from prometheus_client import CONTENT_TYPE_LATEST, CollectorRegistry, generate_latest
from prometheus_client.multiprocess import MultiProcessCollector
from starlette.applications import Starlette
from starlette.authentication import requires
from starlette.requests import Request
from starlette.responses import Response
from starlette.routing import Route

from engine import admin_api, fast_predict
from engine.asgi_layers import FastPaths, RequestMetrics
from engine.auth import ADMIN_AUTH, ADMIN_SCOPE, check_bearer
from engine.contract import (
    MAX_BATCH_ROWS,
    CommandAccepted,
    CommandDone,
    Error,
    FeatureRows,
    FeaturesQuery,
    JsonBody,
    LabelsAccepted,
    LabelsRequest,
    Liveness,
    ModelQuery,
    ModelsListing,
    OfflineFeaturesQuery,
    PredictBatchRequest,
    PredictionAnswer,
    PredictionBatch,
    PredictRequest,
    PromoteRequest,
    Readiness,
    RequestError,
    RolloutRequest,
    error_response,
    read_query,
)
from engine.oip import rest as oip_rest
from engine.openapi import Operation, Reply, document
from engine.request_rules import labels_input, model_asked, predict_input
from engine.runtime import Runtime, ServedModel
from engine.serving import dumps_json
from models.factory import MODELS
from models.online import LOWER_IS_BETTER, PRIMARY_METRIC
from streams.feature_store import FeatureStore
from streams.records import label_rule

PREDICT_BATCH_BODY = JsonBody(PredictBatchRequest)
LABELS_BODY = JsonBody(LabelsRequest)


class JSONResponse(Response):
    media_type = "application/json"

    def render(self, content: Any) -> bytes:
        return dumps_json(content)


async def request_error(request: Request, exc: Exception) -> Response:
    assert isinstance(exc, RequestError)
    return error_response(exc.status, exc.message, exc.field)


async def predict_batch(request: Request) -> Response:
    runtime: Runtime = request.state.runtime
    body = await PREDICT_BATCH_BODY.read(request)
    ranges = runtime.feature_registry.ranges
    query = request.scope.get("query_string") or b""
    parsed = []
    for i, row in enumerate(body.rows):
        try:
            served = runtime.model(model_asked(query, row.model))
            parsed.append((served.predictor, *predict_input(row, runtime.settings, ranges)))
        except RequestError as exc:
            raise RequestError(exc.status, exc.message, f"rows[{i}].{exc.field}") from None
    return JSONResponse({"results": [await p.predict(e, f, i) for p, e, f, i in parsed]})


async def post_labels(request: Request) -> Response:
    runtime: Runtime = request.state.runtime
    check_bearer(request, runtime.settings.labels_token, "LABELS_TOKEN")
    body = await LABELS_BODY.read(request)
    labels = labels_input(body, runtime.settings, label_rule(runtime.settings.models))
    accepted = await runtime.send_labels(labels)
    return JSONResponse({"accepted": accepted}, status_code=202)


async def online_features(request: Request) -> Response:
    runtime: Runtime = request.state.runtime
    query = read_query(request, FeaturesQuery)
    return JSONResponse(
        {"rows": FeatureStore(runtime.feature_registry, runtime.features).get_online_features(query.entity_id)}
    )


async def offline_features(request: Request) -> Response:
    runtime: Runtime = request.state.runtime
    query = read_query(request, OfflineFeaturesQuery)
    # Parquet reads block: keep them off the event loop that serves /predict.
    rows = await asyncio.to_thread(runtime.offline_log.get_offline_features, query.entity_id, query.ts)
    return JSONResponse({"rows": rows})


async def healthz(request: Request) -> Response:
    return JSONResponse({"status": "alive"})


async def readyz(request: Request) -> Response:
    runtime: Runtime = request.state.runtime
    checks = runtime.checks()
    ready = all(checks.values())
    # Reported, not required: a model that answered badly is served around by the fallback
    # chain (and must stay in rotation to recover); without Redis the engine serves uncached;
    # without the broker it serves from the features and model it holds (their ages say how old).
    checks["model_healthy"] = all(served.predictor.healthy for served in runtime.served.values())
    redis = None if runtime.redis is None else await runtime.redis.ping()
    body = {"ready": ready, "checks": checks, "redis": redis, "kafka": runtime.kafka_reachable()}
    if runtime.workers is not None:
        # Reported, not required: serving answers from the features it holds while a worker
        # recovers or lags; each worker's state says how fresh they are.
        body["workers"] = runtime.workers.describe()
    return JSONResponse(body, status_code=200 if ready else 503)


async def list_models(request: Request) -> Response:
    """One model's document (`?model=`, default: the first), with every model's primary
    metric under `models`: a live leaderboard."""
    runtime: Runtime = request.state.runtime
    query = read_query(request, ModelQuery)
    served = runtime.model(None if query.model is UNSET else query.model)
    replica = served.replica
    published = replica.champion if replica is not None else None
    live = served.predictor.model
    registry = replica.registry if replica is not None else {}
    serving = None
    if live is not None:
        serving = {
            "name": live.name,
            "version": live.version,
            "task": live.task.value,
            "samples_learned": live.samples_learned,
            "metrics": live.metric_values(),
            # What HTTP clients were answered (POST /predict with an event_id), scored on their labels.
            "served_metrics": live.served_metric_values() if live.served_samples else None,
            "served_samples": live.served_samples,
            "concept_drifts": live.drifts_detected,
            "revision": published.revision if published else None,
            "published_at": published.published_at if published else None,
            "model_age_seconds": served.predictor.models.age_seconds(),
            "predictions_awaiting_label": runtime.pending_predictions(),
            "prediction_model_lag": published.info.prediction_model_lag if published is not None else None,
            "features": {
                "names": len(live.feature_names),
                "limit": live.max_features,
                "dropped": live.features_dropped,
            },
        }
    return JSONResponse(
        {
            "model": served.name,
            "serving": serving,
            "versions": registry.get("versions", []),
            "serving_version": registry.get("serving"),
            "rollout": published.info.rollout if published is not None else None,
            "applied": registry.get("applied", []),
            "snapshots": served.snapshots.listing(),
            "available": [
                {"name": spec.name, "task": spec.task.value, "description": spec.description}
                for spec in MODELS.values()
            ],
            "models": [_leaderboard_row(one) for one in runtime.served.values()],
        }
    )


def _leaderboard_row(served: ServedModel) -> dict[str, Any]:
    named = served.settings.model
    live = served.predictor.model
    metric = PRIMARY_METRIC[named.task]
    return {
        "name": named.name,
        "factory": named.factory,
        "target": named.target,
        "task": named.task.value,
        "serving": None if live is None else {"name": live.name, "version": live.version},
        "samples_learned": 0 if live is None else live.samples_learned,
        "primary_metric": metric,
        "value": None if live is None or not live.samples_learned else live.metric_values()[metric],
        "lower_is_better": metric in LOWER_IS_BETTER,
    }


async def openapi_document(request: Request) -> Response:
    return Response(OPENAPI_JSON, media_type="application/json")


async def prometheus_metrics(request: Request) -> Response:
    if os.environ.get("PROMETHEUS_MULTIPROC_DIR"):
        # Every process of `engine run` writes there: this process answers for all of them.
        registry = CollectorRegistry()
        MultiProcessCollector(registry)
        return Response(generate_latest(registry), media_type=CONTENT_TYPE_LATEST)
    return Response(generate_latest(), media_type=CONTENT_TYPE_LATEST)


class ApiRoute(Route):
    """A route with its `Operation` for /openapi.json; the one place admin auth is applied:
    the authentication middleware, and `requires("admin")` around the endpoint."""

    def __init__(self, path: str, endpoint: Callable[..., Any], method: str, operation: Operation) -> None:
        if operation.admin:
            endpoint = requires(ADMIN_SCOPE)(endpoint)
        super().__init__(path, endpoint, methods=[method], middleware=ADMIN_AUTH if operation.admin else None)
        self.operation = operation


def _admin(summary: str, body: Any = None) -> Operation:
    return Operation(
        summary=summary,
        body=body,
        admin=True,
        path_params={"name": "the named model's name (MODELS), or the serving model's factory (MODEL alone)"},
        responses={
            200: Reply(CommandDone, "done"),
            202: Reply(CommandAccepted, "sent; the learner has not answered yet"),
            404: Reply(Error, "not the serving model's name"),
            409: Reply(Error, "no such version, or nothing to roll back"),
            503: Reply(Error, "no model loaded, no learner reachable, or the registry could not be written"),
        },
    )


ROUTES = [
    ApiRoute("/healthz", healthz, "GET", Operation("Liveness", {200: Reply(Liveness, "alive")})),
    ApiRoute(
        "/readyz",
        readyz,
        "GET",
        Operation(
            "Readiness: a model held and the features caught up",
            {200: Reply(Readiness, "ready"), 503: Reply(Readiness, "not ready")},
        ),
    ),
    ApiRoute(
        "/predict",
        fast_predict.ENDPOINT,
        "POST",
        Operation(
            "Score one entity now",
            {200: Reply(PredictionAnswer, "the prediction"), 404: Reply(Error, "no model by this name")},
            body=PredictRequest,
            query=ModelQuery,
        ),
    ),
    ApiRoute(
        "/predict/batch",
        predict_batch,
        "POST",
        Operation(
            f"Score 1 to {MAX_BATCH_ROWS} entities in one call",
            {200: Reply(PredictionBatch, "one prediction per row"), 404: Reply(Error, "no model by this name")},
            body=PredictBatchRequest,
            query=ModelQuery,
        ),
    ),
    ApiRoute(
        "/labels",
        post_labels,
        "POST",
        Operation(
            "Labels for events or served predictions (by event_id), sent to the labels topic",
            {
                202: Reply(LabelsAccepted, "on the labels topic, acknowledged by Kafka"),
                401: Reply(Error, "LABELS_TOKEN is set and no bearer token was sent"),
                403: Reply(Error, "wrong bearer token"),
                503: Reply(Error, "Kafka did not acknowledge in time: send them again"),
            },
            body=LabelsRequest,
        ),
    ),
    ApiRoute(
        "/openapi.json",
        openapi_document,
        "GET",
        Operation(
            "This document",
            {200: Reply(dict[str, Any], "OpenAPI 3.1")},
        ),
    ),
    ApiRoute(
        "/models",
        list_models,
        "GET",
        Operation(
            "One named model (default: the first) with its registered versions, every named model's"
            " primary metric, and the factories available",
            {200: Reply(ModelsListing, "models"), 404: Reply(Error, "no model by this name")},
            query=ModelQuery,
        ),
    ),
    ApiRoute(
        "/models/{name}/promote",
        admin_api.promote,
        "POST",
        _admin(
            "Serve a registered version (the outgoing model's state is kept for rollback)",
            PromoteRequest,
        ),
    ),
    ApiRoute(
        "/models/{name}/rollback",
        admin_api.rollback,
        "POST",
        _admin("Serve the version that served before the current one"),
    ),
    ApiRoute(
        "/models/{name}/rollout",
        admin_api.start_rollout,
        "POST",
        _admin(
            "Start a shadow or canary rollout of a registered version",
            RolloutRequest,
        ),
    ),
    ApiRoute(
        "/models/{name}/rollout/stop",
        admin_api.stop_rollout,
        "POST",
        _admin("Stop the running rollout without a decision"),
    ),
    ApiRoute(
        "/features",
        online_features,
        "GET",
        Operation(
            "Online feature rows (get_online_features)",
            {200: Reply(FeatureRows, "one row per entity")},
            query=FeaturesQuery,
        ),
    ),
    ApiRoute(
        "/features/offline",
        offline_features,
        "GET",
        Operation(
            "Point-in-time feature rows as online serving returned them at event time `ts` (get_offline_features)",
            {200: Reply(FeatureRows, "one row per entity"), 503: Reply(Error, "no offline log in this process")},
            query=OfflineFeaturesQuery,
        ),
    ),
    ApiRoute(
        "/metrics",
        prometheus_metrics,
        "GET",
        Operation(
            "Prometheus metrics",
            {200: Reply(str, "Prometheus text format", "text/plain")},
        ),
    ),
]

# Served by a plain ASGI handler before Starlette's router (the same callable as the route).
FAST_PATHS = {("POST", "/predict"): fast_predict.predict}
FAST_PATHS_BY_PREFIX = [
    ("POST", oip_rest.INFER_PREFIX, oip_rest.INFER_SUFFIX, "/v2/models/{name}/infer", oip_rest.infer)
]

OPENAPI = document(
    ROUTES,
    title="rtml engine",
    version="0.1.0",
    description="Online predictions from River models fed by Kafka events.",
)
OPENAPI_JSON = orjson.dumps(OPENAPI)


def create_api(start_runtime: Callable[[], Awaitable[Runtime]]) -> Any:
    """The ASGI app; `start_runtime` builds the process's shared objects on the running loop."""

    @asynccontextmanager
    async def lifespan(app: Starlette) -> AsyncIterator[dict[str, Any]]:
        runtime = await start_runtime()
        try:
            yield {"runtime": runtime}
        finally:
            await runtime.stop()

    # The Open Inference Protocol's routes have their own specification: not in /openapi.json.
    # First, so that an inference request is matched without trying every other route.
    app = Starlette(
        routes=[*oip_rest.ROUTES, *ROUTES], exception_handlers={RequestError: request_error}, lifespan=lifespan
    )
    return RequestMetrics(FastPaths(app, FAST_PATHS, [*oip_rest.ROUTES, *ROUTES], FAST_PATHS_BY_PREFIX))
