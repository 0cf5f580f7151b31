"""The `creator` program (PROGRAMS.md, "Conventions" and "`creator`"): a ladder LV1-LV4.

Every test builds creators with `creator()`, which meets exactly the basic tasks of one level
(with the numbers of PROFILES) and lets a test change one of them. Evaluations are as of
D = 2026-06-30, so "last 30 days" is 2026-06-01..06-30 and "last 90 days" 2026-04-02..06-30.
"""

from __future__ import annotations

import datetime as dt

import pytest

from tests.helpers import req

D = dt.date(2026, 6, 30)
BASIC_GAUGES = ("profile_complete", "task_hall_visited", "tasks_enabled")
QUOTE_TASKS = ("quote_set", "assistant_viewed")

# The basic tasks of each level, just met (plays per post: over the level's avg_plays_30d
# threshold, under its reward threshold, so reward tests control the reward data alone).
PROFILES = {
    "LV1": dict(courses=3, posts=5, plays=100, submissions=0, orders=0, followers=0, likes=0, credit=0),
    "LV2": dict(courses=5, posts=8, plays=15_000, submissions=1, orders=0, followers=0, likes=0, credit=0),
    "LV3": dict(courses=8, posts=20, plays=60_000, submissions=1, orders=1, followers=300_001, likes=10_001, credit=50),
    "LV4": dict(courses=10, posts=30, plays=120_000, submissions=1, orders=3, followers=500_001, likes=30_001, credit=75),
}


def day(offset: int) -> dt.date:
    """D + offset days."""
    return D + dt.timedelta(days=offset)


def creator(world, key: str, level: str = "LV1", *, missing: tuple[str, ...] = (), post_metric: str = "live",
            **overrides: float) -> None:
    """A creator meeting the basic tasks of LV1..`level` (rows dated D-5), with changes.

    `missing`: gauges (1 = done) left out. Quote tasks are done whenever followers >= 100,000.
    `overrides`: courses, posts, plays (per post), submissions, orders, followers, likes, credit.
    """
    p = {**PROFILES[level], **overrides}
    on = day(-5)
    world.member(key, "creator")
    done = BASIC_GAUGES + (QUOTE_TASKS if p["followers"] >= 100_000 else ())
    for gauge in done:
        if gauge not in missing:
            world.add(key, gauge, on, 1)
    world.add(key, "courses_completed", on, p["courses"])
    world.add(key, post_metric, on, p["plays"], times=int(p["posts"]))
    world.add(key, "submission_task", on, 1, times=int(p["submissions"]))
    world.add(key, "order", on, 1, times=int(p["orders"]))
    for metric, value in (("followers", p["followers"]), ("likes", p["likes"]), ("credit_score", p["credit"])):
        if value:
            world.add(key, metric, on, value)


def level_on(world, key: str, as_of: dt.date = D) -> str | None:
    world.evaluate("creator", as_of)
    return world.level(key, "creator")


def brief(reasons: list[dict]) -> list[tuple]:
    return [(r["level"], r["key"], r["actual"], r["op"], r["required"]) for r in reasons]


@pytest.mark.parametrize("level", ["LV1", "LV2", "LV3", "LV4"])
def test_profile_reaches_its_level(world, level):
    creator(world, "c", level)
    assert level_on(world, "c") == level


# -- thresholds: every basic-task row of the table, just short and just met ----------------

