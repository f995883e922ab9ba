"""The Open Inference Protocol over gRPC: `inference.GRPCInferenceService` on GRPC_PORT,
with grpc.aio on the serving process's own event loop (the loop that serves HTTP).

The messages are generated from engine/oip/grpc_predict_v2.proto (`make setup`), served
under the protocol's service name by a generic handler: no generated servicer, so that
the package of our messages stays our own (see the .proto). Inputs come as typed
`contents` or as `raw_input_contents` (tritonclient's default); outputs go out as
`raw_output_contents`, which every v2 client reads. Bad input is INVALID_ARGUMENT, an
unknown model NOT_FOUND.
"""

from __future__ import annotations

import logging
from collections.abc import Awaitable, Callable
from typing import Any

import grpc
from grpc import aio

from engine.oip import grpc_predict_v2_pb2 as pb
from engine.oip import inference
from engine.oip.tensors import ProtocolError, Tensor, check_datatype, decode_binary, element_count, encode_binary
from engine.runtime import Runtime

log = logging.getLogger(__name__)

SERVICE = "inference.GRPCInferenceService"
CODES = {400: grpc.StatusCode.INVALID_ARGUMENT, 404: grpc.StatusCode.NOT_FOUND}
CONTENTS = {
    "BOOL": "bool_contents",
    "INT8": "int_contents",
    "INT16": "int_contents",
    "INT32": "int_contents",
    "INT64": "int64_contents",
    "UINT8": "uint_contents",
    "UINT16": "uint_contents",
    "UINT32": "uint_contents",
    "UINT64": "uint64_contents",
    "FP16": "fp32_contents",
    "FP32": "fp32_contents",
    "FP64": "fp64_contents",
    "BYTES": "bytes_contents",
}
MAX_MESSAGE_BYTES = 64 << 20


class InferenceService:
    def __init__(self, runtime: Runtime) -> None:
        self.runtime = runtime

    async def server_live(self, request: pb.ServerLiveRequest, context: Any) -> pb.ServerLiveResponse:
        return pb.ServerLiveResponse(live=True)

    async def server_ready(self, request: pb.ServerReadyRequest, context: Any) -> pb.ServerReadyResponse:
        return pb.ServerReadyResponse(ready=all(self.runtime.checks().values()))

    async def model_ready(self, request: pb.ModelReadyRequest, context: Any) -> pb.ModelReadyResponse:
        return pb.ModelReadyResponse(ready=inference.model_ready(self.runtime, request.name))

    async def server_metadata(self, request: pb.ServerMetadataRequest, context: Any) -> pb.ServerMetadataResponse:
        return pb.ServerMetadataResponse(**inference.server_metadata())

    async def model_metadata(self, request: pb.ModelMetadataRequest, context: Any) -> pb.ModelMetadataResponse:
        meta = inference.metadata(inference.serving_model(self.runtime, request.name), request.name)
        return pb.ModelMetadataResponse(
            name=meta["name"],
            versions=meta["versions"],
            platform=meta["platform"],
            inputs=[pb.ModelMetadataResponse.TensorMetadata(**t) for t in meta["inputs"]],
            outputs=[pb.ModelMetadataResponse.TensorMetadata(**t) for t in meta["outputs"]],
        )

    async def model_config(self, request: pb.ModelConfigRequest, context: Any) -> pb.ModelConfigResponse:
        config = inference.config(inference.serving_model(self.runtime, request.name), request.name)
        return pb.ModelConfigResponse(
            config=pb.ModelConfig(
                name=config["name"],
                platform=config["platform"],
                backend=config["backend"],
                max_batch_size=config["max_batch_size"],
                input=[pb.ModelInput(**t) for t in config["input"]],
                output=[pb.ModelOutput(**t) for t in config["output"]],
            )
        )

    async def model_infer(self, request: pb.ModelInferRequest, context: Any) -> pb.ModelInferResponse:
        # An unknown name is NOT_FOUND, whatever the inputs hold.
        found = inference.served_for(self.runtime, request.model_name)
        tensors = _inputs(request)
        requested = [o.name for o in request.outputs] or None
        result = await inference.infer(self.runtime, request.model_name, found, tensors, requested)
        response = pb.ModelInferResponse(
            model_name=result.model_name, model_version=result.model_version, id=request.id
        )
        for key, value in result.parameters.items():
            _set_parameter(response.parameters[key], value)
        for output in result.outputs:
            response.outputs.add(name=output.name, datatype=output.datatype, shape=output.shape)
            response.raw_output_contents.append(encode_binary(output.datatype, output.values))
        return response


