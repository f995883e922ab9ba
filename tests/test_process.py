"""What every engine process sets up: its collections timed in Prometheus."""

from __future__ import annotations

import gc
import threading

from prometheus_client import REGISTRY

from engine.process import time_collections


def pauses(process: str, generation: int) -> tuple[float, float]:
    labels = {"process": process, "generation": str(generation)}
    count = REGISTRY.get_sample_value("rtml_gc_pause_seconds_count", labels) or 0.0
    total = REGISTRY.get_sample_value("rtml_gc_pause_seconds_sum", labels) or 0.0
    return count, total


def test_each_collection_is_observed_with_its_generation_and_length():
    callbacks = list(gc.callbacks)
    held = [[{} for _ in range(100)] for _ in range(1000)]  # something to walk
    gc.disable()  # only the collections this test asks for
    timer = time_collections("test-process")
    try:
        gc.collect(2)
        gc.collect(0)
        timer.flush()
        count, total = pauses("test-process", 2)
        assert count == 1
        assert total > 0
        assert pauses("test-process", 0)[0] == 1
        assert pauses("test-process", 1)[0] == 0
    finally:
        gc.callbacks[:] = callbacks
        gc.enable()
        del held


def test_a_collection_inside_the_metrics_lock_is_noted_not_recorded(monkeypatch):
    """Recording takes prometheus_client's lock; a collection can start while this thread
    holds it, and recording from the collector's callback would then wait for ever."""
    callbacks = list(gc.callbacks)
    timer = time_collections("test-locked")
    held = threading.Lock()
    series = timer._series[2]
    original = series.observe
    recorded_while_held = []

    def observe_taking_the_lock(amount: float) -> None:
        if held.locked() and threading.current_thread() is threading.main_thread():
            recorded_while_held.append(amount)  # the deadlock, had the lock been taken
            return
        with held:
            original(amount)

    monkeypatch.setattr(series, "observe", observe_taking_the_lock)
    try:
        with held:  # as if a collection started inside the lock
            gc.collect(2)
        timer.flush()
        assert recorded_while_held == []
        assert pauses("test-locked", 2)[0] >= 1
    finally:
        gc.callbacks[:] = callbacks
