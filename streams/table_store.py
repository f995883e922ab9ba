"""The feature table on local disk: RocksDB (through rocksdict), so that a restarted worker
reads back only the changelog records written after its last write, not the whole table.

One RocksDB database per partition, as Faust's own RocksDB store keeps them (this store is
that one, with three additions):

- **What is on disk is always a prefix of the changelog.** The worker writes a batch's rows
  only after Kafka acknowledged their changelog records, in one atomic write batch together
  with the changelog offset of the last one (Faust's persisted offset). After a kill -9 at
  any point the database holds the rows up to some changelog offset and says which, and
  Faust's recovery reads the changelog from there: the same rows an in-memory store would
  have rebuilt from the whole changelog.
- **Rows are read from memory while they are hot.** Decoded rows are kept in memory as they
  are read and written, up to `cache_rows` of them: past that, the rows set longest ago
  leave memory once they are on disk, and are read from disk again when their entity comes
  back. A restarted worker starts at once and reads an entity's row from disk the first
  time it sees the entity. Bounded because a decoded row is a few nested containers: a
  million of them took 0.6 GB, and a full garbage collection walked them all (0.7 s here,
  a pause of the whole worker; benchmarks/many_entities.py). A revoked partition's rows
  leave memory (another worker may change them before the partition comes back, through
  the changelog, which recovery writes to disk).
- **A database that is not ours is not used.** Each database holds who wrote it: the app,
  the table and the declared features. One written by another app or for another feature
  set, or one RocksDB cannot open (corrupt), is logged, removed and rebuilt from the
  changelog.
"""

from __future__ import annotations

import logging
import shutil
from collections import OrderedDict
from collections.abc import Iterable
from pathlib import Path
from typing import Any

import orjson
import rocksdict
from faust.stores import rocksdb as faust_rocksdb
from faust.types import TP

log = logging.getLogger(__name__)

IDENTITY_KEY = b"__rtml\0identity__"
# Faust's key for the last changelog offset in the database; not a row.
OFFSET_KEY = faust_rocksdb.Store.offset_key
SPECIAL_KEYS = frozenset({IDENTITY_KEY, OFFSET_KEY})
IDENTITY_OPTION = "rtml_identity"
CACHE_ROWS_OPTION = "rtml_cache_rows"
DEFAULT_CACHE_ROWS = 100_000
URL_SCHEME = "rtmlrocksdb"


class ForeignStore(Exception):
    """The database on disk was written by another app, table or feature set."""


