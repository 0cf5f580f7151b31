"""`music` (PROGRAMS.md): client grades S/A+/A/B/C x quality, by monthly plays, with the
two-consecutive-months rule, sub-class retention and an at-once, sticky blacklist."""

from __future__ import annotations

import datetime as dt

P = "music"
JAN, FEB, MAR, APR, MAY = "2026-01-31", "2026-02-28", "2026-03-31", "2026-04-30", "2026-05-31"

M = 1_000_000
B = 1_000_000_000


def grade(world, key: str) -> tuple:
    st = world.standing(key, P)
    return st["level"], st["sub_class"], st["category"], st["status"]


def month(world, key: str, as_of: str, plays: float) -> None:
    """One month's plays, dated in the month of ``as_of``."""
    world.add(key, "monthly_plays", as_of[:8] + "15", plays)


def run(world, key: str, plays_by_month: list[float]) -> list[str | None]:
    """Plays for Jan, Feb, ... evaluated at each month end; the level after each run."""
    levels = []
    for as_of, plays in zip([JAN, FEB, MAR, APR, MAY], plays_by_month, strict=False):
        month(world, key, as_of, plays)
        world.evaluate(P, as_of)
        levels.append(world.level(key, P))
    return levels


def level_changes(world, key: str) -> list[tuple]:
    return [
        (c.on.isoformat(), c.from_level, c.to_level, c.direction)
        for c in world.changes(key, P)
        if c.cause == "evaluation" and c.from_level != c.to_level
    ]


# -- grade bands, sub-classes and category (first month: the band at once) ----------------

BANDS = {
    # plays: (grade, sub-class, category)
    10_000_000_001: ("S", "low", "fast_sales"),  # S: P > 10B
    50 * B: ("S", "high", "fast_sales"),  # S high: P >= 50B
    50 * B - 1: ("S", "low", "fast_sales"),
    200 * B: ("S", "high", "fast_sales"),
    10 * B: ("A+", "high", "fast_sales"),  # A+: 1B <= P <= 10B, both ends
    5 * B: ("A+", "high", "fast_sales"),  # A+ high: P >= 5B
    5 * B - 1: ("A+", "low", "fast_sales"),
    1 * B: ("A+", "low", "fast_sales"),
    1 * B - 1: ("A", "high", "fast_sales"),  # A: 100M <= P < 1B
    500 * M: ("A", "high", "fast_sales"),  # A high: P >= 500M
    500 * M - 1: ("A", "low", "fast_sales"),
    100 * M: ("A", "low", "fast_sales"),
    100 * M - 1: ("B", "high", "nurture"),  # B: 10M <= P < 100M
    80 * M: ("B", "high", "nurture"),  # B high: P >= 80M
    80 * M - 1: ("B", "standard", "nurture"),  # the 30M-80M gap: standard
    30 * M: ("B", "standard", "nurture"),
    30 * M - 1: ("B", "low", "nurture"),  # B low: P < 30M
    10 * M: ("B", "low", "nurture"),
    10 * M - 1: ("C", "high", "nurture"),  # C: P < 10M
    5 * M: ("C", "high", "nurture"),  # C high: P >= 5M
    5 * M - 1: ("C", "low", "nurture"),
    1: ("C", "low", "nurture"),
    0: ("C", "low", "nurture"),  # a month of data with no plays is still rated
}


def test_bands_sub_classes_and_categories_at_every_boundary(world):
    for i, plays in enumerate(BANDS):
        world.member(f"c{i}", P)
        world.add(f"c{i}", "monthly_plays", "2026-01-15", plays)
    summary = world.evaluate(P, JAN)
    assert summary.upgraded == len(BANDS)  # the first month sets the grade at once
    got = {plays: grade(world, f"c{i}")[:3] for i, plays in enumerate(BANDS)}
    assert got == BANDS
    for i in range(len(BANDS)):
        assert world.standing(f"c{i}", P)["status"] == "active"


def test_no_play_data_is_not_rated(world):
    world.member("none", P)
    world.add("none", "monthly_likes", "2026-01-15", 10)
    world.evaluate(P, JAN)
    assert grade(world, "none") == (None, None, None, "active")


