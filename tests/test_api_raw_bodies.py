"""Whatever bytes a client sends, every route answers with a 4xx error body, never a 5xx.

JSON-level fuzzing (test_api.py, test_api_schema.py) only ever sends valid UTF-8: these send
raw bytes, including invalid UTF-8, overlong encodings and surrogates, to every route.
"""

import tempfile

import pytest
from hypothesis import HealthCheck, given
from hypothesis import settings as hypothesis_settings
from hypothesis import strategies as st
from starlette.testclient import TestClient

from engine.api import ROUTES, create_api
from engine.oip import rest as oip_rest
from engine.runtime import Runtime
from engine.serving import FixedModel
from engine.settings import Settings
from models.online import OnlineModel

TOKEN = "s3cret"
AUTH = {"authorization": f"Bearer {TOKEN}"}
BODY_ROUTES = [
    (route.path.replace("{name}", "logreg"), method)
    for route in [*ROUTES, *oip_rest.ROUTES]
    for method in route.methods or ()
]

# Bytes that are not UTF-8, in the places a user's bug or an attacker would put them.
NOT_UTF8 = [
    b'{"entity_id": "\xff", "features": {}}',  # an invalid byte in an id
    b'{"entity_id": "a", "features": {"\xc3(": 1}}',  # a malformed byte in a feature name
    b'{"entity_id": "\xc0\xaf", "features": {}}',  # an overlong encoding of "/"
    b'{"entity_id": "\xed\xa0\x80", "features": {}}',  # a UTF-16 surrogate encoded as UTF-8
    b'{"entity_id": "a", "features": {"x": "\xf8\x88\x80\x80\x80"}}',  # a five-byte sequence
    b'{"rows": [{"entity_id": "\xfe", "features": {}}]}',
    b'{"version": 1, "mode": "\xff"}',
    b'\xff\xfe{\x00"\x00',  # UTF-16 with a byte-order mark
]


@pytest.fixture(scope="module")
def client():
    settings = Settings.from_env({"REDIS_URL": "", "ADMIN_TOKEN": TOKEN, "STATE_DIR": tempfile.mkdtemp()})
    runtime = Runtime.in_process(settings, FixedModel(OnlineModel("logreg")), {})

    async def learner_answers(command, served):  # admin routes reach a learner that carries out anything
        return {"outcome": "done", "id": command["id"]}

    runtime.command = learner_answers

    async def kafka_acknowledges(labels):
        return len(labels)

    runtime.send_labels = kafka_acknowledges

    async def start():
        return runtime

    with TestClient(create_api(start), raise_server_exceptions=False) as client:
        yield client


def _send(client, path, method, body, content_type="application/json"):
    headers = {"content-type": content_type, **AUTH}
    return client.request(method, path, content=body, headers=headers)


@pytest.mark.parametrize("body", NOT_UTF8)
@pytest.mark.parametrize(("path", "method"), [("/predict", "POST"), ("/predict/batch", "POST")])
def test_bytes_that_are_not_utf8_get_400_with_the_error_body(client, path, method, body):
    response = _send(client, path, method, body)
    assert response.status_code == 400, response.text
    assert response.json()["error"].startswith("body is not valid JSON")


@pytest.mark.parametrize("body", NOT_UTF8)
@pytest.mark.parametrize(("path", "method"), BODY_ROUTES)
def test_no_route_answers_5xx_to_bytes_that_are_not_utf8(client, path, method, body):
    response = _send(client, path, method, body)
    assert response.status_code < 500, (path, response.text)


@pytest.mark.parametrize(
    "query",
    ["entity_id=%FF", "entity_id=%C0%AF", "entity_id=%ED%A0%80&ts=1", "entity_id=a&ts=%FF", "entity_id=%E2%82"],
)
@pytest.mark.parametrize("path", ["/features", "/features/offline"])
def test_query_strings_that_are_not_utf8_get_an_answer_not_a_5xx(client, path, query):
    response = client.get(f"{path}?{query}")
    assert response.status_code < 500, response.text


@hypothesis_settings(max_examples=400, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(
    route=st.sampled_from(BODY_ROUTES),
    body=st.one_of(
        st.binary(max_size=200),
        # Mostly JSON-looking bytes with a corrupted stretch: the decoder gets past the first byte.
        st.tuples(st.binary(max_size=60), st.binary(min_size=1, max_size=8), st.binary(max_size=60)).map(
            lambda parts: b'{"entity_id": "' + parts[0] + b'", "features": {"' + parts[1] + b'": ' + parts[2] + b"}}"
        ),
    ),
)
def test_any_bytes_to_any_route_never_get_a_5xx(client, route, body):
    path, method = route
    response = _send(client, path, method, body)
    assert response.status_code < 500, (path, body, response.text)
    if response.status_code >= 400 and method != "HEAD" and response.headers.get("content-type") == "application/json":
        assert "error" in response.json()
