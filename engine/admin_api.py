"""The admin routes (promote, rollback, rollout, rollout stop): each hands its command to
the learner through the control topic and answers with the learner's outcome (see
engine/admin_commands.py), or 202 with the command's id when the learner has not answered
in time. The routes themselves, with their auth, are declared in engine/api.py's ROUTES."""

from __future__ import annotations

from typing import Any

from msgspec import UNSET
from starlette.requests import Request
from starlette.responses import Response

from engine.admin_commands import new_command
from engine.contract import JsonBody, PromoteRequest, RolloutRequest, error_response
from engine.runtime import Runtime
from engine.serving import dumps_json

PROMOTE_BODY = JsonBody(PromoteRequest)
ROLLOUT_BODY = JsonBody(RolloutRequest)


def _json(body: Any, status: int = 200) -> Response:
    return Response(dumps_json(body), status_code=status, media_type="application/json")


async def run_command(request: Request, action: str, **args: Any) -> Response:
    """Hands the command to the learner and answers with its result; 202 with how to follow
    it when the learner has not answered in time (it is down, or busy)."""
    runtime: Runtime = request.state.runtime
    name = request.path_params["name"]
    default = runtime.model(None)
    if not default.settings.model.scoped:
        # The single model of an engine without MODELS goes by its serving model's factory.
        served = default
        live = served.predictor.model
        if live is None:
            return error_response(503, "no model is loaded yet")
        if name != live.name:
            return error_response(404, f"the serving model is {live.name!r}, not {name!r}", "name")
    else:
        found = runtime.served.get(name)
        if found is None:
            return error_response(404, f"unknown model {name!r}; the models are {list(runtime.served)}", "name")
        served = found
        if served.predictor.model is None:
            return error_response(503, f"model {name!r} is not loaded yet")
    command = new_command(action, name, **args)
    result = await runtime.command(command, served)
    if result is None:
        return _json(
            {
                "accepted": command["id"],
                "detail": "the learner has not answered yet; GET /models lists "
                "each command it carried out under `applied`, by this id",
            },
            202,
        )
    if result.get("outcome") != "done":
        status = REFUSAL_STATUS.get(result.get("refusal", ""), 409)
        return error_response(status, result.get("error", "refused"))
    body = {k: v for k, v in result.items() if k not in ("outcome", "id")}
    # The learner has published the outcome; this process may still be reading it.
    return _json({"id": command["id"], **body})


# The learner's refusals of an admin command, as HTTP says them.
REFUSAL_STATUS = {"not_found": 404, "conflict": 409, "invalid": 422, "unavailable": 503}


async def promote(request: Request) -> Response:
    body = await PROMOTE_BODY.read(request)
    return await run_command(request, "promote", version=body.version)


async def rollback(request: Request) -> Response:
    return await run_command(request, "rollback")


async def start_rollout(request: Request) -> Response:
    settings = request.state.runtime.settings
    body = await ROLLOUT_BODY.read(request)
    return await run_command(
        request,
        "rollout",
        version=body.version,
        mode=body.mode,
        share=body.share,
        min_labels=settings.rollout_min_labels if body.min_labels is UNSET else body.min_labels,
        margin=settings.rollout_margin if body.margin is UNSET else body.margin,
    )


async def stop_rollout(request: Request) -> Response:
    return await run_command(request, "rollout_stop")