def test_plays_are_summed_per_calendar_month(world):
    world.member("c", P)
    world.add("c", "monthly_plays", "2025-12-31", 5 * B)  # December: not January's
    world.add("c", "monthly_plays", "2026-01-01", 60 * M)
    world.add("c", "monthly_plays", "2026-01-31", 30 * M)
    world.add("c", "monthly_plays", "2026-01-31", 10 * M)  # two rows the same day: both count
    world.add("c", "monthly_plays", "2026-02-01", 5 * B)  # February: not yet
    world.evaluate(P, JAN)
    assert world.values("c", P)["monthly_plays"] == 100 * M
    assert grade(world, "c") == ("A", "low", "fast_sales", "active")
    world.evaluate(P, FEB)  # February alone: not the last 31 days (from 2026-01-29)
    assert world.values("c", P)["monthly_plays"] == 5 * B


def test_first_month_with_data_sets_the_grade_at_once(world):
    world.member("c", P)
    world.evaluate(P, JAN)
    assert world.level("c", P) is None  # not yet rated
    month(world, "c", FEB, 2 * B)
    world.evaluate(P, FEB)
    assert grade(world, "c") == ("A+", "low", "fast_sales", "active")
    assert level_changes(world, "c") == [(FEB, None, "A+", "up")]
    assert world.stored("c", P).level_since == dt.date(2026, 2, 28)


# -- two consecutive months -----------------------------------------------------------------


def test_a_single_month_at_a_lower_grade_changes_nothing(world):
    world.member("c", P)
    assert run(world, "c", [200 * M, 20 * M, 200 * M]) == ["A", "A", "A"]
    assert level_changes(world, "c") == [(JAN, None, "A", "up")]


def test_a_single_month_at_a_higher_grade_changes_nothing(world):
    world.member("c", P)
    assert run(world, "c", [20 * M, 2 * B, 20 * M, 20 * B]) == ["B", "B", "B", "B"]
    assert level_changes(world, "c") == [(JAN, None, "B", "up")]


def test_two_consecutive_months_at_a_lower_grade_downgrade(world):
    world.member("c", P)
    assert run(world, "c", [2 * B, 200 * M, 200 * M]) == ["A+", "A+", "A"]
    assert level_changes(world, "c") == [(JAN, None, "A+", "up"), (MAR, "A+", "A", "down")]
    assert grade(world, "c") == ("A", "low", "fast_sales", "active")
    reasons = [c for c in world.changes("c", P) if c.on == dt.date(2026, 3, 31)][0].reasons
    assert [(r["key"], r["actual"], r["op"], r["required"], r["met"]) for r in reasons] == [
        ("monthly_plays", 200 * M, ">=", 1 * B, False)
    ]


def test_two_consecutive_months_at_a_higher_grade_upgrade(world):
    world.member("c", P)
    assert run(world, "c", [20 * M, 2 * B, 2 * B]) == ["B", "B", "A+"]
    assert level_changes(world, "c") == [(JAN, None, "B", "up"), (MAR, "B", "A+", "up")]
    assert grade(world, "c") == ("A+", "low", "fast_sales", "active")


def test_two_consecutive_months_must_give_the_same_new_grade(world):
    world.member("c", P)
    # A, then B, then C: two months away from A but at different grades -> still A;
    # then C again -> C.
    assert run(world, "c", [200 * M, 20 * M, 5 * M, 5 * M]) == ["A", "A", "A", "C"]
    assert level_changes(world, "c") == [(JAN, None, "A", "up"), (APR, "A", "C", "down")]


def test_two_months_up_at_different_grades_change_nothing(world):
    world.member("c", P)
    assert run(world, "c", [5 * M, 20 * M, 200 * M, 200 * M]) == ["C", "C", "C", "A"]


def test_the_previous_month_is_judged_from_its_data(world):
    world.member("c", P)
    month(world, "c", JAN, 200 * M)
    world.evaluate(P, JAN)
    month(world, "c", FEB, 20 * M)
    month(world, "c", MAR, 20 * M)
    world.evaluate(P, MAR)  # February was not evaluated, but its data gives B too
    assert world.level("c", P) == "B"


def test_a_month_between_breaks_the_run(world):
    world.member("c", P)
    assert run(world, "c", [200 * M, 20 * M, 200 * M, 20 * M, 20 * M]) == ["A", "A", "A", "A", "B"]


# -- retention of `high` in A ----------------------------------------------------------------