THRESHOLDS = [
    # level profile, change, expected level
    ("LV1", {"courses": 2}, None),
    ("LV1", {"courses": 3}, "LV1"),
    ("LV1", {"posts": 4}, None),
    ("LV1", {"posts": 5}, "LV1"),
    ("LV2", {"courses": 4}, "LV1"),
    ("LV2", {"courses": 5}, "LV2"),
    ("LV2", {"posts": 7}, "LV1"),
    ("LV2", {"posts": 8}, "LV2"),
    ("LV2", {"plays": 10_000}, "LV1"),
    ("LV2", {"plays": 10_001}, "LV2"),
    ("LV2", {"submissions": 0}, "LV1"),
    ("LV2", {"submissions": 1}, "LV2"),
    ("LV3", {"courses": 7}, "LV2"),
    ("LV3", {"courses": 8}, "LV3"),
    ("LV3", {"posts": 19}, "LV2"),
    ("LV3", {"posts": 20}, "LV3"),
    ("LV3", {"plays": 50_000}, "LV2"),
    ("LV3", {"plays": 50_001}, "LV3"),
    ("LV3", {"orders": 0}, "LV2"),
    ("LV3", {"orders": 1}, "LV3"),
    ("LV3", {"followers": 300_000}, "LV2"),
    ("LV3", {"followers": 300_001}, "LV3"),
    ("LV3", {"likes": 10_000}, "LV2"),
    ("LV3", {"likes": 10_001}, "LV3"),
    ("LV3", {"credit": 49}, "LV2"),
    ("LV3", {"credit": 50}, "LV3"),
    ("LV4", {"courses": 9}, "LV3"),
    ("LV4", {"courses": 10}, "LV4"),
    ("LV4", {"posts": 29}, "LV3"),
    ("LV4", {"posts": 30}, "LV4"),
    ("LV4", {"plays": 100_000}, "LV3"),
    ("LV4", {"plays": 100_001}, "LV4"),
    ("LV4", {"orders": 2}, "LV3"),
    ("LV4", {"orders": 3}, "LV4"),
    ("LV4", {"followers": 500_000}, "LV3"),
    ("LV4", {"followers": 500_001}, "LV4"),
    ("LV4", {"likes": 30_000}, "LV3"),
    ("LV4", {"likes": 30_001}, "LV4"),
    ("LV4", {"credit": 74}, "LV3"),
    ("LV4", {"credit": 75}, "LV4"),
]


@pytest.mark.parametrize(
    ("level", "change", "expected"),
    THRESHOLDS,
    ids=[f"{lv}-{k}={v}" for lv, ch, _ in THRESHOLDS for k, v in ch.items()],
)
def test_basic_task_threshold(world, level, change, expected):
    creator(world, "c", level, **change)
    assert level_on(world, "c") == expected


@pytest.mark.parametrize("gauge", BASIC_GAUGES)
def test_lv1_gauge_not_done_means_no_level(world, gauge):
    creator(world, "c", "LV1", missing=(gauge,))
    assert level_on(world, "c") is None


@pytest.mark.parametrize(("first", "then", "expected"), [(1, 0, None), (0, 1, "LV1")])
def test_lv1_gauge_uses_latest_reading(world, first, then, expected):
    creator(world, "c", "LV1", missing=("tasks_enabled",))
    world.add("c", "tasks_enabled", day(-10), first)
    world.add("c", "tasks_enabled", day(-1), then)
    assert level_on(world, "c") == expected


@pytest.mark.parametrize(("readings", "expected"), [
    ([(-3, 1), (-3, 0)], None),  # two readings on one date: the one stored last counts
    ([(-3, 0), (-3, 1)], "LV1"),
    ([(-2, 1), (-5, 0)], "LV1"),  # stored last but dated earlier: the later date counts
    ([(-2, 1), (+1, 0)], "LV1"),  # a reading after the as-of date is not known yet
])
def test_latest_reading_is_the_newest_date_then_the_row_stored_last(world, readings, expected):
    creator(world, "c", "LV1", missing=("tasks_enabled",))
    for offset, value in readings:
        world.add("c", "tasks_enabled", day(offset), value)
    assert level_on(world, "c") == expected


def test_courses_completed_is_the_latest_reading_not_the_highest(world):
    creator(world, "c", "LV2")
    world.add("c", "courses_completed", day(-1), 4)
    assert level_on(world, "c") == "LV1"


# -- quote_set / assistant_viewed: required only while latest followers >= 100,000 ---------


def test_quote_tasks_not_required_below_100k_followers(world):
    creator(world, "c", "LV1", followers=99_999, missing=QUOTE_TASKS)
    assert level_on(world, "c") == "LV1"


