"""Snapshot size and write time for every model of the factory.

    .venv/bin/python -m benchmarks.snapshots

Each model learns 1,000 rows of its task's bundled dataset (Phishing, ImageSegments,
TrumpApproval), then is snapshotted 5 times; the median write time (pickle, fsync,
rename) and the file size are reported. Results: benchmarks/results/snapshots.json.
"""

from __future__ import annotations

import json
import statistics
import tempfile
from pathlib import Path

from river import datasets

from models.factory import MODELS
from models.online import OnlineModel
from models.snapshots import SnapshotStore

RESULTS = Path(__file__).parent / "results"
DATASET_FOR = {"binary": datasets.Phishing, "multiclass": datasets.ImageSegments, "regression": datasets.TrumpApproval}


def main() -> None:
    results = {}
    with tempfile.TemporaryDirectory() as directory:
        store = SnapshotStore(directory, retention=1)
        for name, spec in MODELS.items():
            model = OnlineModel(name)
            for x, y in list(DATASET_FOR[spec.task.value]())[:1000]:
                model.learn(x, y, model.predict(x))
            writes = [store.write({"model_name": name}, {"model": model}) for _ in range(5)]
            results[name] = {
                "bytes": writes[-1][1],
                "write_ms": round(statistics.median(seconds for _, _, seconds in writes) * 1000, 2),
            }
            print(f"{name:<22} {results[name]['bytes']:>10,} bytes  {results[name]['write_ms']:>7.2f} ms")
    (RESULTS / "snapshots.json").write_text(json.dumps(results, indent=2) + "\n")


if __name__ == "__main__":
    main()
