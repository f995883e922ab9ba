"""As-of queries over the offline feature log: 1 million logged updates, 100 entities at a
random time.

    .venv/bin/python -m benchmarks.offline_query [--updates 1000000] [--duckdb]

Logs `--updates` feature updates over `--entities` entities through `OfflineFeatureLog`,
the way the stream worker does (append per update, a write of every `--flush-rows` taken
updates, merges included), then times `get_offline_features` for `--ids` random entities
at a random event time:

- cold: each query on a new reader (no file metadata cached; the OS page cache is warm,
  as on a serving host that has read the log before);
- warm: the same reader for every query, after it has answered a few;
- unknown id: one never-logged id with the 100, the worst case (every row group before t
  is read, since nothing can rule the id out);
- full scan: the query as it was before (filter every file, then the latest row per entity
  in Python), over the same files; its answers are checked against the new query's.

With `--duckdb` (and duckdb importable; it is not a dependency) the same as-of query in
DuckDB over the same files is timed too. Medians of `--queries` queries.
Results: benchmarks/results/offline_query.json.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import random
import statistics
import tempfile
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import orjson
import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.dataset as ds
import pyarrow.parquet as pq

from streams.offline_store import SCHEMA, OfflineFeatureLog

RESULTS = Path(__file__).parent / "results"


def log_updates(directory: Path, updates: int, entities: int, flush_rows: int, rate: float, seed: int) -> dict:
    """Appends updates as the stream does; returns their time range and the write timings."""
    rng = random.Random(seed)
    log = OfflineFeatureLog(directory, flush_rows=flush_rows)
    versions = [0] * entities
    ts = first = 1_700_000_000.0
    writes: list[float] = []
    merges: list[float] = []
    started = time.perf_counter()
    for n in range(updates):
        ts += rng.expovariate(rate)
        e = rng.randrange(entities)
        versions[e] += 1
        amount = rng.uniform(0, 500)
        log.append(
            f"entity-{e}",
            {
                "updated_at": ts,
                "version": versions[e],
                "values": {
                    "amount": amount,
                    "amount_sum_1h": amount * rng.uniform(1, 40),
                    "amount_max": amount * rng.uniform(1, 3),
                    "events_10m": rng.randrange(1, 30),
                    "gap": rng.expovariate(1 / 60),
                },
            },
        )
        if (n + 1) % flush_rows == 0 or n + 1 == updates:
            write_started = time.perf_counter()
            outcomes = log.write(log.take())
            writes.append(time.perf_counter() - write_started)
            merges.extend(o.merge_seconds for o in outcomes if o.merged_files)
    elapsed = time.perf_counter() - started
    files = log.files()
    return {
        "first_ts": first,
        "last_ts": ts,
        "files": len(files),
        "file_rows": [pq.read_metadata(p).num_rows for p in files],
        "bytes": sum(p.stat().st_size for p in files),  # the live files (merged inputs wait out a grace period)
        "logging_seconds": round(elapsed, 2),
        "write_ms_median": round(statistics.median(writes) * 1000, 1),
        "write_ms_max": round(max(writes) * 1000, 1),
        "merges": len(merges),
        "merge_ms_max": round(max(merges, default=0.0) * 1000, 1),
    }


def full_scan(directory: Path, ids: list[str], t: float) -> dict[str, tuple[float, int, str]]:
    """The query as it was before: filter every file, then the latest row per entity in Python."""
    files = [str(p) for p in OfflineFeatureLog(directory, read_only=True).files()]
    table = ds.dataset(files, schema=SCHEMA, format="parquet").to_table(
        filter=pc.field("entity_id").isin(ids) & (pc.field("updated_at") <= t)
    )
    latest: dict[str, tuple[float, int, str]] = {}
    for entity_id, updated_at, version, values in zip(*(table.column(n).to_pylist() for n in SCHEMA.names)):
        best = latest.get(entity_id)
        if best is None or (updated_at, version) > best[:2]:
            latest[entity_id] = (updated_at, version, values)
    return latest


def duckdb_query(directory: Path) -> Callable[[list[str], float], Any] | None:
    try:
        import duckdb
    except ImportError:
        return None
    connection = duckdb.connect()
    files = [str(p) for p in OfflineFeatureLog(directory, read_only=True).files()]
    sql = """
        SELECT entity_id, arg_max(updated_at, (updated_at, version)), arg_max(version, (updated_at, version)),
               arg_max("values", (updated_at, version))
        FROM read_parquet($files) WHERE entity_id IN (SELECT unnest($ids)) AND updated_at <= $t GROUP BY entity_id
    """
    return lambda ids, t: connection.sql(sql, params={"files": files, "ids": ids, "t": t}).fetchall()


def timed(queries: list[tuple[list[str], float]], run: Callable[[list[str], float], Any]) -> dict[str, float]:
    seconds = []
    for ids, t in queries:
        started = time.perf_counter()
        run(ids, t)
        seconds.append(time.perf_counter() - started)
    return {
        "median_ms": round(statistics.median(seconds) * 1000, 2),
        "p90_ms": round(sorted(seconds)[int(0.9 * (len(seconds) - 1))] * 1000, 2),
        "max_ms": round(max(seconds) * 1000, 2),
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--updates", type=int, default=1_000_000)
    parser.add_argument("--entities", type=int, default=10_000)
    parser.add_argument("--flush-rows", type=int, default=50_000)
    parser.add_argument("--rate", type=float, default=5000.0, help="updates per second of event time")
    parser.add_argument("--ids", type=int, default=100, help="entities per query")
    parser.add_argument("--queries", type=int, default=20)
    parser.add_argument("--seed", type=int, default=7)
    parser.add_argument("--duckdb", action="store_true", help="also time DuckDB (if importable)")
    args = parser.parse_args()

    with tempfile.TemporaryDirectory() as tmp:
        directory = Path(tmp) / "offline-features"
        print(f"logging {args.updates:,} updates over {args.entities:,} entities, a write every {args.flush_rows:,}")
        logged = log_updates(directory, args.updates, args.entities, args.flush_rows, args.rate, args.seed)
        print(
            f"  {logged['logging_seconds']} s; {logged['merges']} merges; now {logged['files']} files "
            f"{logged['file_rows']}, {logged['bytes'] / 1e6:.1f} MB; "
            f"write median {logged['write_ms_median']} ms, max {logged['write_ms_max']} ms"
        )

        rng = random.Random(args.seed + 1)

        def queries() -> list[tuple[list[str], float]]:
            return [
                (
                    [f"entity-{i}" for i in rng.sample(range(args.entities), args.ids)],
                    rng.uniform(logged["first_ts"], logged["last_ts"]),
                )
                for _ in range(args.queries)
            ]

        results: dict[str, Any] = {}
        results["cold"] = timed(
            queries(), lambda ids, t: OfflineFeatureLog(directory, read_only=True).get_offline_features(ids, t)
        )
        reader = OfflineFeatureLog(directory, read_only=True)
        timed(queries()[:3], reader.get_offline_features)
        results["warm"] = timed(queries(), reader.get_offline_features)
        results["warm_with_an_unknown_id"] = timed(
            [([*ids, "never-logged"], t) for ids, t in queries()], reader.get_offline_features
        )
        checked = queries()
        results["full_scan_before"] = timed(checked, lambda ids, t: full_scan(directory, ids, t))
        for ids, t in checked:  # the same answers as the straightforward query
            expected = full_scan(directory, ids, t)
            got = {
                r["entity_id"]: (r["updated_at"], r["version"], r["values"])
                for r in reader.get_offline_features(ids, t)
                if r["known"]
            }
            assert got == {e: (u, v, orjson.loads(values)) for e, (u, v, values) in expected.items()}
        duck = duckdb_query(directory) if args.duckdb else None
        if duck is not None:
            timed(queries()[:3], duck)
            results["duckdb"] = timed(queries(), duck)
        for name, numbers in results.items():
            print(
                f"  {name:<26} median {numbers['median_ms']:>8.2f} ms   p90 {numbers['p90_ms']:>8.2f} ms"
                f"   max {numbers['max_ms']:>8.2f} ms"
            )

    report = {
        "what": f"get_offline_features for {args.ids} random entities at a random event time, "
        f"over {args.updates:,} logged updates of {args.entities:,} entities",
        "parameters": vars(args),
        "logging": logged,
        "queries": results,
        "machine": {
            "cpus": os.cpu_count(),
            "load_average_1m": round(os.getloadavg()[0], 2),  # other work on the machine skews the numbers
            "python": platform.python_version(),
            "pyarrow": pa.__version__,
        },
    }
    RESULTS.mkdir(exist_ok=True)
    (RESULTS / "offline_query.json").write_text(json.dumps(report, indent=2) + "\n")
    print(f"results: {RESULTS / 'offline_query.json'}")


if __name__ == "__main__":
    main()