@pytest.mark.parametrize("task", QUOTE_TASKS)
def test_quote_task_required_at_exactly_100k_followers(world, task):
    creator(world, "c", "LV1", followers=100_000, missing=(task,))
    assert level_on(world, "c") is None


def test_quote_tasks_done_at_100k_followers_gives_lv1(world):
    creator(world, "c", "LV1", followers=100_000)
    assert level_on(world, "c") == "LV1"


@pytest.mark.parametrize(
    ("readings", "expected"),
    [
        ([(-10, 150_000), (-1, 50_000)], "LV1"),  # newest reading is under 100,000
        ([(-10, 50_000), (-1, 150_000)], None),  # newest reading is 100,000 or more
        ([(-3, 50_000), (1, 200_000)], "LV1"),  # a reading after D does not exist yet
        ([(-400, 150_000)], None),  # latest = newest reading of any age
    ],
    ids=["newest-low", "newest-high", "after-D-ignored", "any-age"],
)
def test_quote_tasks_follow_latest_followers(world, readings, expected):
    creator(world, "c", "LV1")  # no quote tasks done
    for offset, value in readings:
        world.add("c", "followers", day(offset), value)
    assert level_on(world, "c") == expected


def test_lv3_followers_is_the_latest_reading(world):
    creator(world, "c", "LV3", followers=400_000)
    world.add("c", "followers", day(-1), 250_000)
    assert level_on(world, "c") == "LV2"


# -- windows and aggregates ----------------------------------------------------------------


@pytest.mark.parametrize(("offset", "expected"), [(-29, "LV1"), (-30, None), (1, None)])
def test_posts_window_is_last_30_days_inclusive(world, offset, expected):
    creator(world, "c", "LV1", posts=4)
    world.add("c", "live", day(offset), 100)
    assert level_on(world, "c") == expected


@pytest.mark.parametrize(("offset", "expected"), [(-29, "LV1"), (-30, "LV2")])
def test_avg_plays_only_over_rows_in_the_30_day_window(world, offset, expected):
    # 8 posts of 11,000; a post of 0 plays inside the window pulls the mean to 9,777.
    creator(world, "c", "LV2", plays=11_000)
    world.add("c", "video", day(offset), 0)
    assert level_on(world, "c") == expected


@pytest.mark.parametrize(("live_plays", "expected"), [(25_000, "LV1"), (25_004, "LV2")])
def test_avg_plays_is_mean_of_video_and_live_rows_together(world, live_plays, expected):
    # 6 videos of 5,000 and 2 live sessions: row mean 10,000 / 10,001 (a mean of the two
    # metrics' means would be 15,000).
    creator(world, "c", "LV2", posts=0)
    world.add("c", "video", day(-5), 5_000, times=6)
    world.add("c", "live", day(-5), live_plays, times=2)
    assert level_on(world, "c") == expected


def test_posts_count_video_and_live_rows(world):
    creator(world, "c", "LV1", posts=0)
    world.add("c", "video", day(-5), 100, times=3)
    world.add("c", "live", day(-5), 100, times=2)
    assert level_on(world, "c") == "LV1"


@pytest.mark.parametrize(("on", "expected"), [(dt.date(2020, 1, 1), "LV2"), (day(-89), "LV2"), (day(1), "LV1")])
def test_submission_tasks_count_all_time_up_to_d(world, on, expected):
    creator(world, "c", "LV2", submissions=0)
    world.add("c", "submission_task", on, 1)
    assert level_on(world, "c") == expected


@pytest.mark.parametrize(("offset", "expected"), [(-89, "LV3"), (-90, "LV2"), (1, "LV2")])
def test_orders_window_is_last_90_days_inclusive(world, offset, expected):
    creator(world, "c", "LV3", orders=0)
    world.add("c", "order", day(offset), 1)
    assert level_on(world, "c") == expected


@pytest.mark.parametrize(
    ("kind", "expected"),
    [(None, "LV3"), ("standard", "LV3"), ("brand", "LV3"), ("universal", "LV2"), ("mini_game", "LV2")],
)
def test_orders_exclude_universal_and_mini_game_kinds(world, kind, expected):
    creator(world, "c", "LV3", orders=0)
    world.add("c", "order", day(-1), 1, kind=kind)
    assert level_on(world, "c") == expected


