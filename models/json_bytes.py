"""JSON that is kept long after it is written: copied down to its own size.

orjson (3.12 on; 3.13 here) hands back its whole write buffer, 4 KiB for any small document.
What is sent and dropped within a batch may keep it (alternated live, `benchmarks.throughput
--model logreg`: 20,219 / 19,125 events/s as it is, 18,571 / 19,124 copied), but what stays
in memory should not:
- the L1 cache counts an answer's length against CACHE_L1_BYTES: 500 answers counted 200 KB
  and held 2.2 MB, so a full default cache would have held some 400 MiB where it counted 50;
- the training log keeps up to 50,000 encoded examples until it flushes: the worker's peak
  RSS over a 100,000-event backlog was 408-413 MB with orjson's buffers, 363-365 copied
  (examples are now encoded by msgspec, whose bytes are the document's own size:
  models/examples.py).
Copied down to size (0.15 µs), a document holds what it counts.
"""

from __future__ import annotations

from typing import Any

import orjson


def kept_json(value: Any, option: int = 0) -> bytes:
    return bytes(memoryview(orjson.dumps(value, option=option)))
