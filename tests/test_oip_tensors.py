"""Open Inference Protocol tensors and rows without a server: binary and JSON layouts, and
the refusals a client gets for tensors that do not fit."""

import math
import struct

import numpy as np
import pytest
from starlette.testclient import TestClient

from engine.api import create_api
from engine.oip.inference import rows_of
from engine.oip.tensors import ProtocolError, Tensor, decode_binary, decode_json, encode_binary
from engine.runtime import Runtime
from engine.serving import FixedModel
from engine.settings import Settings
from tests.test_serving import trained_model


def test_binary_round_trips_every_type_little_endian():
    for datatype, values in (
        ("FP64", [1.5, -2.0, math.inf]),
        ("FP32", [0.5, 2.0]),
        ("INT64", [-(2**40), 7]),
        ("UINT8", [0, 255]),
        ("BOOL", [True, False, True]),
        ("BYTES", [b"card-7", b"", "é".encode()]),
    ):
        raw = encode_binary(datatype, values)
        assert decode_binary("x", datatype, [len(values)], raw).values == values
    assert encode_binary("FP64", [1.0]) == struct.pack("<d", 1.0)
    assert encode_binary("BYTES", [b"ab"]) == b"\x02\x00\x00\x00ab"


@pytest.mark.parametrize(
    ("datatype", "shape", "raw", "why"),
    [
        ("FP64", [2], b"\x00" * 12, "12 bytes of data for 2 elements"),
        ("BYTES", [1], b"\x09\x00\x00\x00ab", "runs past the data"),
        ("BYTES", [1], b"\x01\x00", "ends inside an element's length"),
        ("BYTES", [2], b"\x01\x00\x00\x00a", "1 elements for shape [2]"),
        ("COMPLEX", [1], b"", "datatype 'COMPLEX'"),
        ("FP64", [-1], b"", "negative dimension"),
    ],
)
def test_binary_that_does_not_fit_its_shape_is_a_400(datatype, shape, raw, why):
    with pytest.raises(ProtocolError) as refused:
        decode_binary("x", datatype, shape, raw)
    assert refused.value.status == 400 and why in refused.value.message


def test_json_data_nested_or_flat_and_null_as_missing():
    assert decode_json("x", "FP64", [2, 1], [[1.0], [None]]).values == [1.0, None]
    assert decode_json("x", "BYTES", [2], ["a", "b"]).values == [b"a", b"b"]
    for datatype, value in (("INT32", 1.5), ("BOOL", 1), ("BYTES", 3), ("FP64", "1")):
        with pytest.raises(ProtocolError):
            decode_json("x", datatype, [1], [value])


def runtime(tmp_path):
    settings = Settings.from_env({"REDIS_URL": "", "STATE_DIR": str(tmp_path), "MAX_FEATURE_MAGNITUDE": "1e6"})
    return Runtime.in_process(settings, FixedModel(trained_model()), {})


def test_rows_take_nan_as_missing_and_judge_values_by_the_predict_rules(tmp_path):
    rt = runtime(tmp_path)
    entity = Tensor("entity_id", "BYTES", [2], [b"a", b"b"])
    rows = rows_of(rt, [entity, Tensor("amount", "FP64", [2, 1], [1.0, math.nan]), Tensor("f", "BOOL", [2], [1, 0])])
    assert rows == [("a", {"amount": 1.0, "f": 1}), ("b", {"f": 0})]
    for tensors, why in (
        ([Tensor("amount", "FP64", [2], [1.0, 2.0])], "'entity_id' (BYTES [N]) is required"),
        ([entity, Tensor("amount", "FP64", [3], [1.0, 2.0, 3.0])], "has 3 rows"),
        ([entity, Tensor("amount", "FP64", [2, 2], [1.0] * 4)], "expected [N] or [N, 1]"),
        ([entity, Tensor("amount", "FP64", [2], [1.0, 1e9])], "row 1: features.amount=1000000000.0 beyond"),
        ([Tensor("entity_id", "BYTES", [1], [b"\xff"])], "not UTF-8"),
        ([entity, entity], "given twice"),
    ):
        with pytest.raises(ProtocolError) as refused:
            rows_of(rt, tensors)
        assert why in refused.value.message