def test_excluded_order_kinds_do_not_hide_counted_ones(world):
    creator(world, "c", "LV4", orders=2)
    world.add("c", "order", day(-1), 1, kind="universal", times=5)
    world.add("c", "order", day(-1), 1, kind="mini_game", times=5)
    assert level_on(world, "c") == "LV3"


@pytest.mark.parametrize(("offset", "expected"), [(-29, "LV3"), (-30, "LV2")])
def test_likes_summed_over_last_30_days(world, offset, expected):
    creator(world, "c", "LV3", likes=0)
    world.add("c", "likes", D, 5_000)
    world.add("c", "likes", day(offset), 5_001)
    assert level_on(world, "c") == expected


# -- ladder --------------------------------------------------------------------------------


def test_ladder_missing_lv2_task_caps_at_lv1_even_if_lv3_lv4_met(world):
    creator(world, "c", "LV4", submissions=0)
    assert level_on(world, "c") == "LV1"


def test_ladder_missing_lv1_task_means_no_level_even_if_lv4_met(world):
    creator(world, "c", "LV4", missing=("profile_complete",))
    assert level_on(world, "c") is None


# -- transitions ---------------------------------------------------------------------------


def test_first_rating_is_an_upgrade(world):
    creator(world, "c", "LV2")
    summary = world.evaluate("creator", D)
    assert summary.upgraded == 1
    [change] = world.changes("c", "creator")
    assert (change.on, change.from_level, change.to_level, change.direction) == (D, None, "LV2", "up")


def test_upgrade_at_first_evaluation_where_met(world):
    creator(world, "c", "LV2", submissions=0)
    assert level_on(world, "c") == "LV1"
    world.add("c", "submission_task", day(1), 1)
    assert level_on(world, "c", day(1)) == "LV2"
    change = world.changes("c", "creator")[-1]
    assert (change.on, change.from_level, change.to_level, change.direction) == (day(1), "LV1", "LV2", "up")


def test_downgrade_at_once_to_highest_fully_met_level(world):
    creator(world, "c", "LV3")
    assert level_on(world, "c") == "LV3"
    world.add("c", "courses_completed", day(1), 4)
    assert level_on(world, "c", day(1)) == "LV1"
    change = world.changes("c", "creator")[-1]
    assert (change.on, change.from_level, change.to_level, change.direction) == (day(1), "LV3", "LV1", "down")
    assert brief(change.reasons) == [
        ("LV2", "courses_completed", 4, ">=", 5),
        ("LV3", "courses_completed", 4, ">=", 8),
    ]


def test_downgrade_reasons_list_every_failed_requirement_of_lost_levels(world):
    creator(world, "c", "LV4")
    assert level_on(world, "c") == "LV4"
    world.add("c", "followers", day(1), 200_000)
    world.add("c", "credit_score", day(1), 40)
    assert level_on(world, "c", day(1)) == "LV2"
    change = world.changes("c", "creator")[-1]
    assert brief(change.reasons) == [
        ("LV3", "followers", 200_000, ">", 300_000),
        ("LV3", "credit_score", 40, ">=", 50),
        ("LV4", "followers", 200_000, ">", 500_000),
        ("LV4", "credit_score", 40, ">=", 75),
    ]
    assert all(r["met"] is False for r in change.reasons)


def test_downgrade_to_unrated_with_reasons(world):
    creator(world, "c", "LV1")
    assert level_on(world, "c") == "LV1"
    world.add("c", "tasks_enabled", day(1), 0)
    assert level_on(world, "c", day(1)) is None
    change = world.changes("c", "creator")[-1]
    assert (change.from_level, change.to_level, change.direction) == ("LV1", None, "down")
    assert brief(change.reasons) == [("LV1", "tasks_enabled", 0, "=", 1)]


