"""Tensors of the Open Inference Protocol: decoding inputs and encoding outputs, in JSON
and in the binary layout shared by the REST binary-data extension and gRPC's raw contents
(little-endian, row-major; BYTES elements each prefixed with their length in 4 bytes)."""

from __future__ import annotations

import math
import struct
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from models.errors import EngineError

NUMPY_TYPES: dict[str, Any] = {
    "BOOL": np.bool_,
    "INT8": np.int8,
    "INT16": np.int16,
    "INT32": np.int32,
    "INT64": np.int64,
    "UINT8": np.uint8,
    "UINT16": np.uint16,
    "UINT32": np.uint32,
    "UINT64": np.uint64,
    "FP16": np.float16,
    "FP32": np.float32,
    "FP64": np.float64,
}
DATATYPES = (*NUMPY_TYPES, "BYTES")


class ProtocolError(EngineError):
    """A request the protocol refuses: 400 (INVALID_ARGUMENT) or 404 (NOT_FOUND)."""

    def __init__(self, status: int, message: str) -> None:
        super().__init__(message)
        self.status = status
        self.message = message


@dataclass
class Tensor:
    name: str
    datatype: str
    shape: list[int]
    values: list[Any] = field(default_factory=list)  # flattened, row-major: Python values

    @property
    def rows(self) -> int:
        """N of a [N] or [N, 1] tensor: one value per row."""
        if len(self.shape) == 1 or (len(self.shape) == 2 and self.shape[1] == 1):
            return self.shape[0]
        raise ProtocolError(400, f"input {self.name!r} has shape {self.shape}: expected [N] or [N, 1]")


MAX_ROWS = 1000  # as /predict/batch: one request is at most this many rows


def element_count(name: str, shape: list[int]) -> int:
    """The elements of an input of shape [N] or [N, 1] with N at most MAX_ROWS; anything
    else is refused before counting (a shape of many huge dimensions would take the loop
    minutes of big-integer products)."""
    if len(shape) == 1 and 0 <= shape[0] <= MAX_ROWS:
        return shape[0]  # [N], the common shape: no loop (asked once per input of every request)
    if not 1 <= len(shape) <= 2:
        raise ProtocolError(400, f"input {name!r} has shape {shape}: expected [N] or [N, 1]")
    count = 1
    for d in shape:
        if d < 0:
            raise ProtocolError(400, f"input {name!r} has a negative dimension in its shape {shape}")
        if d > MAX_ROWS:
            raise ProtocolError(400, f"input {name!r} has shape {shape}: at most {MAX_ROWS} rows a request")
        count *= d
    return count


def check_datatype(name: str, datatype: str) -> None:
    if datatype not in DATATYPES:
        raise ProtocolError(400, f"input {name!r} has datatype {datatype!r}: expected one of {', '.join(DATATYPES)}")


def decode_binary(name: str, datatype: str, shape: list[int], raw: bytes) -> Tensor:
    """A tensor from its binary form."""
    check_datatype(name, datatype)
    count = element_count(name, shape)
    if datatype == "BYTES":
        values = _split_bytes(name, raw)
    else:
        dtype = np.dtype(NUMPY_TYPES[datatype]).newbyteorder("<")
        if len(raw) != count * dtype.itemsize:
            raise ProtocolError(
                400, f"input {name!r}: {len(raw)} bytes of data for {count} elements of {datatype} ({shape})"
            )
        values = np.frombuffer(raw, dtype=dtype).tolist()
    if len(values) != count:
        raise ProtocolError(400, f"input {name!r}: {len(values)} elements for shape {shape}")
    return Tensor(name, datatype, shape, values)


def _split_bytes(name: str, raw: bytes) -> list[bytes]:
    values, offset = [], 0
    while offset < len(raw):
        if offset + 4 > len(raw):
            raise ProtocolError(400, f"input {name!r}: BYTES data ends inside an element's length")
        (size,) = struct.unpack_from("<I", raw, offset)
        offset += 4
        if offset + size > len(raw):
            raise ProtocolError(400, f"input {name!r}: BYTES element of {size} bytes runs past the data")
        values.append(raw[offset : offset + size])
        offset += size
    return values


def decode_json(name: str, datatype: str, shape: list[int], data: Any) -> Tensor:
    """A tensor from the JSON `data` of a REST request: nested as its shape, or flat."""
    check_datatype(name, datatype)
    count = element_count(name, shape)
    if type(data) is not list:
        values = [data]
    elif data and type(data[0]) is list:
        values = _flatten(data)
    else:
        values = data  # flat, the common case; a list hidden further in is refused by the checks below
    if len(values) != count:
        raise ProtocolError(400, f"input {name!r}: {len(values)} elements of data for shape {shape}")
    fits = _FITS[datatype if datatype in _FITS else "INT" if "INT" in datatype else "FP"]
    for value in values:
        if not fits(value):
            raise ProtocolError(400, f"input {name!r}: {value!r} is not a {datatype} value")
    if datatype == "BYTES":
        values = [v.encode() for v in values]
    return Tensor(name, datatype, shape, values)


def _flatten(data: list[Any]) -> list[Any]:
    flat: list[Any] = []
    stack = [iter(data)]
    while stack:
        for item in stack[-1]:
            if isinstance(item, list):
                stack.append(iter(item))
                break
            flat.append(item)
        else:
            stack.pop()
    return flat


_FITS = {
    "BYTES": lambda v: type(v) is str,
    "BOOL": lambda v: type(v) is bool,
    "INT": lambda v: type(v) is int,
    # JSON has no NaN: a missing value of a float input is null.
    "FP": lambda v: v is None or type(v) is float or type(v) is int,
}


def encode_binary(datatype: str, values: list[Any]) -> bytes:
    if datatype == "BYTES":
        return b"".join(struct.pack("<I", len(v)) + v for v in values)
    return np.asarray(values, dtype=np.dtype(NUMPY_TYPES[datatype]).newbyteorder("<")).tobytes()


def json_data(datatype: str, values: list[Any]) -> list[Any]:
    """Output values as REST JSON `data` (flat, row-major). BYTES as text; NaN as null."""
    if datatype == "BYTES":
        return [v.decode("utf-8", "replace") for v in values]
    if datatype.startswith("FP"):
        return [None if isinstance(v, float) and math.isnan(v) else v for v in values]
    return values