def test_a_high_is_kept_while_plays_stay_at_least_300m(world):
    world.member("c", P)
    month(world, "c", JAN, 600 * M)
    world.evaluate(P, JAN)
    assert grade(world, "c")[:2] == ("A", "high")
    month(world, "c", FEB, 350 * M)  # below 500M, at least 300M: kept
    world.evaluate(P, FEB)
    assert grade(world, "c")[:2] == ("A", "high")
    month(world, "c", MAR, 300 * M)  # exactly 300M: kept
    world.evaluate(P, MAR)
    assert grade(world, "c")[:2] == ("A", "high")
    month(world, "c", APR, 300 * M - 1)  # below: lost
    world.evaluate(P, APR)
    assert grade(world, "c")[:2] == ("A", "low")
    month(world, "c", MAY, 400 * M)  # once lost, 400M is not enough to regain it
    world.evaluate(P, MAY)
    assert grade(world, "c")[:2] == ("A", "low")
    subs = [(c.on.isoformat(), c.from_sub_class, c.to_sub_class) for c in world.changes("c", P)]
    assert subs == [(JAN, None, "high"), (APR, "high", "low")]


def test_retention_keeps_only_high(world):
    world.member("c", P)
    month(world, "c", JAN, 200 * M)
    world.evaluate(P, JAN)
    month(world, "c", FEB, 350 * M)  # a low A client at 350M does not become high ...
    world.evaluate(P, FEB)
    assert grade(world, "c")[:2] == ("A", "low")
    month(world, "c", MAR, 600 * M)  # ... and low is not "kept": at 500M+ it is high
    world.evaluate(P, MAR)
    assert grade(world, "c")[:2] == ("A", "high")


def test_retention_applies_only_within_a(world):
    # B high (held through February at 350M, still "high" by B's own rule) does not carry
    # over as high into A: at 350M a new A client is low
    world.member("c", P)
    assert run(world, "c", [90 * M, 350 * M, 350 * M]) == ["B", "B", "A"]
    assert grade(world, "c")[:2] == ("A", "low")


def test_a_plus_high_does_not_become_a_high_at_350m(world):
    world.member("c", P)
    assert run(world, "c", [6 * B, 350 * M, 350 * M]) == ["A+", "A+", "A"]
    assert grade(world, "c")[:2] == ("A", "low")


def test_an_a_client_at_high_reached_from_low_sub_class_keeps_it(world):
    world.member("c", P)
    assert run(world, "c", [200 * M, 600 * M, 320 * M]) == ["A", "A", "A"]
    assert grade(world, "c")[:2] == ("A", "high")


# -- blacklist --------------------------------------------------------------------------------


def test_like_play_ratio_over_half_blacklists(world):
    cases = {
        "half": (200 * M, [100 * M], "active"),  # exactly 0.5: not over
        "over": (200 * M, [100 * M + 1], "blacklisted"),
        "summed": (200 * M, [60 * M, 50 * M], "blacklisted"),  # likes summed over the month
        "low": (200 * M, [10 * M], "active"),
    }
    for key, (plays, likes, _) in cases.items():
        world.member(key, P)
        world.add(key, "monthly_plays", "2026-01-10", plays)
        for n in likes:
            world.add(key, "monthly_likes", "2026-01-20", n)
    world.member("last_month", P)
    world.add("last_month", "monthly_plays", "2026-01-10", 200 * M)
    world.add("last_month", "monthly_likes", "2025-12-31", 150 * M)  # December's likes
    summary = world.evaluate(P, JAN)
    got = {key: world.standing(key, P)["status"] for key in [*cases, "last_month"]}
    assert got == {**{k: c[2] for k, c in cases.items()}, "last_month": "active"}
    assert summary.blacklisted == 2


def test_zombie_fan_share_at_least_30_percent_blacklists(world):
    cases = {"at": [0.3], "over": [0.5], "under": [0.29], "recovered": [0.5, 0.1]}
    for key, shares in cases.items():
        world.member(key, P)
        world.add(key, "monthly_plays", "2026-01-10", 200 * M)
        for day, share in zip(["2025-11-01", "2026-01-20"], shares, strict=False):
            world.add(key, "zombie_fan_share", day, share)
    world.evaluate(P, JAN)
    got = {key: world.standing(key, P)["status"] for key in cases}
    # the latest reading counts: "recovered" read 0.5 in November, 0.1 now
    assert got == {"at": "blacklisted", "over": "blacklisted", "under": "active", "recovered": "active"}


