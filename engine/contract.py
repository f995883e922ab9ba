"""The HTTP contract, declared once: request bodies, query strings and responses as msgspec Structs.

Each declaration is the source of three things: the validation of a request (msgspec decodes
the body straight into it), the `field` a 422 names (found by walking the declaration, never
read back out of an error message) and its JSON Schema in /openapi.json (engine/openapi.py).
The declarations check shapes; feature values and ids are judged by `validate_features` and
`validate_id` (streams/records.py), the rules the stream applies to events.

Why msgspec: it is not slower on /predict, pydantic is. Reading a body and checking its shape
took 0.33 µs with msgspec against 0.78 µs with `orjson.loads` plus hand checks (one feature),
0.78 against 1.27 µs (8 features) and 3.5 against 3.8 µs (50), where pydantic's
`model_validate_json` took 1.5, 2.3 and 7.1 µs; through the whole ASGI app the two first are
level (65 µs a request with a logreg model). msgspec's errors carry their location only in
the message text, so a refused body is read again without a type and walked along the
declaration to name the field: that costs only on the error path.
"""

from __future__ import annotations

import sys
from typing import Annotated, Any, Generic, Literal, TypeVar, get_args, get_origin

import msgspec
from msgspec import UNSET, Meta, Struct, UnsetType
from starlette.requests import Request
from starlette.responses import Response

from models.errors import EngineError
from models.rollout import MODES

MAX_BODY_BYTES = 1 << 20
MAX_BATCH_ROWS = 1000
MAX_ENTITY_IDS = 1000
MAX_LABELS = 1000

# What each refusal of a JSON body means, for the responses and for /openapi.json alike.
BODY_NOT_JSON = "Content-Type must be application/json"
BODY_TOO_LARGE = f"body larger than {MAX_BODY_BYTES} bytes"
BODY_ERRORS = {
    400: "body is not valid JSON",
    413: BODY_TOO_LARGE,
    415: BODY_NOT_JSON,
    422: "the body breaks the schema; `field` names the offending field",
}
QUERY_ERRORS = {422: "a query parameter breaks the schema; `field` names it"}

T = TypeVar("T")
StructT = TypeVar("StructT", bound=Struct)


class RequestError(EngineError):
    """A request the API refuses: answered with `status` and {"error": message, "field": field}."""

    def __init__(self, status: int, message: str, field: str | None = None) -> None:
        super().__init__(message)
        self.status = status
        self.message = message
        self.field = field


# -- requests ---------------------------------------------------------------------------------

EntityIds = Annotated[
    list[str], Meta(min_length=1, max_length=MAX_ENTITY_IDS, description="one `entity_id` parameter per entity")
]


ModelName = Annotated[
    str,
    Meta(min_length=1, description="the named model to answer (MODELS; GET /models lists them); default: the first"),
]


class PredictRequest(Struct, forbid_unknown_fields=True):
    """One entity to score now."""

    entity_id: Annotated[str, Meta(min_length=1)] | int
    model: ModelName | UnsetType = UNSET
    event_id: (
        Annotated[
            str,
            Meta(
                min_length=1,
                description="logs this prediction to be learned from when a label with this event_id comes "
                "(labels topic or POST /labels); the rules of event ids apply",
            ),
        ]
        | int
        | UnsetType
    ) = UNSET
    # Any, not a union of the value types: validate_features judges the values, as on the stream,
    # and msgspec checking a union per value would cost 0.5 µs more for 50 features.
    features: Annotated[
        dict[str, Any],
        Meta(
            description="name -> number, string, boolean or null (missing); joined with the entity's online features",
            extra_json_schema={"additionalProperties": {"type": ["number", "string", "boolean", "null"]}},
        ),
    ] = {}


class PredictBatchRequest(Struct, forbid_unknown_fields=True):
    rows: Annotated[list[PredictRequest], Meta(min_length=1, max_length=MAX_BATCH_ROWS)]


class LabelItem(Struct, forbid_unknown_fields=True):
    event_id: Annotated[str, Meta(min_length=1)] | int
    label: Annotated[Any, Meta(description="must fit the model's task, as on the labels topic")]


class LabelsRequest(Struct, forbid_unknown_fields=True):
    labels: Annotated[list[LabelItem], Meta(min_length=1, max_length=MAX_LABELS)]


class PromoteRequest(Struct):
    version: int


