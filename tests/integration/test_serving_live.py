"""The prediction API of a live engine: Redis as L2, Redis failures, metrics format, OpenAPI."""

from __future__ import annotations

import shutil
import subprocess
import time

import httpx
import pytest
import schemathesis
from hypothesis import HealthCheck, given, settings
from prometheus_client.parser import text_string_to_metric_families
from schemathesis.checks import not_a_server_error
from schemathesis.specs.openapi.checks import (
    content_type_conformance,
    response_schema_conformance,
    status_code_conformance,
)

from tests.conftest import ROOT, free_port

pytestmark = pytest.mark.integration


class RedisServer:
    """A throw-away redis-server of the test's own, so stopping it disturbs nothing else."""

    def __init__(self) -> None:
        self.port = free_port()
        self.process: subprocess.Popen | None = None

    @property
    def url(self) -> str:
        return f"redis://127.0.0.1:{self.port}/0"

    def start(self) -> None:
        self.process = subprocess.Popen(
            ["redis-server", "--bind", "127.0.0.1", "--port", str(self.port), "--save", "", "--appendonly", "no"],
            stdout=subprocess.DEVNULL,
        )
        deadline = time.monotonic() + 10
        while time.monotonic() < deadline:
            ping = subprocess.run(["redis-cli", "-p", str(self.port), "ping"], capture_output=True, text=True)
            if ping.stdout.strip() == "PONG":
                return
            time.sleep(0.05)
        raise RuntimeError("redis-server did not start")

    def stop(self) -> None:
        if self.process is not None:
            self.process.kill()
            self.process.wait()


@pytest.fixture
def redis_server():
    server = RedisServer()
    server.start()
    yield server
    server.stop()


def cache_errors(engine) -> float:
    """rtml_cache_errors_total as /metrics exports it."""
    text = engine.get("/metrics").text
    values = [
        sample.value
        for family in text_string_to_metric_families(text)
        for sample in family.samples
        if sample.name == "rtml_cache_errors_total"
    ]
    assert len(values) == 1, f"rtml_cache_errors_total is not exported once:\n{text}"
    return values[0]


def predict(engine, entity="u-1", amount=1.0):
    response = engine.post("/predict", {"entity_id": entity, "features": {"amount": amount}})
    assert response.status_code == 200, response.text
    return response.json()


async def test_redis_is_the_shared_l2_and_its_outage_is_invisible_to_users(engine_factory, redis_server):
    # A generous Redis deadline: the default 5 ms is sometimes missed on a loaded 2-core
    # machine, which counts as an error by design; this test is about sharing and outages.
    engine = engine_factory(
        REDIS_URL=redis_server.url,
        CACHE_L1_ENTRIES=0,
        REDIS_BACKOFF_SECONDS=0.5,
        CACHE_L2="always",
        REDIS_TIMEOUT_SECONDS=1.0,
    ).start()
    assert engine.get("/readyz").json()["redis"] is True
    assert predict(engine)["cached"] is None
    engine.wait_until(lambda: predict(engine)["cached"] == "l2", timeout=5, what="an L2 hit")
    assert cache_errors(engine) == 0

    redis_server.stop()
    answers = [predict(engine, amount=float(i % 7)) for i in range(300)]  # raises on any non-200
    assert all(a["cached"] is None and a["fallback"] is None for a in answers)
    assert engine.get("/readyz").json()["redis"] is False
    assert cache_errors(engine) >= 1  # the outage is counted, however invisible to users

    redis_server.start()
    engine.wait_until(lambda: predict(engine, amount=42.0)["cached"] == "l2", timeout=10, what="the cache back")


async def test_engine_without_any_redis_serves(engine_factory):
    engine = engine_factory(REDIS_URL=f"redis://127.0.0.1:{free_port()}/0").start()
    readyz = engine.get("/readyz").json()
    assert readyz.pop("workers").keys() <= {"0"}  # its worker, once it has reported
    assert readyz == {
        "ready": True,
        "checks": {"model_loaded": True, "features_caught_up": True, "model_healthy": True},
        "redis": False,
        "kafka": True,
    }
    assert predict(engine)["fallback"] is None


@pytest.mark.skipif(shutil.which("promtool") is None, reason="promtool comes with `make test` (infra/tools.sh)")
async def test_metrics_pass_promtool_and_alert_rules_are_valid(engine_factory):
    engine = engine_factory().start()
    predict(engine)
    text = engine.get("/metrics").text
    check = subprocess.run(["promtool", "check", "metrics"], input=text, capture_output=True, text=True)
    assert check.returncode == 0, check.stdout + check.stderr
    rules = subprocess.run(
        ["promtool", "check", "rules", str(ROOT / "infra/prometheus/alerts.yml")], capture_output=True, text=True
    )
    assert rules.returncode == 0, rules.stdout + rules.stderr


async def test_batch_predict_names_the_bad_row(engine_factory):
    engine = engine_factory().start()
    rows = [{"entity_id": "a", "features": {"x": 1.0}}, {"entity_id": "b", "features": {"x": [1]}}]
    bad = engine.post("/predict/batch", {"rows": rows})
    assert bad.status_code == 422 and bad.json()["field"] == "rows[1].features.x"
    good = engine.post("/predict/batch", {"rows": rows[:1] * 3}).json()["results"]
    assert len(good) == 3 and good[0]["entity_id"] == "a"


async def test_openapi_document_lists_every_route(engine_factory):
    engine = engine_factory().start()
    paths = set(httpx.get(f"{engine.base_url}/openapi.json").json()["paths"])
    assert paths == {
        "/predict",
        "/predict/batch",
        "/labels",
        "/features",
        "/features/offline",
        "/models",
        "/healthz",
        "/readyz",
        "/metrics",
        "/openapi.json",
        "/models/{name}/promote",
        "/models/{name}/rollback",
        "/models/{name}/rollout",
        "/models/{name}/rollout/stop",
    }


async def test_a_live_engine_conforms_to_its_document(engine_factory):
    """The checks of tests/test_api_schema.py against a real engine, whose learner carries
    out (or refuses) the admin commands the fuzzer sends: schemathesis generates the cases
    of each operation from /openapi.json and validates every answer against it."""
    engine = engine_factory(ADMIN_TOKEN="fuzz-token").start()
    schema = schemathesis.openapi.from_url(f"{engine.base_url}/openapi.json")
    checks = [not_a_server_error, status_code_conformance, content_type_conformance, response_schema_conformance]
    for result in schema.get_all_operations():
        operation = result.ok()

        @given(case=operation.as_strategy())
        @settings(max_examples=40, deadline=None, suppress_health_check=list(HealthCheck), database=None)
        def conforms(case):
            case.call_and_validate(headers={"Authorization": "Bearer fuzz-token"}, checks=checks)

        conforms()
