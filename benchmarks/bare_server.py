"""The ceiling for this stack: Starlette + uvicorn + one River model, nothing else.

    python -m benchmarks.bare_server PORT

Same request body as the engine's /predict; no validation, cache, features or metrics.
"""

from __future__ import annotations

import gc
import sys

import orjson
import uvicorn
from river import datasets
from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import Response
from starlette.routing import Route

from models.factory import build_model

model = build_model("logreg")
for x, y in datasets.Phishing():
    model.learn_one(x, y)


async def predict(request: Request) -> Response:
    body = orjson.loads(await request.body())
    proba = model.predict_proba_one(body["features"])
    return Response(
        orjson.dumps({"probabilities": proba}, option=orjson.OPT_NON_STR_KEYS), media_type="application/json"
    )


app = Starlette(routes=[Route("/predict", predict, methods=["POST"])])

if __name__ == "__main__":
    gc.collect()
    gc.freeze()
    uvicorn.run(
        app,
        host="127.0.0.1",
        port=int(sys.argv[1]),
        log_level="warning",
        access_log=False,
        loop="uvloop",
        http="httptools",
    )