class RolloutRequest(Struct):
    version: int
    mode: Literal[MODES] = "shadow"  # type: ignore[valid-type]
    share: Annotated[float, Meta(ge=0.0, le=1.0, description="of the entities a canary answers")] = 0.0
    min_labels: Annotated[int, Meta(ge=1, description="default: ROLLOUT_MIN_LABELS")] | UnsetType = UNSET
    margin: Annotated[float, Meta(description="default: ROLLOUT_MARGIN")] | UnsetType = UNSET


class ModelQuery(Struct):
    model: ModelName | UnsetType = UNSET


class FeaturesQuery(Struct):
    entity_id: EntityIds


class OfflineFeaturesQuery(Struct):
    entity_id: EntityIds
    # A query string is not JSON: "nan" and "inf" read as floats there; these bounds refuse them.
    ts: Annotated[
        float, Meta(ge=-sys.float_info.max, le=sys.float_info.max, description="event time in epoch seconds, finite")
    ]


# -- responses --------------------------------------------------------------------------------


class Error(Struct):
    error: str
    field: str | UnsetType = UNSET


class ModelRef(Struct):
    name: str
    version: int


class Fallback(Struct):
    reason: Literal["model_not_loaded", "deadline", "model_error", "model_not_trained"]
    source: Literal["fallback_model", "prior", "default"]


class PredictionAnswer(Struct):
    entity_id: str
    prediction: float | int | str | bool | None
    probabilities: dict[str, float] | None
    model: ModelRef | None
    cached: Annotated[Literal["l1", "l2"] | None, Meta(description="the cache tier that answered, or null")]
    fallback: Fallback | None
    rollout: Annotated[Literal["canary"] | None, Meta(description="a canary challenger answered")]
    entity_known: bool
    feature_version: int | None
    feature_age_seconds: Annotated[float, Meta(ge=0)] | None
    model_age_seconds: float | None
    event_id: Annotated[str | None, Meta(description="the request's event_id, when it had one")] = None
    logged: Annotated[
        Literal["queued", "duplicate", "unlogged"] | None,
        Meta(
            description="with an event_id: queued to be learned from when its label comes; duplicate (this "
            "id was logged before: the first answer is the one learned from); unlogged (Kafka unreachable or "
            "the log's buffer full: answered all the same)"
        ),
    ] = None


class PredictionBatch(Struct):
    results: list[PredictionAnswer]


class FeatureRow(Struct):
    entity_id: str
    known: bool
    values: dict[str, float | None]
    updated_at: float | None
    version: int


class FeatureRows(Struct):
    rows: list[FeatureRow]


class Liveness(Struct):
    status: Literal["alive"]


class Readiness(Struct):
    ready: bool
    checks: dict[str, bool]
    redis: bool | None
    kafka: bool | None  # whether the broker answered the last metadata request (None without Kafka)


class AvailableModel(Struct):
    name: str
    task: str
    description: str


class LeaderboardRow(Struct):
    name: str
    factory: str
    target: str | None
    task: str
    serving: dict[str, Any] | None
    samples_learned: int
    primary_metric: str
    value: float | None
    lower_is_better: bool


class ModelsListing(Struct):
    model: Annotated[str, Meta(description="the named model this document is of")]
    serving: dict[str, Any] | None
    versions: list[dict[str, Any]]
    serving_version: Any
    rollout: dict[str, Any] | None
    applied: list[dict[str, Any]]
    snapshots: list[Any]
    available: list[AvailableModel]
    models: Annotated[list[LeaderboardRow], Meta(description="every named model, the default first")]


class LabelsAccepted(Struct):
    accepted: Annotated[int, Meta(description="labels acknowledged by Kafka on the labels topic")]


class CommandDone(Struct):
    """The learner's answer, with what it did (`serving`, `rollout` or `stopped`)."""

    id: str


class CommandAccepted(Struct):
    accepted: str
    detail: str


# -- reading requests -------------------------------------------------------------------------


class JsonBody(Generic[T]):
    """Reads a request body into its declaration."""

    def __init__(self, declaration: type[T]) -> None:
        self.declaration = declaration
        self._decoder = msgspec.json.Decoder(declaration)

    async def read(self, request: Request) -> T:
        return self.decode(await read_body(request))

    def decode(self, raw: bytes) -> T:
        try:
            return self._decoder.decode(raw)
        except (msgspec.DecodeError, RecursionError, UnicodeError) as exc:
            # msgspec checks UTF-8 only where it builds a str, and then raises UnicodeDecodeError.
            raise refusal(self.declaration, raw, exc) from None


async def read_body(request: Request) -> bytes:
    check_body_headers(request.headers.get("content-type", ""), request.headers.get("content-length"))
    body = await request.body()
    if len(body) > MAX_BODY_BYTES:
        raise RequestError(413, BODY_TOO_LARGE)
    return body


