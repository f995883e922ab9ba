"""`python -m engine run`: the embedded default, one command for the whole engine.

It starts one stream worker that is also the learner (with LEARNER=apart: a stream worker
and one learner process per model), and SERVE_PROCESSES serving processes sharing
API_PORT, restarts any that dies, and on SIGTERM or SIGINT stops them
all (SIGKILL for any still running after the deadline). Every child dies with it, even on
kill -9 (PR_SET_PDEATHSIG). Pids are recorded for `make down`; metrics of all processes
are shared through PROMETHEUS_MULTIPROC_DIR, so any serving process shows them all.
"""

from __future__ import annotations

import ctypes
import logging
import os
import shutil
import signal
import subprocess
import sys
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

from engine.process import SUPERVISOR_DEADLINE_SECONDS, configure_logging
from engine.settings import Settings
from engine.sockets import shared_socket

log = logging.getLogger(__name__)

RESTART_BACKOFF_SECONDS = (0.5, 1.0, 2.0, 5.0)
PR_SET_PDEATHSIG = 1


# The stream worker yields the CPU to the serving processes when both want it (on two cores,
# a busy worker otherwise holds requests up, and slows a restarted server's way to ready);
# it still takes every cycle they leave.
WORKER_NICENESS = 10


def _die_with_parent() -> None:
    # Linux: the kernel sends SIGKILL to this child when its parent dies, however it dies.
    try:
        ctypes.CDLL("libc.so.6", use_errno=True).prctl(PR_SET_PDEATHSIG, signal.SIGKILL)
    except OSError:
        pass


def _worker_child() -> None:
    _die_with_parent()
    os.nice(WORKER_NICENESS)


@dataclass
class ChildProcess:
    name: str
    args: list[str]
    process: subprocess.Popen | None = None
    restarts: int = 0
    started_at: float = 0.0
    pid_file: Path | None = None

    pass_fds: tuple[int, ...] = ()
    preexec: Callable[[], None] = _die_with_parent
    env: dict[str, str] = field(default_factory=dict)  # its own settings, over the supervisor's

    def start(self, env: dict[str, str], pid_dir: Path) -> None:
        self.process = subprocess.Popen(
            [sys.executable, "-m", "engine", *self.args],
            env={**env, **self.env},
            preexec_fn=self.preexec,
            pass_fds=self.pass_fds,
        )
        self.started_at = time.monotonic()
        self.pid_file = pid_dir / f"{self.name}.pid"
        self.pid_file.write_text(f"{self.process.pid}\n")


@dataclass
class Supervisor:
    settings: Settings
    children: list[ChildProcess] = field(default_factory=list)
    stopping: bool = False
    metrics_dir: str = ""

    def run(self) -> int:
        pid_dir = self.settings.pid_path
        pid_dir.mkdir(parents=True, exist_ok=True)
        (pid_dir / "supervisor.pid").write_text(f"{os.getpid()}\n")
        env = self._child_env()
        self._prepare_topics()
        # One listening socket, inherited by every serving process (the kernel hands each
        # connection to one of them). API_PORT=0 picks a free port, written to api.port.
        listener = shared_socket(self.settings.api_host, self.settings.api_port)
        port = listener.getsockname()[1]
        env["RTML_LISTEN_FD"] = str(listener.fileno())
        port_file = self.settings.state_path / "api.port"
        port_file.write_text(f"{port}\n")
        self.children = self._stream_children() + [
            ChildProcess(f"serve-{i}", ["serve"], pass_fds=(listener.fileno(),))
            for i in range(self.settings.serve_processes)
        ]
        for child in self.children:
            child.start(env, pid_dir)
        signal.signal(signal.SIGTERM, self._on_signal)
        signal.signal(signal.SIGINT, self._on_signal)
        try:
            while not self.stopping:
                self._restart_the_dead(env, pid_dir)
                time.sleep(0.2)
        finally:
            self._stop_all()
            for child in self.children:
                if child.pid_file is not None:
                    child.pid_file.unlink(missing_ok=True)
            (pid_dir / "supervisor.pid").unlink(missing_ok=True)
        return 0

    def _stream_children(self) -> list[ChildProcess]:
        """The stream worker with the learner inside, or (LEARNER=apart) the worker and one
        learner per model: on two cores or more they learn faster, each on a core of its own."""
        if self.settings.learner == "embedded":
            return [ChildProcess("worker", ["worker", "--embedded-learner"], preexec=_worker_child)]
        learners = [
            ChildProcess(f"learner-{m.name}", ["learn"], preexec=_worker_child, env={"LEARN_MODEL": m.name})
            for m in self.settings.models
        ]
        return [*learners, ChildProcess("worker", ["worker"], preexec=_worker_child)]

    def _child_env(self) -> dict[str, str]:
        self.settings.state_path.mkdir(parents=True, exist_ok=True)
        env = dict(os.environ)
        if "PROMETHEUS_MULTIPROC_DIR" not in env:
            metrics_dir = self.settings.state_path / "prometheus"
            shutil.rmtree(metrics_dir, ignore_errors=True)  # counters start again with the processes
            metrics_dir.mkdir(parents=True)
            env["PROMETHEUS_MULTIPROC_DIR"] = str(metrics_dir)
        self.metrics_dir = env["PROMETHEUS_MULTIPROC_DIR"]
        return env

    def _prepare_topics(self) -> None:
        import asyncio

        from engine.topics import ensure_topics

        asyncio.run(ensure_topics(self.settings))

    def _on_signal(self, signum: int, frame: object) -> None:
        self.stopping = True

    def _restart_the_dead(self, env: dict[str, str], pid_dir: Path) -> None:
        for child in self.children:
            process = child.process
            if process is None or process.poll() is None or self.stopping:
                continue
            self._forget_metrics(process.pid)
            delay = RESTART_BACKOFF_SECONDS[min(child.restarts, len(RESTART_BACKOFF_SECONDS) - 1)]
            log.warning(
                "%s (pid %d) exited with %s; restarting it in %.1f s",
                child.name,
                process.pid,
                process.returncode,
                delay,
            )
            time.sleep(delay)
            if time.monotonic() - child.started_at > 60:
                child.restarts = 0  # it had been running fine: a fresh start, not a crash loop
            child.restarts += 1
            child.start(env, pid_dir)

    def _stop_all(self) -> None:
        running = [c.process for c in self.children if c.process is not None and c.process.poll() is None]
        for process in running:
            process.send_signal(signal.SIGTERM)
        deadline = time.monotonic() + SUPERVISOR_DEADLINE_SECONDS
        for process in running:
            try:
                process.wait(max(0.0, deadline - time.monotonic()))
            except subprocess.TimeoutExpired:
                log.warning("pid %d did not stop in time: killing it", process.pid)
                process.kill()
                process.wait()

    def _forget_metrics(self, pid: int) -> None:
        """A dead process's gauges stop counting (its counters keep their totals)."""
        from prometheus_client import multiprocess

        multiprocess.mark_process_dead(pid, self.metrics_dir)


def run_all(settings: Settings) -> int:
    configure_logging(settings.log_level, "[%(asctime)s] [supervisor] %(message)s")
    return Supervisor(settings).run()
