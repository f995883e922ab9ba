"""Pickling a large model without holding the process up: in a forked child.

A forest pickles for tens of milliseconds (2.9 MB, 74 ms for `arf`). A child forked at the
moment of the snapshot holds a copy-on-write image of the model as it is then, a
consistent cut, and does the pickling (and the writing, for a snapshot) while the parent
goes on learning. The child does nothing but that and exits: no locks, no logging, no
event loop. Small models pickle faster than a fork, so they stay in the process.
"""

from __future__ import annotations

import asyncio
import os
from collections.abc import Callable

# Below this, pickling in the process is cheaper than forking a child for it.
OFFLOAD_ABOVE_SECONDS = 0.01


class Child:
    """A forked child doing `work` on the memory of the moment it was forked."""

    def __init__(self, work: Callable[[], bytes | None]) -> None:
        read_end, write_end = os.pipe()
        pid = os.fork()
        if pid == 0:  # the child: work, write the result, exit without running any cleanup
            status = 1
            try:
                os.close(read_end)
                data = memoryview(work() or b"")
                while data:
                    data = data[os.write(write_end, data) :]
                status = 0
            finally:
                os._exit(status)
        os.close(write_end)
        self.pid, self._read_end = pid, read_end

    async def result(self) -> bytes:
        """What `work` returned (b"" for None); RuntimeError when the child failed."""
        loop = asyncio.get_running_loop()
        data = await loop.run_in_executor(None, _read_all, self._read_end)
        _, status = await loop.run_in_executor(None, os.waitpid, self.pid, 0)
        if status != 0:
            raise RuntimeError(f"the child process failed (wait status {status})")
        return data


def _read_all(fd: int) -> bytes:
    chunks = []
    try:
        while chunk := os.read(fd, 1 << 20):
            chunks.append(chunk)
    finally:
        os.close(fd)
    return b"".join(chunks)
