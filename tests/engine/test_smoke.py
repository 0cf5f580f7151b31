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


def test_nested_group_rows_carry_their_own_mode(world):
    world.member("m", "member")
    world.add("m", "verified", "2026-01-01", 1)
    world.add("m", "purchase", "2026-10-01", 100)
    world.evaluate("member", "2026-10-31")
    st = world.standing("m", "member")  # regular: the next level is silver (an any-group)
    assert {r["group_mode"] for r in st["requirements"] if r.get("group") == "silver_condition"} == {"any"}
    from portal.engine.rules import rows
    from portal.services.programs import definition

    program, _ = definition(world.s, "member")
    diamond = rows(program, "diamond", program.level("diamond").requires, {k: 0.0 for k in program.values})
    assert {(r["group"], r["group_mode"]) for r in diamond} == {
        ("diamond_condition/diamond_by_spend", "all"), ("diamond_condition/diamond_by_enterprise", "all")}
