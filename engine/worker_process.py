"""`python -m engine worker`: the process around a stream worker. Faust's worker runs the
app; the stream worker's own parts start before it and stop before the app does, and a
signal ends the process within the stop deadline in any state."""

from __future__ import annotations

import asyncio
import signal
from typing import Any

import faust
from mode import Service

from engine.learning import LearningService
from engine.process import arm_stop_deadline, collect_young_less_often, freeze_heap, time_collections
from engine.settings import Settings
from engine.stream_worker import StreamWorker
from engine.worker_modes import EmbeddedLearner, LearnerApart, WorkerMode
from models.named import NamedModel
from streams.features import FeatureRegistry


class WorkerService(Service):
    """Starts the worker's own parts with Faust's worker, and stops them before the app."""

    def __init__(self, worker: StreamWorker, **kwargs: Any) -> None:
        super().__init__(**kwargs)
        self.worker = worker

    async def on_stop(self) -> None:
        await self.worker.stop()


class DeadlineWorker(faust.Worker):
    """Faust's worker, but SIGTERM or SIGINT end the process within the stop deadline in any
    state (a broker outage can leave Faust's shutdown waiting for minutes)."""

    def _on_sigterm(self) -> None:
        arm_stop_deadline()
        super()._on_sigterm()

    def _on_sigint(self) -> None:
        arm_stop_deadline()
        super()._on_sigint()


def run_worker(settings: Settings, features: FeatureRegistry, *, embedded_learner: bool) -> None:
    import uvloop

    from engine.logs import install_log_rate_limit
    from engine.topics import ensure_topics

    settings.state_path.mkdir(parents=True, exist_ok=True)
    settings.table_path.mkdir(parents=True, exist_ok=True)
    loop = uvloop.new_event_loop()
    asyncio.set_event_loop(loop)
    loop.run_until_complete(ensure_topics(settings))
    worker = StreamWorker(settings, features, worker_modes(settings, features, embedded_learner=embedded_learner))
    loop.run_until_complete(worker.start())
    freeze_heap()
    collect_young_less_often(settings.stream_batch_size)
    time_collections("worker")
    faust_worker = DeadlineWorker(
        worker.app, WorkerService(worker, loop=loop), loop=loop, loglevel=settings.log_level.upper()
    )
    # Faust's terminal spinner lowers the root logger to DEBUG so that it spins on every record.
    faust_worker.spinner = None
    install_log_rate_limit_after_setup(faust_worker, install_log_rate_limit)
    signal.signal(signal.SIGPIPE, signal.SIG_DFL)
    faust_worker.execute_from_commandline()


def worker_modes(
    settings: Settings, features: FeatureRegistry, *, embedded_learner: bool
) -> list[tuple[NamedModel, WorkerMode]]:
    """Each named model with its learner (embedded) or its published versions (apart)."""
    modes: list[tuple[NamedModel, WorkerMode]] = []
    for named in settings.models:
        own = settings.for_model(named)
        mode: WorkerMode = (
            EmbeddedLearner(LearningService.restore(own, features)) if embedded_learner else LearnerApart(own)
        )
        modes.append((named, mode))
    return modes


def install_log_rate_limit_after_setup(faust_worker: faust.Worker, install: Any) -> None:
    # Faust sets up the root logger's handlers when it starts: the filter goes on them then.
    original = faust_worker.on_setup_root_logger

    def on_setup_root_logger(*args: Any, **kwargs: Any) -> None:
        original(*args, **kwargs)
        install()

    faust_worker.on_setup_root_logger = on_setup_root_logger  # type: ignore[method-assign]
