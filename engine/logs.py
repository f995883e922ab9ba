"""Rate-limits the Kafka clients' repeated warnings and errors.

During a broker outage aiokafka logs every failed metadata update and connection attempt:
a 17 s outage wrote 154,471 ERROR lines (14 MB). Each kind of record from those loggers
now passes once per interval, and the next one that passes says how many were dropped.
"""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass

NOISY_LOGGERS = ("aiokafka", "kafka", "faust.transport", "mode")
# Templates are few, but a client logging preformatted text makes a new key per line.
MAX_TRACKED_KINDS = 1000
_DECISION = "rtml_rate_limit_passes"


@dataclass
class _Window:
    started: float
    dropped: int = 0


class RateLimitFilter(logging.Filter):
    """Lets one record per (logger, message template) through per `interval` seconds.

    Applies to WARNING and above from the `loggers` given and their children; every
    other record passes untouched.
    """

    def __init__(
        self,
        interval: float = 10.0,
        clock: Callable[[], float] = time.monotonic,
        loggers: tuple[str, ...] = NOISY_LOGGERS,
    ) -> None:
        super().__init__()
        self.interval = interval
        self.clock = clock
        self.loggers = loggers
        self._windows: dict[tuple[str, str], _Window] = {}
        self._lock = threading.Lock()

    def filter(self, record: logging.LogRecord) -> bool:
        # One decision per record: a record reaches the filter once for each handler it has.
        decision = getattr(record, _DECISION, None)
        if decision is None:
            decision = not self._applies_to(record) or self._admit(record)
            setattr(record, _DECISION, decision)
        return decision

    def _applies_to(self, record: logging.LogRecord) -> bool:
        name = record.name
        return record.levelno >= logging.WARNING and any(
            name == prefix or name.startswith(prefix + ".") for prefix in self.loggers
        )

    def _admit(self, record: logging.LogRecord) -> bool:
        key = (record.name, str(record.msg))
        now = self.clock()
        with self._lock:
            window = self._windows.get(key)
            if window is not None and now - window.started < self.interval:
                window.dropped += 1
                return False
            # Re-inserted, so that the dict stays in the order the windows opened.
            self._windows.pop(key, None)
            if len(self._windows) >= MAX_TRACKED_KINDS:
                # The oldest window is the next to close: dropping it lets at most one line through early.
                del self._windows[next(iter(self._windows))]
            self._windows[key] = _Window(now)
        if window is not None and window.dropped:
            record.msg = f"{record.msg} (and {window.dropped} more like this in the last {self.interval:.1f} s)"
        return True


def install_log_rate_limit(interval: float = 10.0, clock: Callable[[], float] = time.monotonic) -> RateLimitFilter:
    """Attaches one filter to every handler of the root logger, replacing an earlier one.

    On handlers, not loggers: a logger's own filters do not see records propagated from its
    children, a handler's do. Call it after logging is configured (Faust's worker replaces
    the root handlers when it starts), or later handlers go without it.
    """
    limiter = RateLimitFilter(interval, clock)
    for handler in logging.getLogger().handlers:
        for old in [f for f in handler.filters if isinstance(f, RateLimitFilter)]:
            handler.removeFilter(old)
        handler.addFilter(limiter)
    return limiter
