"""The rate limit on the Kafka clients' repeated warnings and errors."""

import logging

import pytest

from engine.logs import RateLimitFilter, install_log_rate_limit


class FakeClock:
    def __init__(self):
        self.now = 0.0

    def __call__(self):
        return self.now


class Collect(logging.Handler):
    def __init__(self):
        super().__init__()
        self.lines = []

    def emit(self, record):
        self.lines.append(self.format(record))


@pytest.fixture
def clock():
    return FakeClock()


@pytest.fixture
def lines(clock):
    """What a root handler writes once the rate limit is installed."""
    root = logging.getLogger()
    handler = Collect()
    saved_handlers, saved_level = root.handlers[:], root.level
    root.handlers[:] = [handler]
    root.setLevel(logging.INFO)
    install_log_rate_limit(10.0, clock)
    yield handler.lines
    root.handlers[:] = saved_handlers
    root.setLevel(saved_level)


def test_a_thousand_identical_errors_in_one_interval_write_one_line(lines, clock):
    for node in range(1000):
        clock.now = node * 0.001
        logging.getLogger("aiokafka.conn").error("Unable connect to node with id %s: %s", node, "refused")
    assert lines == ["Unable connect to node with id 0: refused"]


def test_after_the_interval_the_next_line_carries_the_count(lines, clock):
    log = logging.getLogger("aiokafka.cluster")
    for _ in range(1235):
        log.error("Unable to update metadata from %r", "broker")
    clock.now = 10.0
    log.error("Unable to update metadata from %r", "broker")
    log.error("Unable to update metadata from %r", "broker")
    assert lines == [
        "Unable to update metadata from 'broker'",
        "Unable to update metadata from 'broker' (and 1234 more like this in the last 10.0 s)",
    ]
    clock.now = 20.0
    log.error("Unable to update metadata from %r", "broker")
    assert lines[-1] == "Unable to update metadata from 'broker' (and 1 more like this in the last 10.0 s)"
    clock.now = 30.0
    log.error("Unable to update metadata from %r", "broker")
    assert lines[-1] == "Unable to update metadata from 'broker'"  # nothing was dropped in between


def test_templates_and_loggers_are_limited_independently(lines):
    logging.getLogger("aiokafka.conn").error("Unable connect to node with id %s", 1)
    logging.getLogger("aiokafka.conn").error("Connection at %s closed", "b:9092")
    logging.getLogger("kafka.client").error("Unable connect to node with id %s", 1)
    logging.getLogger("faust.transport.drivers.aiokafka").warning("Heartbeat failed")
    logging.getLogger("mode.services").warning("Heartbeat failed")
    logging.getLogger("aiokafka.conn").error("Unable connect to node with id %s", 2)
    assert len(lines) == 5


def test_our_own_records_and_the_clients_info_lines_pass_untouched(lines):
    for _ in range(3):
        logging.getLogger("engine.learning").error("snapshot failed")
        logging.getLogger("models.registry").warning("registry busy")  # "models" is not "mode"
        logging.getLogger("aiokafka.consumer").info("Joined group")
    assert len(lines) == 9


def test_a_record_seen_by_two_handlers_is_counted_once(clock):
    limiter = RateLimitFilter(10.0, clock)
    record = logging.LogRecord("aiokafka", logging.ERROR, __file__, 1, "down", None, None)
    assert limiter.filter(record) and limiter.filter(record)
    again = logging.LogRecord("aiokafka", logging.ERROR, __file__, 1, "down", None, None)
    assert not limiter.filter(again) and not limiter.filter(again)
    clock.now = 10.0
    last = logging.LogRecord("aiokafka", logging.ERROR, __file__, 1, "down", None, None)
    assert limiter.filter(last) and limiter.filter(last)
    assert last.getMessage() == "down (and 1 more like this in the last 10.0 s)"


def test_installing_twice_replaces_the_filter(lines):
    install_log_rate_limit(10.0)
    assert sum(isinstance(f, RateLimitFilter) for f in logging.getLogger().handlers[0].filters) == 1
