"""A mapping that coalesces writes to a changelogged table within one batch of events.

A hot entity updated 50 times in a batch costs one changelog record instead of 50.
Reads see the pending writes; `flush()` applies them to the table before the batch's
offsets are acknowledged.
"""

from __future__ import annotations

from typing import Any, Iterator, MutableMapping

_DELETED = object()


class WriteBehind(MutableMapping[str, Any]):
    def __init__(self, table: MutableMapping[str, Any]) -> None:
        self.table = table
        self._dirty: dict[str, Any] = {}

    def __getitem__(self, key: str) -> Any:
        value = self._dirty.get(key, None)
        if value is _DELETED:
            raise KeyError(key)
        if value is not None or key in self._dirty:
            return value
        value = self.table.get(key)
        if value is None:  # Faust tables made with default=None answer None for missing keys
            raise KeyError(key)
        return value

    def get(self, key: str, default: Any = None) -> Any:
        try:
            return self[key]
        except KeyError:
            return default

    def __contains__(self, key: object) -> bool:
        return self.get(key) is not None  # type: ignore[arg-type]

    def __setitem__(self, key: str, value: Any) -> None:
        self._dirty[key] = value

    def __delitem__(self, key: str) -> None:
        if key not in self:
            raise KeyError(key)
        self._dirty[key] = _DELETED

    def __iter__(self) -> Iterator[str]:
        self.flush()
        return iter(list(self.table.keys()))

    def __len__(self) -> int:
        self.flush()
        return len(self.table)

    def flush(self) -> None:
        dirty, self._dirty = self._dirty, {}
        for key, value in dirty.items():
            if value is _DELETED:
                if key in self.table:
                    del self.table[key]
            else:
                self.table[key] = value
