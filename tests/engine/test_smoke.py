from tests.helpers import req


def test_creator_lv1_end_to_end(world):
    world.member("c1", "creator")
    for m in ("profile_complete", "task_hall_visited", "tasks_enabled"):
        world.add("c1", m, "2026-10-01", 1)
    world.add("c1", "courses_completed", "2026-10-01", 3)
    world.rows("c1", "video", ["2026-10-20", "2026-10-21", "2026-10-22", "2026-10-23", "2026-10-24"], 100)
    summary = world.evaluate("creator", "2026-10-31")
    assert summary.upgraded == 1
    st = world.standing("c1", "creator")
    assert st["level"] == "LV1"
    assert req(st, "LV2", "posts_30d") == {
        "level": "LV2", "key": "posts_30d", "metric": "video+live", "actual": 5, "op": ">=",
        "required": 8, "met": False, "window": "30d",
    }