def test_two_violations_in_the_last_90_days_blacklist(world):
    # as of 2026-03-31 the last 90 days are 2026-01-01 .. 2026-03-31
    cases = {
        "both_in": (["2026-01-01", "2026-03-31"], "blacklisted"),
        "one_91_days_ago": (["2025-12-31", "2026-03-31"], "active"),
        "same_day": (["2026-02-10", "2026-02-10"], "blacklisted"),
        "one": (["2026-03-01"], "active"),
        "three": (["2026-01-05", "2026-02-05", "2026-03-05"], "blacklisted"),
        "after_d": (["2026-03-01", "2026-04-01"], "active"),
    }
    for key, (dates, _) in cases.items():
        world.member(key, P)
        world.add(key, "monthly_plays", "2026-03-10", 200 * M)
        world.rows(key, "violation", dates)
    world.evaluate(P, MAR)
    got = {key: world.standing(key, P)["status"] for key in cases}
    assert got == {k: c[1] for k, c in cases.items()}
    assert world.values("one_91_days_ago", P)["violations_90d"] == 1


def test_blacklist_applies_whatever_the_grade(world):
    plays = {"s": 60 * B, "aplus": 2 * B, "a": 600 * M, "b": 50 * M, "c": 1 * M}
    for key, p in plays.items():
        world.member(key, P)
        world.add(key, "monthly_plays", "2026-01-10", p)
        world.add(key, "zombie_fan_share", "2026-01-10", 0.4)
    summary = world.evaluate(P, JAN)
    assert summary.blacklisted == len(plays)
    got = {key: grade(world, key) for key in plays}
    assert got == {
        "s": ("S", "high", "fast_sales", "blacklisted"),
        "aplus": ("A+", "low", "fast_sales", "blacklisted"),
        "a": ("A", "high", "fast_sales", "blacklisted"),
        "b": ("B", "standard", "nurture", "blacklisted"),
        "c": ("C", "low", "nurture", "blacklisted"),
    }


def test_blacklist_is_at_once_not_after_two_months(world):
    world.member("c", P)
    month(world, "c", JAN, 200 * M)
    world.evaluate(P, JAN)
    assert world.standing("c", P)["status"] == "active"
    month(world, "c", FEB, 200 * M)
    world.add("c", "monthly_likes", "2026-02-20", 150 * M)  # 0.75 in February only
    summary = world.evaluate(P, FEB)
    assert summary.blacklisted == 1
    assert grade(world, "c") == ("A", "low", "fast_sales", "blacklisted")


def test_blacklist_stays_when_the_signal_goes_away_and_freezes_the_grade(world):
    world.member("c", P)
    month(world, "c", JAN, 600 * M)
    world.add("c", "zombie_fan_share", "2026-01-20", 0.35)
    world.evaluate(P, JAN)
    assert grade(world, "c") == ("A", "high", "fast_sales", "blacklisted")
    world.add("c", "zombie_fan_share", "2026-02-01", 0.05)  # the signal is gone
    for as_of in (FEB, MAR, APR):
        month(world, "c", as_of, 5 * M)  # C for three months in a row
        summary = world.evaluate(P, as_of)
        assert summary.blacklisted == 0  # not counted again
        assert grade(world, "c") == ("A", "high", "fast_sales", "blacklisted")
    assert world.values("c", P)["zombie_fan_share"] == 0.05
    changes = world.changes("c", P)
    assert {c.on for c in changes} == {dt.date(2026, 1, 31)}  # nothing recorded after January
    assert [(c.from_status, c.to_status) for c in changes if c.cause == "blacklist"] == [("active", "blacklisted")]


def test_blacklist_change_records_the_signal_as_reasons(world):
    world.member("c", P)
    month(world, "c", JAN, 200 * M)
    world.evaluate(P, JAN)
    month(world, "c", FEB, 200 * M)
    world.add("c", "monthly_likes", "2026-02-20", 120 * M)  # 0.6
    world.rows("c", "violation", ["2026-02-01", "2026-02-02"])
    world.add("c", "zombie_fan_share", "2026-02-01", 0.1)  # not a signal
    world.evaluate(P, FEB)
    blacklist = [c for c in world.changes("c", P) if c.cause == "blacklist"]
    assert len(blacklist) == 1
    change = blacklist[0]
    assert (change.on, change.from_status, change.to_status) == (dt.date(2026, 2, 28), "active", "blacklisted")
    assert (change.from_level, change.to_level) == ("A", "A")
    got = {r["key"]: (r["actual"], r["op"], r["required"], r["met"]) for r in change.reasons}
    assert got == {
        "like_play_ratio": (0.6, ">", 0.5, True),
        "violations_90d": (2, ">=", 2, True),
    }
    last = world.standing("c", P)["last_change"]
    assert last["cause"] == "blacklist"
    assert last["to_status"] == "blacklisted"
