"""Two processes writing one registry at once (the engine and `engine retrain --every`)."""

import multiprocessing

from models.online import OnlineModel
from models.registry import ModelRegistry

WRITES_PER_PROCESS = 50


def register_many(directory, writer, start):
    registry = ModelRegistry(directory)
    start.wait()  # both processes begin together (after their imports), so their writes interleave
    for n in range(WRITES_PER_PROCESS):
        registry.register(OnlineModel("logreg"), "candidate", parent=1, writer=writer, n=n)
        registry.annotate(1, **{f"seen_{writer}_{n}": True})  # a read-modify-write of one entry


def test_two_processes_registering_at_once_lose_nothing_and_never_share_a_version(tmp_path):
    registry = ModelRegistry(tmp_path)
    registry.ensure_serving(OnlineModel("logreg"))
    context = multiprocessing.get_context("spawn")  # a fresh interpreter: a real second writer
    start = context.Barrier(2)
    writers = [context.Process(target=register_many, args=(str(tmp_path), w, start)) for w in ("a", "b")]
    for process in writers:
        process.start()
    for process in writers:
        process.join(timeout=120)
        assert process.exitcode == 0

    entries = registry.versions()
    versions = [entry["version"] for entry in entries]
    assert versions == list(range(1, 2 * WRITES_PER_PROCESS + 2))  # version 1 + 100 distinct ones
    by_writer = {w: sorted(e["n"] for e in entries if e.get("writer") == w) for w in ("a", "b")}
    assert by_writer == {"a": list(range(WRITES_PER_PROCESS)), "b": list(range(WRITES_PER_PROCESS))}
    first = entries[0]
    assert all(first[f"seen_{w}_{n}"] for w in ("a", "b") for n in range(WRITES_PER_PROCESS))
    for version in versions:
        assert registry.load(version).version == version  # each file whole, and the right one
    assert registry.serving == 1
