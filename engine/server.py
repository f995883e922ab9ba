"""Runs the HTTP API inside the Faust worker: one process, one event loop."""

from __future__ import annotations

import asyncio
import contextlib
from typing import Any, Iterator

import uvicorn
from mode import Service


class _EmbeddedServer(uvicorn.Server):
    @contextlib.contextmanager
    def capture_signals(self) -> Iterator[None]:
        # The Faust worker owns SIGINT/SIGTERM and stops this service on them.
        yield


class ApiService(Service):
    """A mode service so the Faust worker starts and stops uvicorn with everything else."""

    def __init__(self, asgi_app: Any, host: str, port: int, **kwargs: Any) -> None:
        super().__init__(**kwargs)
        config = uvicorn.Config(
            asgi_app, host=host, port=port, log_level="warning", access_log=False, lifespan="on", loop="none"
        )
        self.server = _EmbeddedServer(config)
        self._serving: asyncio.Task | None = None

    async def on_start(self) -> None:
        self._serving = asyncio.ensure_future(self.server.serve())
        while not self.server.started:
            if self._serving.done():
                self._serving.result()  # re-raises why uvicorn could not start (port taken, ...)
            await asyncio.sleep(0.01)

    async def on_stop(self) -> None:
        self.server.should_exit = True
        if self._serving is not None:
            await self._serving
