"""The ceiling for gRPC in this stack: grpc.aio (on uvloop, as the engine serves it) + one
River model, nothing else.

    python -m benchmarks.bare_grpc_server PORT

Answers `inference.GRPCInferenceService/ModelInfer` for one-row requests with typed
contents (an `entity_id` and one FP64 input per feature): the model's class probabilities
as a raw FP64 output. No validation, cache, features, fallbacks or metrics: what is left
of a request's time is grpc.aio's and the load generator's.
"""

from __future__ import annotations

import gc
import struct
import sys

import grpc
import uvloop
from grpc import aio
from river import datasets

from engine.oip import grpc_predict_v2_pb2 as pb
from models.factory import build_model

model = build_model("logreg")
for x, y in datasets.Phishing():
    model.learn_one(x, y)


async def model_infer(request: pb.ModelInferRequest, context: aio.ServicerContext) -> pb.ModelInferResponse:
    features = {spec.name: spec.contents.fp64_contents[0] for spec in request.inputs if spec.datatype == "FP64"}
    proba = model.predict_proba_one(features)
    response = pb.ModelInferResponse(model_name=request.model_name, model_version="1", id=request.id)
    response.outputs.add(name="probabilities", datatype="FP64", shape=[1, len(proba)])
    response.raw_output_contents.append(struct.pack(f"<{len(proba)}d", *proba.values()))
    return response


async def serve(port: int) -> None:
    server = aio.server()
    handler = grpc.unary_unary_rpc_method_handler(
        model_infer,
        request_deserializer=pb.ModelInferRequest.FromString,
        response_serializer=pb.ModelInferResponse.SerializeToString,
    )
    server.add_generic_rpc_handlers(
        [grpc.method_handlers_generic_handler("inference.GRPCInferenceService", {"ModelInfer": handler})]
    )
    server.add_insecure_port(f"127.0.0.1:{port}")
    await server.start()
    await server.wait_for_termination()


if __name__ == "__main__":
    gc.collect()
    gc.freeze()
    uvloop.run(serve(int(sys.argv[1])))