def test_rest_infer_in_json_answers_rows_and_names_the_choices_on_a_404(tmp_path):
    rt = runtime(tmp_path)

    async def start():
        return rt

    body = {
        "id": "r1",
        "inputs": [
            {"name": "entity_id", "datatype": "BYTES", "shape": [2], "data": ["u1", "u2"]},
            {"name": "a", "datatype": "FP64", "shape": [2], "data": [0.0, 1.0]},
        ],
    }
    with TestClient(create_api(start)) as client:
        answer = client.post("/v2/models/logreg/infer", json=body).json()
        assert answer["id"] == "r1" and answer["model_name"] == "logreg"
        outputs = {o["name"]: o for o in answer["outputs"]}
        expected = [
            client.post("/predict", json={"entity_id": e, "features": {"a": a}}).json()
            for e, a in (("u1", 0.0), ("u2", 1.0))
        ]
        assert outputs["prediction"]["data"] == ["true" if e["prediction"] else "false" for e in expected]
        classes = outputs["classes"]["data"][:2]
        probabilities = np.array(outputs["probabilities"]["data"]).reshape(2, 2)
        assert [dict(zip(classes, p)) for p in probabilities] == [e["probabilities"] for e in expected]
        missing = client.post("/v2/models/other/infer", json=body)
        assert missing.status_code == 404 and "logreg" in missing.json()["error"]
        assert client.get("/v2/models/logreg/ready").status_code == 200
        assert client.get("/v2/models/other/ready").status_code == 404
        assert client.get("/v2/health/live").status_code == 200


def test_shapes_are_judged_before_they_are_counted():
    many = [2**62] * 40_000  # a product of these would hold the loop for minutes
    for shape, why in ((many, "expected [N] or [N, 1]"), ([1001], "at most 1000 rows"), ([2, 3, 1], "expected")):
        with pytest.raises(ProtocolError) as refused:
            decode_json("x", "FP64", shape, [1.0])
        assert why in refused.value.message


def test_odd_header_lengths_and_lone_surrogates_are_400s(tmp_path):
    rt = runtime(tmp_path)

    async def start():
        return rt

    with TestClient(create_api(start)) as client:
        url = "/v2/models/logreg/infer"
        for length in (b"\xb2", b"1" * 5000, b"-1"):  # a superscript two is a digit to str.isdigit
            answer = client.post(url, content=b'{"inputs": []}', headers={"Inference-Header-Content-Length": length})
            assert answer.status_code == 400, length
        # NaN sends the body to Python's JSON reading, which lets a lone surrogate through.
        entity = b'{"name": "entity_id", "datatype": "BYTES", "shape": [1], "data": ["\\ud800"]}'
        answer = client.post(url, content=b'{"inputs": [' + entity + b'], "x": NaN}')
        assert answer.status_code == 400 and "not valid JSON" in answer.json()["error"]


def test_grpc_typed_contents_are_judged_by_shape_and_datatype():
    from engine.oip import grpc_predict_v2_pb2 as pb
    from engine.oip.grpc_server import _inputs

    def request(*specs):
        message = pb.ModelInferRequest(model_name="logreg")
        for name, datatype, shape, field, values in specs:
            getattr(message.inputs.add(name=name, datatype=datatype, shape=shape).contents, field).extend(values)
        return message

    entity = ("entity_id", "BYTES", [2, 1], "bytes_contents", [b"a", b"b"])
    tensors = _inputs(request(entity, ("amount", "FP64", [2], "fp64_contents", [1.5, math.nan])))
    assert [(t.name, t.datatype, t.shape) for t in tensors] == [("entity_id", "BYTES", [2, 1]), ("amount", "FP64", [2])]
    assert tensors[0].values == [b"a", b"b"] and tensors[1].values[0] == 1.5 and math.isnan(tensors[1].values[1])
    for spec, why in (
        (("amount", "FP64", [3], "fp64_contents", [1.0, 2.0]), "2 elements of contents for shape [3]"),
        (("amount", "COMPLEX", [1], "fp64_contents", [1.0]), "datatype 'COMPLEX'"),
        (("amount", "FP64", [-1], "fp64_contents", []), "negative dimension"),
        (("amount", "FP64", [1001], "fp64_contents", [0.0] * 1001), "at most 1000 rows"),
    ):
        with pytest.raises(ProtocolError) as refused:
            _inputs(request(entity, spec))
        assert refused.value.status == 400 and why in refused.value.message, why