def check_body_headers(content_type: str, length: str | None) -> None:
    """415 unless the body is JSON; 413 when it says it is larger than MAX_BODY_BYTES."""
    if content_type.split(";")[0].strip().lower() != "application/json":
        raise RequestError(415, BODY_NOT_JSON)
    if length is not None and length.isdigit() and int(length) > MAX_BODY_BYTES:
        raise RequestError(413, BODY_TOO_LARGE)


def refusal(declaration: Any, raw: bytes, exc: Exception) -> RequestError:
    """Why msgspec refused `raw`: 400 when it is not JSON at all, else 422 naming the field."""
    try:
        data = msgspec.json.decode(raw)
    except (msgspec.DecodeError, RecursionError) as not_json:
        # Out-of-range numbers such as 1e400 are refused here too, as orjson did.
        return RequestError(400, f"{BODY_ERRORS[400]}: {not_json}")
    except UnicodeError as not_utf8:
        return RequestError(400, f"{BODY_ERRORS[400]}: not UTF-8: {not_utf8}")
    found = locate(declaration, data)
    # The walk and the decoder apply the same declaration; should they ever disagree, the
    # caller still gets a 422 with msgspec's own words rather than a 500.
    field, message = found if found is not None else ("body", str(exc))
    return RequestError(422, message, field)


def read_query(request: Request, declaration: type[StructT]) -> StructT:
    """The query string as its declaration: repeated parameters are declared as lists."""
    params = request.query_params
    data: dict[str, Any] = {}
    for f in msgspec.structs.fields(declaration):
        if get_origin(_bare(f.type)) is list:
            data[f.encode_name] = params.getlist(f.encode_name)
        elif f.encode_name in params:
            data[f.encode_name] = params[f.encode_name]
    try:
        return msgspec.convert(data, declaration, strict=False)
    except msgspec.ValidationError as exc:
        found = locate(declaration, data, strict=False)
        field, message = found if found is not None else ("query", str(exc))
        raise RequestError(422, message, field) from None


def locate(declaration: Any, value: Any, path: str = "", *, strict: bool = True) -> tuple[str, str] | None:
    """The first field of `value` that breaks `declaration`, and why; None when nothing does.

    Walks the declaration's Structs, lists and dicts; at the level where no part is to blame,
    msgspec's own message says what is wrong there.
    """
    try:
        msgspec.convert(value, declaration, strict=strict)
        return None
    except msgspec.ValidationError as exc:
        problem = str(exc)
    here = path or "body"
    bare = _bare(declaration)
    parts: list[tuple[Any, Any, str]] = []
    if isinstance(bare, type) and issubclass(bare, Struct):
        if type(value) is not dict:
            return here, f"{here} must be a JSON object"
        fields = msgspec.structs.fields(bare)
        if bare.__struct_config__.forbid_unknown_fields:
            unknown = sorted(set(value) - {f.encode_name for f in fields})
            if unknown:
                return _join(path, unknown[0]), f"unknown field {unknown[0]!r}"
        for f in fields:
            where = _join(path, f.encode_name)
            if f.encode_name in value:
                found = locate(f.type, value[f.encode_name], where, strict=strict)
                if found is not None:
                    return found
            elif f.required:
                return where, f"{where} is missing"
    elif get_origin(bare) is list and type(value) is list:
        (item,) = get_args(bare)
        parts = [(item, v, f"{here}[{i}]") for i, v in enumerate(value)]
    elif get_origin(bare) is dict and type(value) is dict:
        _, item = get_args(bare)
        parts = [(item, v, _join(path, str(k))) for k, v in value.items()]
    for part, v, where in parts:
        found = locate(part, v, where, strict=strict)
        if found is not None:
            return found
    metadata = get_args(declaration)[1:] if get_origin(declaration) is Annotated else ()
    described = [m.description for m in metadata if isinstance(m, Meta) and m.description]
    return here, f"{here}: {problem}" + (f" ({described[-1]})" if described else "")


def _bare(declaration: Any) -> Any:
    return get_args(declaration)[0] if get_origin(declaration) is Annotated else declaration


def _join(path: str, name: str) -> str:
    return f"{path}.{name}" if path else name


# -- answering --------------------------------------------------------------------------------


def error_response(
    status: int, message: str, field: str | None = None, headers: dict[str, str] | None = None
) -> Response:
    body = msgspec.json.encode(Error(message, UNSET if field is None else field))
    return Response(body, status_code=status, headers=headers, media_type="application/json")
