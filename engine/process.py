"""How every engine process starts and stops: logging, the heap frozen after start-up, and
one deadline on stopping.

A process asked to stop (SIGTERM, SIGINT) ends within STOP_DEADLINE_SECONDS in any state:
its Kafka clients can wait minutes on a broker that is down, and what must survive a stop
is on Kafka or in the last snapshot before it. The supervisor waits a little longer for
its children than they wait for themselves (SUPERVISOR_DEADLINE_SECONDS).
"""

from __future__ import annotations

import gc
import logging
import os
import threading
import time
from collections import deque

STOP_DEADLINE_SECONDS = 9.0
SUPERVISOR_DEADLINE_SECONDS = STOP_DEADLINE_SECONDS + 0.5
LOG_FORMAT = "[%(asctime)s] [%(process)d] [%(levelname)s] %(message)s"

log = logging.getLogger(__name__)


def configure_logging(level: str, fmt: str = LOG_FORMAT) -> None:
    from engine.logs import install_log_rate_limit

    logging.basicConfig(level=level.upper(), format=fmt)
    install_log_rate_limit()


def freeze_heap() -> None:
    """Everything built during start-up (modules, River, NumPy, Faust, the model) lives as
    long as the process: out of the collector's way. Full collections over it paused
    serving for 100-250 ms and took a tenth of ingestion time."""
    gc.collect()
    gc.freeze()


# A batch holds its young containers (records, rows, predictions, a fetch taken ahead)
# until it is sent; with the default threshold (700) each was traversed by two or three
# collections before it died (`benchmarks/worker_cpu.py`: 41.4 -> 37.4 us an event at
# 50,000). The count is of containers alive, so a threshold above what a batch keeps alive
# makes young collections rare: a batch of 12,000 events peaks at about 78,000 in process
# (more live, with the fetched records), where 50,000 still meant a collection of 13-15 ms
# every batch. At 20 a batch event, alternated three times on one backlog: no young
# collection in 100,000 events (six before), 20,272 / 21,443 / 24,256 events/s against
# 18,852 / 20,160 / 21,246. The price is a longer young collection when one comes (up to
# about 70 ms), rare: fine where throughput matters, not in the serving processes (p99 in ms).
BATCH_PROCESS_YOUNG_THRESHOLD = 50_000
YOUNG_PER_BATCH_EVENT = 20


def collect_young_less_often(batch_size: int) -> None:
    """For processes that work in batches of up to `batch_size` events (workers, learners)."""
    _, older, oldest = gc.get_threshold()
    gc.set_threshold(max(BATCH_PROCESS_YOUNG_THRESHOLD, YOUNG_PER_BATCH_EVENT * batch_size), older, oldest)


GC_FLUSH_SECONDS = 1.0


class CollectionTimer:
    """Every garbage collection's pause, in rtml_gc_pause_seconds{process, generation}: a
    collection stops the whole process, so its pause shows in every latency measured there.

    The collector's callback only notes the pause; a thread records the notes each second.
    Recording from the callback would deadlock: a collection can start inside
    prometheus_client's own lock (it allocates while creating a series), and recording
    takes that lock again."""

    def __init__(self, process: str) -> None:
        from engine.metrics import GC_PAUSE_SECONDS

        self._series = [GC_PAUSE_SECONDS.labels(process, str(generation)) for generation in range(3)]
        self._pauses: list[deque[float]] = [deque() for _ in range(3)]
        self._started = 0.0

    def on_collection(self, phase: str, info: dict[str, int]) -> None:
        if phase == "start":
            self._started = time.perf_counter()
        else:
            self._pauses[info["generation"]].append(time.perf_counter() - self._started)

    def flush(self) -> None:
        """Records the pauses noted so far (on any thread but the collector's callback)."""
        for series, pauses in zip(self._series, self._pauses):
            while pauses:
                series.observe(pauses.popleft())

    def _flush_forever(self) -> None:
        while True:
            time.sleep(GC_FLUSH_SECONDS)
            self.flush()


def time_collections(process: str) -> CollectionTimer:
    """From now on, every garbage collection of this process is timed (see CollectionTimer)."""
    timer = CollectionTimer(process)
    gc.callbacks.append(timer.on_collection)
    threading.Thread(target=timer._flush_forever, name="gc-pauses", daemon=True).start()
    return timer


def arm_stop_deadline() -> None:
    """From now on, the process exits at the deadline whatever it is still waiting on."""
    timer = threading.Timer(STOP_DEADLINE_SECONDS, _exit_now)
    timer.daemon = True
    timer.start()


def _exit_now() -> None:
    log.warning("stopping took longer than %.0f s: exiting now", STOP_DEADLINE_SECONDS)
    logging.shutdown()
    os._exit(0)
