"""The OpenAPI 3.1 document served at /openapi.json, generated from the routes.

Each route carries an `Operation` (its summary and the declarations of engine/contract.py it
reads and answers with); schemas come from those declarations through msgspec, and the error
responses from the same tables the API answers with. Nothing here restates a field or a limit.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from typing import Any

import msgspec

from engine.contract import BODY_ERRORS, QUERY_ERRORS, Error

ADMIN_SCHEME = "adminToken"


@dataclass(frozen=True)
class Reply:
    """One response: its declaration (any type msgspec describes), what it means, its media type."""

    declaration: Any
    description: str
    media_type: str = "application/json"


@dataclass(frozen=True)
class Operation:
    summary: str
    responses: Mapping[int, Reply]
    body: Any = None  # the declaration of the JSON request body
    query: Any = None  # a Struct whose fields are the query parameters
    admin: bool = False  # ApiRoute (engine/api.py) puts the admin auth on the route when set
    path_params: Mapping[str, str] = field(default_factory=dict)  # name -> description


def _errors(meanings: Mapping[int, str]) -> dict[int, Reply]:
    return {status: Reply(Error, meaning) for status, meaning in meanings.items()}


ADMIN_ERRORS = _errors({401: "no bearer token", 403: "wrong token, or admin routes off (ADMIN_TOKEN empty)"})
# Long query strings are refused by the HTTP server before they reach the app.
REQUEST_LINE_TOO_LONG = Reply(str, "the HTTP server refused the request line (too long)", "text/plain")


def responses_of(operation: Operation) -> dict[int, Reply]:
    """What the route answers: its own responses and those of the checks it goes through."""
    replies = dict(operation.responses)
    if operation.body is not None:
        replies.update(_errors(BODY_ERRORS))
    if operation.query is not None:
        replies.update(_errors(QUERY_ERRORS))
        replies.setdefault(400, REQUEST_LINE_TOO_LONG)
    if operation.admin:
        replies.update(ADMIN_ERRORS)
    return replies


def document(routes: Iterable[Any], *, title: str, version: str, description: str) -> dict[str, Any]:
    """The OpenAPI document of `routes`: Starlette routes with `.operation` and `.methods`."""
    routes = list(routes)
    declarations: list[Any] = []
    for route in routes:
        op: Operation = route.operation
        for declaration in (op.body, *(r.declaration for r in responses_of(op).values())):
            if declaration is not None and declaration not in declarations:
                declarations.append(declaration)
    schemas, components = msgspec.json.schema_components(declarations, ref_template="#/components/schemas/{name}")
    schema_of = dict(zip(declarations, schemas))

    paths: dict[str, dict[str, Any]] = {}
    for route in routes:
        op = route.operation
        operation: dict[str, Any] = {"summary": op.summary}
        parameters = [
            {
                "name": name,
                "in": "path",
                "required": True,
                "schema": {"type": "string"},
                **({"description": op.path_params[name]} if name in op.path_params else {}),
            }
            for name in route.param_convertors
        ]
        if op.query is not None:
            parameters += _query_parameters(op.query)
        if parameters:
            operation["parameters"] = parameters
        if op.body is not None:
            operation["requestBody"] = {
                "required": True,
                "content": {"application/json": {"schema": schema_of[op.body]}},
            }
        operation["responses"] = {
            str(status): {
                "description": reply.description,
                "content": {reply.media_type: {"schema": schema_of[reply.declaration]}},
            }
            for status, reply in sorted(responses_of(op).items())
        }
        if op.admin:
            operation["security"] = [{ADMIN_SCHEME: []}]
        for method in sorted(route.methods - {"HEAD"}):
            paths.setdefault(route.path, {})[method.lower()] = operation
    return {
        "openapi": "3.1.0",
        "info": {"title": title, "version": version, "description": description},
        "paths": paths,
        "components": {
            "schemas": components,
            "securitySchemes": {
                ADMIN_SCHEME: {"type": "http", "scheme": "bearer", "description": "Authorization: Bearer $ADMIN_TOKEN"}
            },
        },
    }


def _query_parameters(declaration: Any) -> list[dict[str, Any]]:
    # Scalars and lists of scalars: the parameters' schemas need no shared components.
    (schema,) = msgspec.json.schema_components([declaration])[1].values()
    required = set(schema.get("required", ()))
    parameters = []
    for name, property_schema in schema["properties"].items():
        parameter: dict[str, Any] = {
            "name": name,
            "in": "query",
            "required": name in required,
            "schema": property_schema,
        }
        if property_schema.get("type") == "array":
            parameter.update(style="form", explode=True)
        parameters.append(parameter)
    return parameters
