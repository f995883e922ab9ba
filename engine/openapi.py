"""The OpenAPI 3.1 document served at /openapi.json."""

from __future__ import annotations

from typing import Any

_ERROR = {
    "type": "object",
    "required": ["error"],
    "properties": {"error": {"type": "string"}, "field": {"type": "string"}},
}


def _json(schema: dict[str, Any], description: str) -> dict[str, Any]:
    return {"description": description, "content": {"application/json": {"schema": schema}}}


def _errors(*codes: int) -> dict[str, Any]:
    meaning = {
        400: "body is not valid JSON",
        413: "body too large",
        415: "Content-Type is not application/json",
        422: "the body breaks the schema; `field` names the offending field",
    }
    return {str(code): _json({"$ref": "#/components/schemas/Error"}, meaning[code]) for code in codes}


FEATURE_ROWS = {
    "type": "object",
    "required": ["rows"],
    "properties": {"rows": {"type": "array", "items": {
        "type": "object", "required": ["entity_id", "known", "values", "updated_at", "version"],
        "properties": {"entity_id": {"type": "string"}, "known": {"type": "boolean"},
                       "values": {"type": "object", "additionalProperties": {"type": ["number", "null"]}},
                       "updated_at": {"type": ["number", "null"]}, "version": {"type": "integer"}}}}},
}

def _admin(summary: str, body: dict[str, Any] | None) -> dict[str, Any]:
    operation: dict[str, Any] = {
        "summary": summary + " (admin: Authorization: Bearer $ADMIN_TOKEN)",
        "parameters": [{"name": "name", "in": "path", "required": True, "schema": {"type": "string"}}],
        "responses": {
            "200": _json({"type": "object"}, "done"),
            "401": _json({"$ref": "#/components/schemas/Error"}, "no bearer token"),
            "403": _json({"$ref": "#/components/schemas/Error"}, "wrong token, or admin routes off"),
            "404": _json({"$ref": "#/components/schemas/Error"}, "not the serving model's name"),
            "409": _json({"$ref": "#/components/schemas/Error"}, "no such version, or nothing to roll back"),
            "503": _json({"$ref": "#/components/schemas/Error"}, "no registry or stream in this process"),
            **_errors(400, 413, 415, 422),
        },
    }
    if body is not None:
        operation["requestBody"] = {"required": True, "content": {"application/json": {"schema": body}}}
    return {"post": operation}


PREDICT_REQUEST = {
    "type": "object",
    "required": ["entity_id"],
    "additionalProperties": False,
    "properties": {
        "entity_id": {"oneOf": [{"type": "string", "minLength": 1}, {"type": "integer"}]},
        "features": {
            "type": "object",
            "description": "name -> number, string, boolean or null (missing); joined with the entity's online features",
            "additionalProperties": {"type": ["number", "string", "boolean", "null"]},
        },
    },
}

PREDICTION = {
    "type": "object",
    "required": ["entity_id", "prediction", "probabilities", "model", "cached", "fallback", "entity_known",
                 "feature_version", "feature_age_seconds"],
    "properties": {
        "entity_id": {"type": "string"},
        "prediction": {"type": ["number", "string", "boolean", "null"]},
        "probabilities": {"type": ["object", "null"], "additionalProperties": {"type": "number"}},
        "model": {
            "type": "object",
            "required": ["name", "version"],
            "properties": {"name": {"type": "string"}, "version": {"type": "integer"}},
        },
        "cached": {"enum": ["l1", "l2", None], "description": "the cache tier that answered, or null"},
        "rollout": {"enum": ["canary", None], "description": "a canary challenger answered"},
        "fallback": {
            "type": ["object", "null"],
            "properties": {
                "reason": {"enum": ["deadline", "model_error", "model_not_trained"]},
                "source": {"enum": ["fallback_model", "prior", "default"]},
            },
        },
        "entity_known": {"type": "boolean"},
        "feature_version": {"type": ["integer", "null"]},
        "feature_age_seconds": {"type": ["number", "null"], "minimum": 0},
    },
}