def test_reaching_100k_followers_makes_quote_tasks_due_and_downgrades(world):
    creator(world, "c", "LV1")
    assert level_on(world, "c") == "LV1"
    world.add("c", "followers", day(1), 100_000)
    assert level_on(world, "c", day(1)) is None
    assert brief(world.changes("c", "creator")[-1].reasons) == [
        ("LV1", "quote_set", 0, "=", 1),
        ("LV1", "assistant_viewed", 0, "=", 1),
    ]


def test_downgrade_when_posts_leave_the_window(world):
    creator(world, "c", "LV1")  # posts dated D-5
    assert level_on(world, "c", day(24)) == "LV1"  # D-5 is D+24's 30th day
    assert level_on(world, "c", day(25)) is None
    assert brief(world.changes("c", "creator")[-1].reasons) == [("LV1", "posts_30d", 0, ">=", 5)]


def test_recovery_is_automatic(world):
    creator(world, "c", "LV2")
    assert level_on(world, "c") == "LV2"
    world.add("c", "courses_completed", day(1), 3)
    assert level_on(world, "c", day(1)) == "LV1"
    world.add("c", "courses_completed", day(2), 5)
    assert level_on(world, "c", day(2)) == "LV2"
    assert [(c.on, c.from_level, c.to_level, c.direction) for c in world.changes("c", "creator")] == [
        (D, None, "LV2", "up"),
        (day(1), "LV2", "LV1", "down"),
        (day(2), "LV1", "LV2", "up"),
    ]


# -- reward tasks (3-month cycle = last 90 days) of the current level -----------------------

REWARDS = [("LV1", 3, 5_000), ("LV2", 3, 20_000), ("LV3", 6, 80_000), ("LV4", 6, 150_000)]


def reward_standing(world, level: str, orders: int, metric: str, plays: float, offset: int = -60) -> dict:
    """A creator of `level` with `orders` orders and one `metric` row of `plays` outside the
    30-day window (so basic tasks are untouched); posts are the other metric."""
    creator(world, "c", level, orders=orders, post_metric="live" if metric == "video" else "video")
    world.add("c", metric, day(offset), plays)
    world.evaluate("creator", D)
    st = world.standing("c", "creator")
    assert st["level"] == level
    return st


@pytest.mark.parametrize(("level", "orders", "plays"), REWARDS)
def test_reward_met_with_orders_and_video_average(world, level, orders, plays):
    assert reward_standing(world, level, orders, "video", plays + 1)["reward_tasks_met"] is True


@pytest.mark.parametrize(("level", "orders", "plays"), REWARDS)
def test_reward_met_with_orders_and_live_average(world, level, orders, plays):
    assert reward_standing(world, level, orders, "live", plays + 1)["reward_tasks_met"] is True


@pytest.mark.parametrize(("level", "orders", "plays"), REWARDS)
def test_reward_not_met_one_order_short(world, level, orders, plays):
    assert reward_standing(world, level, orders - 1, "video", plays + 1)["reward_tasks_met"] is False


@pytest.mark.parametrize(("level", "orders", "plays"), REWARDS)
@pytest.mark.parametrize("metric", ["video", "live"])
def test_reward_not_met_with_average_exactly_at_threshold(world, level, orders, plays, metric):
    assert reward_standing(world, level, orders, metric, plays)["reward_tasks_met"] is False


@pytest.mark.parametrize(("offset", "met"), [(-89, True), (-90, False)])
def test_reward_average_window_is_last_90_days(world, offset, met):
    assert reward_standing(world, "LV1", 3, "video", 5_001, offset)["reward_tasks_met"] is met


def test_reward_average_is_over_video_rows_of_90_days(world):
    # video rows of 4,000 and 6,002 average 5,001 (> 5,000); neither alone is the mean
    creator(world, "c", "LV1", orders=3)
    world.add("c", "video", day(-60), 4_000)
    world.add("c", "video", day(-70), 6_002)
    world.evaluate("creator", D)
    assert world.standing("c", "creator")["reward_tasks_met"] is True