def _inputs(request: pb.ModelInferRequest) -> list[Tensor]:
    raw = list(request.raw_input_contents)
    if raw and len(raw) != len(request.inputs):
        raise ProtocolError(400, f"{len(raw)} raw_input_contents for {len(request.inputs)} inputs")
    tensors = []
    for i, spec in enumerate(request.inputs):
        # Each read of a message's field builds a new Python object: read each once.
        name, datatype, shape = spec.name, spec.datatype, spec.shape[:]  # a slice: twice as fast as list()
        if raw:
            tensors.append(decode_binary(name, datatype, shape, raw[i]))
            continue
        if datatype not in CONTENTS:
            check_datatype(name, datatype)  # refuses it, naming the types there are
        values = getattr(spec.contents, CONTENTS[datatype])[:]
        if len(values) != element_count(name, shape):
            raise ProtocolError(400, f"input {name!r}: {len(values)} elements of contents for shape {shape}")
        tensors.append(Tensor(name, datatype, shape, values))
    return tensors


def _set_parameter(parameter: pb.InferParameter, value: Any) -> None:
    if isinstance(value, bool):
        parameter.bool_param = value
    elif isinstance(value, int):
        parameter.int64_param = value
    elif isinstance(value, float):
        parameter.double_param = value
    else:
        parameter.string_param = str(value)


def _unary(
    method: Callable[[Any, Any], Awaitable[Any]], request_type: Any, response_type: Any
) -> grpc.RpcMethodHandler:
    async def handle(request: Any, context: aio.ServicerContext) -> Any:
        try:
            return await method(request, context)
        except ProtocolError as exc:
            await context.abort(CODES[exc.status], exc.message)

    return grpc.unary_unary_rpc_method_handler(
        handle, request_deserializer=request_type.FromString, response_serializer=response_type.SerializeToString
    )


def handler(service: InferenceService) -> grpc.GenericRpcHandler:
    return grpc.method_handlers_generic_handler(
        SERVICE,
        {
            "ServerLive": _unary(service.server_live, pb.ServerLiveRequest, pb.ServerLiveResponse),
            "ServerReady": _unary(service.server_ready, pb.ServerReadyRequest, pb.ServerReadyResponse),
            "ModelReady": _unary(service.model_ready, pb.ModelReadyRequest, pb.ModelReadyResponse),
            "ServerMetadata": _unary(service.server_metadata, pb.ServerMetadataRequest, pb.ServerMetadataResponse),
            "ModelMetadata": _unary(service.model_metadata, pb.ModelMetadataRequest, pb.ModelMetadataResponse),
            "ModelInfer": _unary(service.model_infer, pb.ModelInferRequest, pb.ModelInferResponse),
            "ModelConfig": _unary(service.model_config, pb.ModelConfigRequest, pb.ModelConfigResponse),
        },
    )


async def start_grpc(runtime: Runtime, host: str, port: int) -> aio.Server:
    """Serves the protocol on host:port; several serving processes share the port
    (SO_REUSEPORT, gRPC's default on Linux), as they share the HTTP one."""
    server = aio.server(
        options=[
            ("grpc.max_receive_message_length", MAX_MESSAGE_BYTES),
            ("grpc.max_send_message_length", MAX_MESSAGE_BYTES),
            ("grpc.so_reuseport", 1),
        ]
    )
    server.add_generic_rpc_handlers([handler(InferenceService(runtime))])
    server.add_insecure_port(f"{host}:{port}")
    await server.start()
    log.info("Open Inference Protocol over gRPC on %s:%d", host, port)
    return server