OPENAPI: dict[str, Any] = {
    "openapi": "3.1.0",
    "info": {"title": "rtml engine", "version": "0.1.0",
             "description": "Online predictions from River models fed by Kafka events."},
    "paths": {
        "/predict": {
            "post": {
                "summary": "Score one entity now",
                "requestBody": {"required": True, "content": {"application/json": {"schema": {"$ref": "#/components/schemas/PredictRequest"}}}},
                "responses": {"200": _json({"$ref": "#/components/schemas/Prediction"}, "the prediction"), **_errors(400, 413, 415, 422)},
            }
        },
        "/predict/batch": {
            "post": {
                "summary": "Score up to 1000 rows in one call",
                "requestBody": {
                    "required": True,
                    "content": {"application/json": {"schema": {
                        "type": "object", "required": ["rows"], "additionalProperties": False,
                        "properties": {"rows": {"type": "array", "minItems": 1, "maxItems": 1000,
                                                "items": {"$ref": "#/components/schemas/PredictRequest"}}},
                    }}},
                },
                "responses": {
                    "200": _json({"type": "object", "required": ["results"], "properties": {
                        "results": {"type": "array", "items": {"$ref": "#/components/schemas/Prediction"}}}}, "one prediction per row"),
                    **_errors(400, 413, 415, 422),
                },
            }
        },
        "/features": {
            "get": {
                "summary": "Online feature rows (get_online_features)",
                "parameters": [{"name": "entity_id", "in": "query", "required": True, "style": "form", "explode": True,
                                "schema": {"type": "array", "minItems": 1, "maxItems": 1000, "items": {"type": "string"}}}],
                "responses": {
                    "200": _json({"$ref": "#/components/schemas/FeatureRows"}, "one row per entity"),
                    **_errors(422),
                    "400": {"description": "the HTTP server refused the request line (too long)",
                            "content": {"text/plain": {"schema": {"type": "string"}}}},
                },
            }
        },
        "/features/offline": {
            "get": {
                "summary": "Point-in-time feature rows as online serving returned them at event time `ts` (get_offline_features)",
                "parameters": [
                    {"name": "entity_id", "in": "query", "required": True, "style": "form", "explode": True,
                     "schema": {"type": "array", "minItems": 1, "maxItems": 1000, "items": {"type": "string"}}},
                    {"name": "ts", "in": "query", "required": True, "schema": {"type": "number"}},
                ],
                "responses": {
                    "200": _json({"$ref": "#/components/schemas/FeatureRows"}, "one row per entity"),
                    **_errors(422),
                    "400": {"description": "the HTTP server refused the request line (too long)",
                            "content": {"text/plain": {"schema": {"type": "string"}}}},
                    "503": _json({"$ref": "#/components/schemas/Error"}, "no offline log in this process"),
                },
            }
        },
        "/models": {"get": {"summary": "The serving model and the models available",
                            "responses": {"200": _json({"type": "object", "required": ["serving", "available"]}, "models")}}},
        "/models/{name}/promote": _admin(
            "Serve a registered version (the outgoing model's state is kept for rollback)",
            {"type": "object", "required": ["version"], "properties": {"version": {"type": "integer"}}},
        ),
        "/models/{name}/rollback": _admin("Serve the version that served before the current one", None),
        "/models/{name}/rollout": _admin(
            "Start a shadow or canary rollout of a registered version",
            {"type": "object", "required": ["version"], "properties": {
                "version": {"type": "integer"}, "mode": {"enum": ["shadow", "canary"]},
                "share": {"type": "number", "minimum": 0, "maximum": 1},
                "min_labels": {"type": "integer", "minimum": 1}, "margin": {"type": "number"}}},
        ),
        "/models/{name}/rollout/stop": _admin("Stop the running rollout without a decision", None),
        "/healthz": {"get": {"summary": "Liveness", "responses": {"200": _json({"type": "object"}, "alive")}}},
        "/readyz": {"get": {"summary": "Readiness: model loaded, partitions assigned, tables recovered",
                            "responses": {"200": _json({"type": "object"}, "ready"), "503": _json({"type": "object"}, "not ready")}}},
        "/metrics": {"get": {"summary": "Prometheus metrics",
                             "responses": {"200": {"description": "Prometheus text format", "content": {"text/plain": {"schema": {"type": "string"}}}}}}},
        "/openapi.json": {"get": {"summary": "This document", "responses": {"200": _json({"type": "object"}, "OpenAPI 3.1")}}},
    },
    "components": {"schemas": {"PredictRequest": PREDICT_REQUEST, "Prediction": PREDICTION, "Error": _ERROR,
                               "FeatureRows": FEATURE_ROWS}},
}
