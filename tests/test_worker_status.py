"""What /readyz says of a stream worker, from its reports; what a worker says while it recovers."""

from __future__ import annotations

import logging

import orjson

from engine import metrics
from engine.worker_status import SILENT_AFTER_SECONDS, Progress, StatusReporter, WorkerStatusFollower

NOW = 1_800_000_000.0


def follower_with(*reports: dict) -> WorkerStatusFollower:
    follower = WorkerStatusFollower("127.0.0.1:1", "workers", lagging_events=1000)
    for report in reports:
        follower._take(orjson.dumps(report))
    return follower


def report(worker: str, state: str, *, remaining: int = 0, lag: int | None = 0, age: float = 1.0) -> dict:
    return {"worker": worker, "state": state, "recovery_remaining": remaining, "lag": lag, "at": NOW - age}


def test_each_worker_is_described_by_its_latest_report():
    follower = follower_with(
        report("0", "recovering", remaining=90_000, lag=None),
        report("1", "running", lag=5),
        report("2", "running", lag=50_000),
        report("3", "running", age=SILENT_AFTER_SECONDS + 1),
        report("4", "stopped", age=600),
        report("5", "recovering", remaining=10, lag=None),
        report("5", "running", lag=0),  # later: it recovered
    )
    states = {worker: d["state"] for worker, d in follower.describe(NOW).items()}
    assert states == {
        "0": "recovering",
        "1": "caught_up",
        "2": "lagging",
        "3": "silent",
        "4": "stopped",
        "5": "caught_up",
    }
    assert follower.describe(NOW)["0"]["recovery_remaining"] == 90_000
    assert follower.describe(NOW)["2"]["lag"] == 50_000


def test_a_worker_that_stopped_reporting_while_recovering_is_silent():
    follower = follower_with(report("0", "recovering", remaining=5, lag=None, age=SILENT_AFTER_SECONDS + 5))
    assert follower.describe(NOW)["0"]["state"] == "silent"


def test_unreadable_reports_are_ignored(caplog):
    follower = follower_with(report("0", "running"))
    with caplog.at_level(logging.WARNING):
        follower._take(b"not json")
        follower._take(orjson.dumps({"state": "running"}))
    assert list(follower.describe(NOW)) == ["0"]
    assert "unreadable worker status" in caplog.text


def test_a_recovering_worker_sets_the_gauge_and_logs_its_progress(caplog):
    reporter = StatusReporter("0", "workers", lambda: Progress(True, 0, None))
    with caplog.at_level(logging.WARNING, logger="engine.worker_status"):
        reporter._observe(Progress(True, 0, None))  # not assigned yet: nothing known to read
        reporter._last_log = 0.0
        reporter._observe(Progress(True, 12_345, None))
        assert metrics.TABLE_RECOVERY_REMAINING._value.get() == 12_345
        reporter._observe(Progress(True, 12_000, None))  # within PROGRESS_LOG_SECONDS: no second line
        reporter._observe(Progress(False, 0, 3))
    assert metrics.TABLE_RECOVERY_REMAINING._value.get() == 0
    lines = [r.getMessage() for r in caplog.records]
    assert len(lines) == 3
    assert lines[0].startswith("starting: waiting for partitions")
    assert "12345 records to read" in lines[1]
    assert lines[2].startswith("tables recovered in")