class RowStore(faust_rocksdb.Store):
    """Faust's RocksDB store with decoded rows kept in memory and a checked identity."""

    def __init__(self, url: Any, app: Any, table: Any, *, options: dict[str, Any] | None = None, **kwargs: Any) -> None:
        options = dict(options or {})
        self.identity: bytes = options.pop(IDENTITY_OPTION, b"")
        self.cache_rows: int = options.pop(CACHE_ROWS_OPTION, DEFAULT_CACHE_ROWS)
        options.setdefault("driver", "rocksdict")
        super().__init__(url, app, table, options=options, **kwargs)
        # Decoded rows of the active partitions, by key, the one set longest ago first (None:
        # deleted, not written yet).
        self.rows: OrderedDict[str, Any] = OrderedDict()
        self.row_partitions: dict[str, int] = {}
        self._unwritten: set[str] = set()  # kept since their batch was last written: memory is their only copy

    # -- opening -------------------------------------------------------------------------

    def _open_for_partition(self, partition: int) -> Any:
        path = self.partition_path(partition)
        try:
            db = super()._open_for_partition(partition)
        except Exception as exc:  # rocksdict raises plain exceptions
            if "lock" in repr(exc).lower():
                raise  # another process holds it: Faust retries
            reason = f"RocksDB cannot open it ({exc})"
        else:
            try:
                self._check_identity(db)
                return db
            except ForeignStore as exc:
                reason = str(exc)
                db.close()
        log.warning("table store %s: %s; removing it and rebuilding it from the changelog", path, reason)
        shutil.rmtree(path, ignore_errors=True)
        db = super()._open_for_partition(partition)
        self._check_identity(db)
        return db

    def _check_identity(self, db: Any) -> None:
        found = db.get(IDENTITY_KEY)
        if found is None:
            if db.get(OFFSET_KEY) is not None or _has_rows(db):
                raise ForeignStore("it has rows but does not say who wrote them")
            db.put(IDENTITY_KEY, self.identity)
            return
        if found != self.identity:
            raise ForeignStore(f"it was written by {found.decode(errors='replace')}, not {self.identity.decode()}")

    # -- rows ------------------------------------------------------------------------------

    def row(self, key: str, partition: int | None = None) -> Any:
        """The row of `key` (decoded), or None. `partition`: the one its events come from, where
        its row is written (a key's events all come from one partition when producers key
        them by entity): looked in first, then the others."""
        try:
            return self.rows[key]
        except KeyError:
            pass
        encoded = orjson.dumps(key)
        dbs = self._dbs
        order = sorted(dbs.items(), key=lambda item: item[0] != partition)  # stable: the rest as before
        for found_in, db in order:
            raw = db.get(encoded)
            if raw is not None:
                value = orjson.loads(raw)
                self.rows[key] = value
                self.row_partitions[key] = found_in
                return value
        return None

    def keep(self, partition: int, key: str, value: Any) -> None:
        """Holds a row (None: deleted) in memory until its batch is written (`write`)."""
        rows = self.rows
        try:
            rows.move_to_end(key)  # the one set last, the last to leave memory
        except KeyError:
            pass
        rows[key] = value
        self.row_partitions[key] = partition
        self._unwritten.add(key)

    def write(
        self,
        partition: int,
        records: Iterable[tuple[bytes, bytes | None]],
        changelog_offset: int,
        keys: Iterable[str] | None = None,
    ) -> None:
        """Writes a batch's rows, as their changelog records (acknowledged up to
        `changelog_offset`), and that offset, in one atomic write; `keys` are the records'
        keys as the table knows them (decoded from the records when not given). Then rows
        past `cache_rows` leave memory, the ones set longest ago first."""
        records = list(records)
        batch = rocksdict.WriteBatch(raw_mode=True)
        for encoded, value in records:
            if value is None:
                batch.delete(encoded)
            else:
                batch.put(encoded, value)
        batch.put(OFFSET_KEY, str(changelog_offset).encode())
        self._db_for_partition(partition).write(batch)
        written: list[str] = list(keys) if keys is not None else [orjson.loads(encoded) for encoded, _ in records]
        self._unwritten.difference_update(written)
        for key in written:
            if key in self.rows and self.rows[key] is None:
                del self.rows[key]  # deleted on disk now: a read finds nothing there either
                del self.row_partitions[key]
        self._evict()

    def _evict(self) -> None:
        rows = self.rows
        excess = len(rows) - self.cache_rows
        if excess <= 0:
            return
        leaving: list[str] = []
        for key in rows:  # the one set longest ago first
            if len(leaving) >= excess:
                break
            if key not in self._unwritten:
                leaving.append(key)
        for key in leaving:
            del rows[key]
            del self.row_partitions[key]

    def revoke_partitions(self, table: Any, tps: set[TP]) -> None:
        revoked = {tp.partition for tp in tps if tp.topic in table.changelog_topic.topics}
        if revoked:
            for key in [k for k, p in self.row_partitions.items() if p in revoked]:
                del self.rows[key]
                del self.row_partitions[key]
                self._unwritten.discard(key)
        super().revoke_partitions(table, tps)


def stores_ahead_of(tables: Path, table: str, changelog_ends: dict[int, int]) -> list[tuple[Path, int, int]]:
    """The partition databases under `tables` that name a changelog offset the changelog does
    not have (it was deleted and made again, or Kafka's data was wiped): their rows belong to
    another changelog. Returns (path, offset on disk, the changelog's end offset)."""
    ahead = []
    for path in sorted(tables.glob(f"{table}-*.db")):
        partition = path.name[len(table) + 1 : -len(".db")]
        if not partition.isdigit():
            continue
        try:
            db = rocksdict.Rdict(str(path), options=rocksdict.Options(raw_mode=True))
        except Exception:  # noqa: BLE001 - locked or corrupt: the store's own opening deals with it
            continue
        try:
            raw = db.get(OFFSET_KEY)
        finally:
            db.close()
        end = changelog_ends.get(int(partition), 0)
        if raw is not None and int(raw) >= end:
            ahead.append((path, int(raw), end))
    return ahead


def remove_stores_ahead_of(tables: Path, table: str, changelog_ends: dict[int, int]) -> list[str]:
    """Removes the databases `stores_ahead_of` finds; returns why, a line each, for the caller
    to log (this module's logger has a NullHandler from mode's Service until Faust sets up
    logging, and this runs before)."""
    removed = []
    for path, offset, end in stores_ahead_of(tables, table, changelog_ends):
        removed.append(
            f"table store {path}: its rows reach changelog offset {offset} but the changelog ends at {end}"
            " (made again, or emptied); removing it and rebuilding it from the changelog"
        )
        shutil.rmtree(path, ignore_errors=True)
    return removed


def _has_rows(db: Any) -> bool:
    return any(key not in SPECIAL_KEYS for key in db.keys())  # noqa: SIM118 - an Rdict iterates its keys this way


def store_url(table_name: str) -> str:
    """The Faust store URL of a table kept in a RowStore (registered here as `rtmlrocksdb`).

    With its table name as the path: a URL with nothing after the scheme is falsy to yarl,
    and Faust would take the app's default store instead."""
    from faust import stores

    stores.STORES.aliases[URL_SCHEME] = f"{__name__}:RowStore"
    return f"{URL_SCHEME}:{table_name}"
