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
from engine.runtime import Runtime
from engine.settings import Settings


def shared_socket(host: str, port: int) -> socket.socket:
    sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEPORT, 1)
    sock.bind((host, port))
    sock.listen(2048)
    sock.setblocking(False)
    return sock


def run_serve(settings: Settings) -> None:
    import asyncio

    from engine.logs import install_log_rate_limit
    from engine.topics import ensure_topics

    asyncio.run(ensure_topics(settings))
    app = create_api(lambda: Runtime.start(settings))
    config = uvicorn.Config(
        app, log_level=settings.log_level.lower() if settings.log_level.lower() != "info" else "warning",
        access_log=False, lifespan="on", loop="uvloop", http="httptools", timeout_graceful_shutdown=5,
    )
    server = uvicorn.Server(config)
    install_log_rate_limit()
    inherited = os.environ.get("RTML_LISTEN_FD")
    if inherited:
        sock = socket.socket(fileno=int(inherited))
    else:
        sock = shared_socket(settings.api_host, settings.api_port)
        # API_PORT=0 picks a free port: say which (the supervisor does the same under `run`).
        settings.state_path.mkdir(parents=True, exist_ok=True)
        (settings.state_path / "api.port").write_text(f"{sock.getsockname()[1]}\n")
    server.run(sockets=[sock])
