from models.recent_ids import RecentIds


def test_the_window_forgets_the_oldest_ids_first():
    recent = RecentIds(3, ["a", "b"])
    for event_id in ["c", "d", "e"]:
        recent.add(event_id)
    assert list(recent) == ["c", "d", "e"]
    assert "b" not in recent and "c" in recent and len(recent) == 3


def test_an_id_remembered_again_keeps_its_place():
    recent = RecentIds(3, ["a", "b", "c"])
    recent.add("a")
    recent.add("d")
    assert list(recent) == ["b", "c", "d"]
    assert "a" not in recent
