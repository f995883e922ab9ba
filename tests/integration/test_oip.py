"""The Open Inference Protocol (KServe v2) on a live engine, with tritonclient as the client,
over HTTP (JSON and binary tensors) and gRPC: health, metadata, config, inference that
answers each row as /predict does, and the protocol's errors."""

from __future__ import annotations

import numpy as np
import pytest
import tritonclient.grpc as grpcclient
import tritonclient.http as httpclient
from tritonclient.utils import InferenceServerException

from engine.harness import KAFKA_BOOTSTRAP
from engine.publish import dataset_events
from tests.conftest import free_port
from tests.helpers import dataset_messages
from tests.integration.kafka_client import produce

pytestmark = pytest.mark.integration

MODEL = "logreg"


@pytest.fixture(scope="module")
def served(tmp_path_factory):
    """One engine for the module: trained on 300 Phishing events, then left alone."""
    import asyncio

    from engine.harness import EngineProcess, remove_topics, unique_env

    grpc_port = free_port()
    engine = EngineProcess(
        unique_env(REDIS_URL="", GRPC_PORT=grpc_port, MODEL=MODEL), tmp_path_factory.mktemp("oip")
    ).start()
    rows = list(dataset_events("Phishing", limit=300, entities=20))
    asyncio.run(produce(KAFKA_BOOTSTRAP, engine.settings.events_topic, dataset_messages(rows)))
    engine.wait_until(lambda: engine.samples_learned() == 300, what="the model trained")
    http = httpclient.InferenceServerClient(url=engine.base_url.removeprefix("http://"))
    grpc = grpcclient.InferenceServerClient(url=f"127.0.0.1:{grpc_port}")
    yield engine, http, grpc, rows
    grpc.close()
    http.close()
    try:
        engine.stop()
    finally:
        remove_topics([engine])


def inputs(module, rows, binary=True):
    """entity_id and one FP64 input per feature; a feature missing from a row is NaN."""
    names = sorted({name for event, _ in rows for name in event["features"]})
    entity = module.InferInput("entity_id", [len(rows)], "BYTES")
    tensors = [entity]
    arrays = [np.array([e["entity_id"].encode() for e, _ in rows], dtype=np.object_)]
    for name in names:
        tensors.append(module.InferInput(name, [len(rows), 1], "FP64"))
        arrays.append(np.array([[float(e["features"].get(name, np.nan))] for e, _ in rows], dtype=np.float64))
    for tensor, array in zip(tensors, arrays):
        if module is httpclient:
            tensor.set_data_from_numpy(array, binary_data=binary)
        else:
            tensor.set_data_from_numpy(array)
    return tensors


def text(value: bytes | str) -> str:
    """A BYTES element: bytes from binary data, text from JSON."""
    return value.decode() if isinstance(value, bytes) else value


def test_health_metadata_and_config_over_http_and_grpc(served):
    _, http, grpc, _ = served
    for client in (http, grpc):
        assert client.is_server_live() and client.is_server_ready() and client.is_model_ready(MODEL)
    assert "binary_tensor_data" in http.get_server_metadata()["extensions"]
    assert "binary_tensor_data" in grpc.get_server_metadata().extensions
    metadata = http.get_model_metadata(MODEL)
    assert metadata["platform"] == "river" and metadata["inputs"][0] == {
        "name": "entity_id",
        "datatype": "BYTES",
        "shape": [-1],
    }
    assert [o["name"] for o in metadata["outputs"]] == ["prediction", "probabilities", "classes"]
    assert grpc.get_model_metadata(MODEL).outputs[1].shape == [-1, -1]
    config = http.get_model_config(MODEL)
    assert config["max_batch_size"] == 0 and config["input"][0]["data_type"] == "TYPE_STRING"
    assert grpc.get_model_config(MODEL).config.input[0].name == "entity_id"


@pytest.mark.parametrize("path", ["http binary", "http json", "grpc"])
def test_each_row_is_answered_as_predict_answers_it(served, path):
    engine, http, grpc, rows = served
    batch = [rows[i] for i in (0, 7, 42, 99, 250)]
    batch[1] = ({**batch[1][0], "features": {k: v for k, v in batch[1][0]["features"].items() if k != "https"}}, None)
    if path == "grpc":
        result = grpc.infer(MODEL, inputs(grpcclient, batch), request_id="req-7")
        assert result.get_response().id == "req-7"
        assert result.get_response().parameters["model_version"].int64_param >= 1
    else:
        binary = path == "http binary"
        outputs = [
            httpclient.InferRequestedOutput(n, binary_data=binary) for n in ("prediction", "probabilities", "classes")
        ]
        result = http.infer(MODEL, inputs(httpclient, batch, binary), outputs=outputs, request_id="req-7")
        assert result.get_response()["id"] == "req-7"
        assert result.get_response()["parameters"]["model_version"] >= 1
    predictions = result.as_numpy("prediction")
    probabilities, classes = result.as_numpy("probabilities"), result.as_numpy("classes")
    assert predictions.shape == (5,) and probabilities.shape == classes.shape == (5, 2)
    for i, (event, _) in enumerate(batch):
        # In the inputs' order: a model's float sums depend on the order of the features.
        features = dict(sorted(event["features"].items()))
        answer = engine.post("/predict", {"entity_id": event["entity_id"], "features": features}).json()
        assert text(predictions[i]) == ("true" if answer["prediction"] else "false")
        got = {text(c): p for c, p in zip(classes[i], probabilities[i])}
        assert got == pytest.approx(answer["probabilities"], abs=0)


def test_errors_take_the_protocols_form_and_never_a_5xx(served):
    engine, http, grpc, rows = served
    batch = rows[:2]
    with pytest.raises(InferenceServerException) as unknown:
        http.infer("nope", inputs(httpclient, batch))
    assert unknown.value.status() == "404" and "logreg" in unknown.value.message()
    with pytest.raises(InferenceServerException) as unknown_grpc:
        grpc.infer("nope", inputs(grpcclient, batch))
    assert unknown_grpc.value.status() == "StatusCode.NOT_FOUND"

    without_entity = inputs(grpcclient, batch)[1:]
    with pytest.raises(InferenceServerException) as missing:
        grpc.infer(MODEL, without_entity)
    assert missing.value.status() == "StatusCode.INVALID_ARGUMENT" and "entity_id" in missing.value.message()
    with pytest.raises(InferenceServerException) as unknown_and_missing:
        grpc.infer("nope", without_entity)  # the name is judged first, as over HTTP
    assert unknown_and_missing.value.status() == "StatusCode.NOT_FOUND"

    url = f"{engine.base_url}/v2/models/{MODEL}/infer"
    import httpx

    for body in (
        b"not json",
        b'{"inputs": []}',
        b'{"inputs": [{"name": "entity_id", "datatype": "BYTES", "shape": [2], "data": ["a"]}]}',
        b'{"inputs": [{"name": "entity_id", "datatype": "BYTES", "shape": [1], "data": ["a"]},'
        b' {"name": "https", "datatype": "FP64", "shape": [1], "data": [1e300]}]}',
        b'{"inputs": [{"name": "entity_id", "datatype": "COMPLEX", "shape": [1], "data": ["a"]}]}',
    ):
        response = httpx.post(url, content=body)
        assert response.status_code == 400 and "error" in response.json(), body
    truncated = httpx.post(url, content=b'{"inputs": []}', headers={"Inference-Header-Content-Length": "999"})
    assert truncated.status_code == 400
