"""The last N ids seen, oldest first: the window duplicate filters look ids up in.

A set for the lookups and a deque for the order. An OrderedDict does both in one object,
at about twice the cost a remembered id (0.30 against 0.15 µs measured): the stream
worker and the learner each remember every event they take.
"""

from __future__ import annotations

from collections import deque
from collections.abc import Iterable, Iterator


class RecentIds:
    __slots__ = ("_ids", "_order", "window")

    def __init__(self, window: int, ids: Iterable[str] = ()) -> None:
        self.window = window
        self._ids: set[str] = set()
        self._order: deque[str] = deque()
        for event_id in ids:
            self.add(event_id)

    def __contains__(self, event_id: object) -> bool:
        return event_id in self._ids

    def __len__(self) -> int:
        return len(self._order)

    def __iter__(self) -> Iterator[str]:
        """Oldest first."""
        return iter(self._order)

    def add(self, event_id: str) -> None:
        """Remembers an id (one already remembered keeps its place); past the window, the
        oldest is forgotten."""
        ids = self._ids
        if event_id in ids:
            return
        ids.add(event_id)
        order = self._order
        order.append(event_id)
        if len(order) > self.window:
            ids.discard(order.popleft())
