"""CPU time of the engine's processes over a timed window: which one is the long pole.

A throughput figure alone does not say what limits it. Read from /proc (Linux) around the
window the throughput benchmark times: each process's user + system CPU per event, and how
busy it was (CPU seconds over wall seconds: 1.0 is one core all the time). A process near
1.0 is the limit; one well below it waits on the others, or on Kafka. Beside it, its main
thread's CPU per event: where a Python process runs its Python (the rest is its other
threads': Faust's fetch thread, which runs Python too, the Parquet writer's, a JVM's).

Processes are the ones launched and their descendants (the supervisor's children under
`engine run`), plus the local Kafka broker when its pid file is there.
"""

from __future__ import annotations

import os
import time
from collections.abc import Iterable
from dataclasses import dataclass
from pathlib import Path

from engine.harness import ROOT

BROKER_PID_FILE = ROOT / ".state" / "kafka" / "broker.pid"
_TICKS = os.sysconf("SC_CLK_TCK")


def _stat(pid: int, tid: int | None = None) -> list[str] | None:
    """The fields of /proc/<pid>/stat (of one of its threads: /proc/<pid>/task/<tid>/stat)
    after the command name (field 3 on), or None if gone."""
    path = f"/proc/{pid}/stat" if tid is None else f"/proc/{pid}/task/{tid}/stat"
    try:
        text = Path(path).read_text()
    except OSError:
        return None
    return text.rpartition(")")[2].split()


def cpu_seconds(pid: int, tid: int | None = None) -> float | None:
    fields = _stat(pid, tid)
    if fields is None:
        return None
    return (int(fields[11]) + int(fields[12])) / _TICKS  # utime, stime


def thread_cpu_seconds(pid: int) -> dict[int, float]:
    """Each thread's user + system CPU seconds, by thread id (the main thread's is the pid)."""
    try:
        tids = [int(tid) for tid in os.listdir(f"/proc/{pid}/task")]
    except OSError:
        return {}
    spent = {tid: cpu_seconds(pid, tid) for tid in tids}
    return {tid: seconds for tid, seconds in spent.items() if seconds is not None}  # None: ended meanwhile


def descendants(roots: Iterable[int]) -> set[int]:
    """The roots and every process below them."""
    children: dict[int, list[int]] = {}
    for entry in Path("/proc").iterdir():
        if entry.name.isdigit():
            fields = _stat(int(entry.name))
            if fields is not None:
                children.setdefault(int(fields[1]), []).append(int(entry.name))  # ppid
    found: set[int] = set()
    pending = list(roots)
    while pending:
        pid = pending.pop()
        if pid not in found:
            found.add(pid)
            pending.extend(children.get(pid, ()))
    return found


def role(pid: int) -> str:
    """`engine worker`, `engine learn`, `engine serve`, `engine run`, `kafka broker`, or the program."""
    try:
        argv = Path(f"/proc/{pid}/cmdline").read_bytes().split(b"\0")
    except OSError:
        return "gone"
    words = [part.decode(errors="replace") for part in argv if part]
    if "kafka.Kafka" in words:
        return "kafka broker"
    if "-m" in words and words[words.index("-m") + 1 :][:1] == ["engine"]:
        rest = words[words.index("-m") + 2 :]
        return f"engine {rest[0]}" if rest else "engine"
    return Path(words[0]).name if words else "unknown"


def broker_pid() -> int | None:
    try:
        return int(BROKER_PID_FILE.read_text().strip())
    except (OSError, ValueError):
        return None


def cpu_figures(seconds: float, main_thread_seconds: float, events: int, wall: float) -> dict[str, float]:
    """A process's CPU over a window, as every path's result reports it: microseconds per
    event (its main thread's too) and busy (CPU seconds over wall seconds)."""
    per_event = 1e6 / max(events, 1)
    return {
        "cpu_us_per_event": round(seconds * per_event, 1),
        "busy": round(seconds / max(wall, 1e-9), 2),
        "main_thread_cpu_us_per_event": round(main_thread_seconds * per_event, 1),
    }


@dataclass
class Reading:
    at: float
    cpu: dict[int, tuple[str, float]]  # pid -> (role, CPU seconds)
    main_thread: dict[int, float]  # pid -> its main thread's CPU seconds


class CpuMeter:
    """Reads CPU at the start and the end of a window, for the given processes (and theirs)."""

    def __init__(self, roots: Iterable[int]) -> None:
        self.roots = list(roots)
        broker = broker_pid()
        if broker is not None and cpu_seconds(broker) is not None:
            self.roots.append(broker)

    def read(self) -> Reading:
        at = time.monotonic()
        cpu, main_thread = {}, {}
        for pid in descendants(self.roots):
            seconds = cpu_seconds(pid)
            if seconds is not None:
                cpu[pid] = (role(pid), seconds)
                main_thread[pid] = cpu_seconds(pid, pid) or 0.0
        return Reading(at, cpu, main_thread)

    @staticmethod
    def usage(start: Reading, end: Reading, events: int) -> dict[str, dict[str, float]]:
        """Per role (summed over its processes): CPU microseconds per event, and busy (CPU
        seconds over the window's wall seconds), and the main threads' CPU per event. A
        process that started during the window counts from zero."""
        wall = end.at - start.at
        spent: dict[str, float] = {}
        main: dict[str, float] = {}
        for pid, (name, seconds) in end.cpu.items():
            before = start.cpu.get(pid, (name, 0.0))[1]
            spent[name] = spent.get(name, 0.0) + max(0.0, seconds - before)
            main_spent = end.main_thread.get(pid, 0.0) - start.main_thread.get(pid, 0.0)
            main[name] = main.get(name, 0.0) + max(0.0, main_spent)
        return {
            name: cpu_figures(seconds, main[name], events, wall)
            for name, seconds in sorted(spent.items(), key=lambda item: -item[1])
            if seconds > 0
        }
