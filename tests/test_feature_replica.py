import gc
from typing import NamedTuple

import orjson

from streams.feature_replica import FeatureReplica


class ChangelogRecord(NamedTuple):
    key: bytes
    value: bytes | None
    partition: int = 0
    offset: int = 0


def row(version: int) -> dict:
    return {"version": version, "updated_at": 1.5, "values": {"n": float(version)}, "recent_ids": ["a", "b"]}


def test_rows_read_back_as_the_changelog_wrote_them_and_a_tombstone_removes_one():
    replica = FeatureReplica("127.0.0.1:9092", "changelog")
    replica._apply([ChangelogRecord(orjson.dumps("u1"), orjson.dumps(row(1))), ChangelogRecord(b'"u2"', b"{}")])
    replica._apply([ChangelogRecord(b'"u1"', orjson.dumps(row(2))), ChangelogRecord(b'"u2"', None)])
    assert replica.get("u1") == row(2)
    assert replica.get("u2") is None
    assert replica.get("nobody") is None


def test_an_unreadable_record_leaves_the_row_as_it_was():
    replica = FeatureReplica("127.0.0.1:9092", "changelog")
    replica._apply([ChangelogRecord(b'"u1"', orjson.dumps(row(1)))])
    replica._apply([ChangelogRecord(b'"u1"', b"{not json"), ChangelogRecord(b"not a key", b"{}")])
    assert replica.get("u1") == row(1)


def test_a_large_table_gives_the_collector_nothing_to_walk():
    # A full collection walks every tracked object: a million decoded rows paused each
    # request in the serving process for over a second.
    replica = FeatureReplica("127.0.0.1:9092", "changelog")
    replica._apply([ChangelogRecord(orjson.dumps(f"u{i}"), orjson.dumps(row(i))) for i in range(100)])
    assert not any(gc.is_tracked(value) for value in replica.rows.values())
    assert replica.get("u42") == row(42)
