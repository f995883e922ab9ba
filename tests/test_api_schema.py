"""schemathesis against the API in process: every operation of /openapi.json, with bodies
generated from it, answers without a server error and as the document says."""

from __future__ import annotations

import inspect
import tempfile

import pytest
import schemathesis
from hypothesis import HealthCheck, settings
from river import datasets
from schemathesis.checks import not_a_server_error
from schemathesis.specs.openapi.checks import (
    content_type_conformance,
    response_schema_conformance,
    status_code_conformance,
)

from engine.api import create_api
from engine.runtime import Runtime
from engine.serving import FixedModel
from engine.settings import Settings
from streams.features import FeatureRegistry, apply_event
from tests.helpers import trained

CHECKS = [not_a_server_error, status_code_conformance, content_type_conformance, response_schema_conformance]
TOKEN = "fuzz-token"


def _runtime() -> Runtime:
    model = trained(list(datasets.Phishing())[:100])
    registry = FeatureRegistry([{"name": "amount", "kind": "raw", "min": 0, "max": 100}, {"name": "n", "agg": "count"}])
    entities = {"known": apply_event(None, 1.0, {"amount": 3.0}, registry.aggregates)}
    settings_ = Settings.from_env({"REDIS_URL": "", "ADMIN_TOKEN": TOKEN, "STATE_DIR": tempfile.mkdtemp()})
    runtime = Runtime.in_process(settings_, FixedModel(model), entities)
    runtime.feature_registry = registry
    return runtime


RUNTIME = _runtime()
ANSWERS = {
    "answers": lambda command: {"id": command["id"], "outcome": "done", "serving": {"version": 1}},
    "refuses": lambda command: {
        "id": command["id"],
        "outcome": "refused",
        "refusal": "conflict",
        "error": "no model version 7",
    },
    "is silent": lambda command: None,  # the learner is down or busy: 202
}


async def _start() -> Runtime:
    return RUNTIME


APP = create_api(_start)


async def app_with_state(scope, receive, send):
    # schemathesis calls the app without its lifespan: hand it the state the lifespan would.
    if scope["type"] == "http":
        scope = {**scope, "state": {"runtime": RUNTIME}}
    await APP(scope, receive, send)


schema = schemathesis.openapi.from_asgi("/openapi.json", app_with_state)


@pytest.fixture(params=sorted(ANSWERS))
def learner(request):
    answer = ANSWERS[request.param]

    async def command(command, served):
        return answer(command)

    async def send_labels(labels):  # Kafka acknowledges (tests/integration/test_served_learning.py: the real one)
        return len(labels)

    # The fakes take what the real methods take: a fake that drifted from its method hid a
    # TypeError behind the rare generated request that reaches it.
    for fake, real in ((command, Runtime.command), (send_labels, Runtime.send_labels)):
        assert list(inspect.signature(fake).parameters) == list(inspect.signature(real).parameters)[1:]
    RUNTIME.command = command
    RUNTIME.send_labels = send_labels
    return request.param


@schema.parametrize()
@settings(max_examples=30, deadline=None, suppress_health_check=list(HealthCheck))
def test_every_operation_conforms(case, learner):
    case.call_and_validate(headers={"Authorization": f"Bearer {TOKEN}"}, checks=CHECKS)
