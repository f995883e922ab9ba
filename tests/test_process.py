"""What every engine process sets up: its collections timed in Prometheus."""

from __future__ import annotations

import gc

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
    time_collections("test-process")
    try:
        gc.collect(2)
        gc.collect(0)
        count, total = pauses("test-process", 2)
        assert count == 1
        assert total > 0
        assert pauses("test-process", 0)[0] == 1
        assert pauses("test-process", 1)[0] == 0
    finally:
        gc.callbacks[:] = callbacks
        gc.enable()
        del held
