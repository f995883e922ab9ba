from streams.write_behind import WriteBehind


class RecordingTable(dict):
    """Stands in for a Faust table: counts the writes that would become changelog records."""

    def __init__(self):
        super().__init__()
        self.writes = 0

    def __setitem__(self, key, value):
        self.writes += 1
        super().__setitem__(key, value)

    def __delitem__(self, key):
        self.writes += 1
        super().__delitem__(key)


def test_reads_see_pending_writes_and_flush_coalesces_them():
    table = RecordingTable()
    store = WriteBehind(table)
    for version in range(50):
        store["hot"] = {"version": version}
    assert store["hot"] == {"version": 49} and "hot" in store and table.writes == 0
    store.flush()
    assert table == {"hot": {"version": 49}} and table.writes == 1


def test_delete_of_pending_and_flushed_keys():
    table = RecordingTable()
    table["old"] = 1
    table.writes = 0
    store = WriteBehind(table)
    store["new"] = 2
    del store["new"]
    del store["old"]
    assert "old" not in store and store.get("new") is None
    store.flush()
    assert table == {} and table.writes == 1  # "new" never reached the table


def test_len_and_iteration_include_pending_writes():
    store = WriteBehind(RecordingTable())
    store["a"] = 1
    store["b"] = 2
    assert len(store) == 2 and sorted(store) == ["a", "b"]