def test_reward_orders_exclude_universal_and_mini_game(world):
    creator(world, "c", "LV1", orders=2)
    world.add("c", "order", day(-1), 1, kind="universal")
    world.add("c", "order", day(-1), 1, kind="mini_game")
    world.add("c", "video", day(-60), 5_001)
    world.evaluate("creator", D)
    assert world.standing("c", "creator")["reward_tasks_met"] is False


def test_reward_is_that_of_the_current_level(world):
    # LV1's reward tasks are met, LV2's (20,000 plays) are not
    assert reward_standing(world, "LV2", 3, "video", 5_001)["reward_tasks_met"] is False


def test_unrated_creator_has_no_reward_state(world):
    creator(world, "c", "LV1", courses=0, orders=6)
    world.add("c", "video", day(-60), 200_000)
    world.evaluate("creator", D)
    st = world.standing("c", "creator")
    assert (st["level"], st["reward_tasks_met"]) == (None, None)


# -- requirements shown: current level and next level --------------------------------------

LV1_KEYS = [("LV1", k) for k in (*BASIC_GAUGES, "courses_completed", "posts_30d")]
LV1_KEYS_QUOTE = [("LV1", k) for k in (*BASIC_GAUGES, *QUOTE_TASKS, "courses_completed", "posts_30d")]
LV2_KEYS = [("LV2", k) for k in ("courses_completed", "posts_30d", "avg_plays_30d", "submission_tasks")]
LV3_KEYS = [("LV3", k) for k in ("courses_completed", "posts_30d", "avg_plays_30d", "orders_90d", "followers",
                                 "likes_30d", "credit_score")]
LV4_KEYS = [("LV4", k) for k in ("courses_completed", "posts_30d", "avg_plays_30d", "orders_90d", "followers",
                                 "likes_30d", "credit_score")]


@pytest.mark.parametrize(
    ("level", "change", "keys", "next_level"),
    [
        ("LV1", {"courses": 0}, LV1_KEYS, "LV1"),
        ("LV1", {}, LV1_KEYS + LV2_KEYS, "LV2"),
        ("LV1", {"followers": 100_000}, LV1_KEYS_QUOTE + LV2_KEYS, "LV2"),
        ("LV2", {}, LV2_KEYS + LV3_KEYS, "LV3"),
        ("LV3", {}, LV3_KEYS + LV4_KEYS, "LV4"),
        ("LV4", {}, LV4_KEYS, None),
    ],
    ids=["unrated", "LV1", "LV1-100k-followers", "LV2", "LV3", "LV4"],
)
def test_requirements_list_current_and_next_level(world, level, change, keys, next_level):
    creator(world, "c", level, **change)
    world.evaluate("creator", D)
    st = world.standing("c", "creator")
    assert [(r["level"], r["key"]) for r in st["requirements"]] == keys
    assert st["next_level"] == next_level


def test_requirement_rows_show_actual_required_window_and_met(world):
    creator(world, "c", "LV2", plays=12_000)
    world.evaluate("creator", D)
    st = world.standing("c", "creator")
    assert req(st, "LV2", "avg_plays_30d") == {
        "level": "LV2", "key": "avg_plays_30d", "metric": "video+live", "actual": 12_000, "op": ">",
        "required": 10_000, "met": True, "window": "30d",
    }
    assert req(st, "LV2", "submission_tasks") == {
        "level": "LV2", "key": "submission_tasks", "metric": "submission_task", "actual": 1, "op": ">=",
        "required": 1, "met": True, "window": "all",
    }
    assert req(st, "LV3", "orders_90d") == {
        "level": "LV3", "key": "orders_90d", "metric": "order", "actual": 0, "op": ">=",
        "required": 1, "met": False, "window": "90d",
    }
    assert req(st, "LV3", "followers") == {
        "level": "LV3", "key": "followers", "metric": "followers", "actual": 0, "op": ">",
        "required": 300_000, "met": False, "window": "latest",
    }
    assert req(st, "LV3", "likes_30d") == {
        "level": "LV3", "key": "likes_30d", "metric": "likes", "actual": 0, "op": ">",
        "required": 10_000, "met": False, "window": "30d",
    }
