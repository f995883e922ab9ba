"""`python -m engine serve`: one serving process (the Starlette API).

Several can listen on one port: under `engine run` they share the socket the supervisor
bound; started alone, each binds the port with SO_REUSEPORT. Either way the kernel spreads
connections across them. Nothing here touches the stream: features come from the
feature table's changelog, models from the models topic.
"""

from __future__ import annotations

import os
import socket

import uvicorn

from engine.api import create_api
from engine.process import arm_stop_deadline, configure_logging, freeze_heap, time_collections
from engine.runtime import Runtime
from engine.settings import Settings
from engine.sockets import shared_socket


class DeadlineServer(uvicorn.Server):
    """uvicorn's server, but a signal to stop ends the process within the stop deadline in
    any state (its Kafka clients can wait long on a broker that is down)."""

    def handle_exit(self, sig: int, frame: object) -> None:
        arm_stop_deadline()
        super().handle_exit(sig, frame)  # type: ignore[arg-type]


async def start_runtime(settings: Settings) -> Runtime:
    """This process's runtime, serving the Open Inference Protocol over gRPC as well
    (on the same event loop) unless GRPC_PORT is 0."""
    runtime = await Runtime.start(settings)
    if settings.grpc_port:
        from engine.oip.grpc_server import start_grpc

        runtime.grpc = await start_grpc(runtime, settings.api_host, settings.grpc_port)
    return runtime


def run_serve(settings: Settings) -> None:
    import asyncio

    from engine.topics import ensure_topics

    configure_logging(settings.log_level)
    if not os.environ.get("RTML_LISTEN_FD"):  # under `engine run` the supervisor made them
        asyncio.run(ensure_topics(settings))
    app = create_api(lambda: start_runtime(settings))
    config = uvicorn.Config(
        app,
        log_level=settings.log_level.lower() if settings.log_level.lower() != "info" else "warning",
        access_log=False,
        lifespan="on",
        loop="uvloop",
        http="httptools",
        timeout_graceful_shutdown=5,
    )
    server = DeadlineServer(config)
    freeze_heap()
    time_collections("serving")
    inherited = os.environ.get("RTML_LISTEN_FD")
    if inherited:
        sock = socket.socket(fileno=int(inherited))
    else:
        sock = shared_socket(settings.api_host, settings.api_port)
        # API_PORT=0 picks a free port: say which (the supervisor does the same under `run`).
        settings.state_path.mkdir(parents=True, exist_ok=True)
        (settings.state_path / "api.port").write_text(f"{sock.getsockname()[1]}\n")
    server.run(sockets=[sock])
