"""`scorecard` (PROGRAMS.md): tech-customer rating S/A/B/C/D, a weighted composite score.

Every rule and threshold of the program, checked end to end through the engine on a real
database: the values a rule computes are read back from the stored standing (``.values``).
"""

from __future__ import annotations

import datetime as dt

import pytest
import yaml

from portal.engine.definition import builtin_path

P = "scorecard"
D = "2026-06-30"  # the usual as-of date: the 6 calendar months are Jan..Jun 2026
HALF_YEAR = ["2026-01-15", "2026-02-15", "2026-03-15", "2026-04-15", "2026-05-15", "2026-06-15"]


def values(world, key: str) -> dict:
    return world.stored(key, P).values


def enrol(world, *keys: str) -> None:
    for key in keys:
        world.member(key, P)


# -- activity ------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("consultations", "transactions", "activity"),
    [
        (0, 0, 0),
        (1, 0, 10),
        (4, 0, 40),
        (5, 0, 50),  # 10 x 5 = 50: exactly the cap
        (6, 0, 50),  # capped
        (20, 0, 50),
        (0, 1, 5),
        (0, 9, 45),
        (0, 10, 50),  # 5 x 10 = 50: exactly the cap
        (0, 11, 50),  # capped
        (3, 2, 40),
        (7, 1, 55),  # each part is capped on its own: 50 + 5, not min(50, 75)
        (6, 11, 100),
    ],
)
def test_activity_is_two_separately_capped_parts(world, consultations, transactions, activity):
    enrol(world, "m")
    world.add("m", "consultation", "2026-03-01", times=consultations)
    world.add("m", "transaction", "2026-03-01", 10, times=transactions)
    world.evaluate(P, D)
    v = values(world, "m")
    assert v["consultations_365d"] == consultations
    assert v["transactions_365d"] == transactions
    assert v["activity"] == activity


def test_365_day_window_is_d_minus_364_to_d(world):
    # as of 2026-12-31, "last 365 days" = 2026-01-01 .. 2026-12-31
    enrol(world, "m")
    world.add("m", "consultation", "2026-01-01")  # D-364: counts
    world.add("m", "consultation", "2025-12-31")  # D-365: does not
    world.add("m", "consultation", "2027-01-01")  # after D: does not exist yet
    world.add("m", "transaction", "2026-01-01", 100)  # counts
    world.add("m", "transaction", "2025-12-31", 1000)  # too old for the count, still in the amount
    world.add("m", "transaction", "2027-01-01", 10000)  # after D: in nothing
    world.evaluate(P, "2026-12-31")
    v = values(world, "m")
    assert v["consultations_365d"] == 1
    assert v["transactions_365d"] == 1
    assert v["activity"] == 10 + 5
    assert v["amount_total"] == 1100  # all time up to D
    assert v["repurchases_365d"] == 0


def test_365_day_window_moves_with_the_as_of_date(world):
    enrol(world, "m")
    world.add("m", "consultation", "2025-07-01", times=5)
    world.evaluate(P, "2026-06-30")  # 2025-07-01 is D-364
    assert values(world, "m")["activity"] == 50
    world.evaluate(P, "2026-07-01")  # now it is D-365
    assert values(world, "m")["activity"] == 0


# -- amount score --------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("amounts", "score"),
    [
        ([], 10),
        ([9999.99], 10),
        ([10000], 30),  # 10,000 <= A: inclusive lower end
        ([6000, 4000], 30),  # A is the cumulative sum
        ([30000], 30),
        ([50000], 30),  # A <= 50,000: inclusive upper end
        ([50000.01], 50),
        ([25000, 25000.01], 50),
        ([1_000_000], 50),
    ],
)
def test_amount_score_buckets(world, amounts, score):
    enrol(world, "m")
    for a in amounts:
        world.add("m", "transaction", "2026-05-01", a)
    world.evaluate(P, D)
    v = values(world, "m")
    assert v["amount_total"] == pytest.approx(sum(amounts))
    assert v["amount_score"] == score


def test_amount_is_cumulative_over_all_time(world):
    enrol(world, "m")
    world.add("m", "transaction", "2015-01-01", 40000)  # ten years ago: still counts
    world.add("m", "transaction", "2026-06-30", 10000.01)
    world.add("m", "transaction", "2026-07-01", 1_000_000)  # after D
    world.evaluate(P, D)
    v = values(world, "m")
    assert v["amount_total"] == pytest.approx(50000.01)
    assert v["amount_score"] == 50
    assert v["transactions_365d"] == 1


# -- stability -----------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("dates", "as_of", "months"),
    [
        ([], D, 0),
        (["2026-06-30"], D, 1),
        (["2026-01-01"], D, 1),  # first day of the 6th month back: in
        (["2025-12-31"], D, 0),  # the 7th month back: out
        (["2026-02-01", "2026-02-15", "2026-02-28"], D, 1),  # a month counts once
        (["2026-01-01", "2026-02-20", "2026-02-21", "2026-06-30"], D, 3),
        (HALF_YEAR, D, 6),
        (HALF_YEAR + ["2025-12-15", "2025-11-15"], D, 6),
        # whole calendar months ending with D's month, even mid-month
        (["2026-01-01"], "2026-06-15", 1),
        (["2026-06-20"], "2026-06-15", 0),  # after D
        (["2025-12-31", "2026-01-31", "2026-06-01"], "2026-06-01", 2),
    ],
)
def test_months_active_over_last_6_calendar_months(world, dates, as_of, months):
    enrol(world, "m")
    world.rows("m", "transaction", dates, 100)
    world.evaluate(P, as_of)
    v = values(world, "m")
    assert v["transaction_months_6m"] == months
    assert v["stability"] == pytest.approx(50 * months / 6)


def test_consultations_do_not_make_a_month_active(world):
    enrol(world, "m")
    world.rows("m", "consultation", HALF_YEAR)
    world.evaluate(P, D)
    assert values(world, "m")["stability"] == 0


# -- contribution --------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("deals", "stability", "contribution"),
    [
        ([], 0, 6),  # 0.6 x 10
        ([("2026-01-15", 4000), ("2026-03-15", 3000), ("2026-05-15", 3000)], 25, 28),  # 0.4 x 25 + 0.6 x 30
        ([(day, 10000) for day in HALF_YEAR], 50, 50),  # 0.4 x 50 + 0.6 x 50
        ([("2026-06-15", 100)], 50 / 6, 0.4 * 50 / 6 + 6),
    ],
)
def test_contribution(world, deals, stability, contribution):
    enrol(world, "m")
    for day, amount in deals:
        world.add("m", "transaction", day, amount)
    world.evaluate(P, D)
    v = values(world, "m")
    assert v["stability"] == pytest.approx(stability)
    assert v["contribution"] == pytest.approx(contribution)


# -- rank buckets --------------------------------------------------------------------------


def test_rank_ties_share_the_best_rank_and_n_counts_members_without_data(world):
    # N = 10 enrolled; only 4 have data. Amounts 5,000 / 4,000 / 4,000 / 3,000:
    # ranks 1, 2, 2, 4 -> p 0.1, 0.2, 0.2, 0.4 -> 100, 80, 80, 40.
    enrol(world, "a", "b", "c", "d", *[f"empty{i}" for i in range(6)])
    world.add("a", "transaction", "2026-03-01", 5000)
    world.add("b", "transaction", "2026-03-01", 4000)
    world.add("c", "transaction", "2026-03-01", 4000)
    world.add("d", "transaction", "2026-03-01", 3000)
    # a member of another program only: neither ranked nor counted in N
    world.member("outsider", "member")
    world.add("outsider", "transaction", "2026-03-01", 999_999)
    world.evaluate(P, D)
    scores = {k: values(world, k)["amount_rank_score"] for k in ("a", "b", "c", "d", "empty0", "empty5")}
    assert scores == {"a": 100, "b": 80, "c": 80, "d": 40, "empty0": 0, "empty5": 0}


def test_repurchase_rank_ties_share_the_best_rank(world):
    # transactions 4, 3, 3, 2, 1 -> repurchases 3, 2, 2, 1, 0; N = 10
    enrol(world, "a", "b", "c", "d", "e", *[f"empty{i}" for i in range(5)])
    for key, n in {"a": 4, "b": 3, "c": 3, "d": 2, "e": 1}.items():
        world.add(key, "transaction", "2026-03-01", 100, times=n)
    world.evaluate(P, D)
    got = {k: (values(world, k)["repurchases_365d"], values(world, k)["repurchase_rank_score"]) for k in "abcde"}
    assert got == {"a": (3, 50), "b": (2, 40), "c": (2, 40), "d": (1, 20), "e": (0, 0)}
    assert values(world, "empty0")["repurchases_365d"] == 0  # max(0, 0 - 1)
    assert values(world, "empty0")["repurchase_rank_score"] == 0


def test_rank_cut_offs_are_inclusive_p_equal_to_the_share(world):
    # 10 members, all with data, distinct values: rank r has p = r / 10 exactly on each cut.
    keys = [f"m{r:02d}" for r in range(1, 11)]
    enrol(world, *keys)
    for r, key in enumerate(keys, start=1):
        # 12 - r transactions of 1,000: amounts and repurchases (11 - r) both descend with r
        world.add(key, "transaction", "2026-03-01", 1000, times=12 - r)
    world.evaluate(P, D)
    amount = [values(world, k)["amount_rank_score"] for k in keys]
    repurchase = [values(world, k)["repurchase_rank_score"] for k in keys]
    value = [values(world, k)["value_score"] for k in keys]
    assert amount == [100, 80, 60, 40, 20, 0, 0, 0, 0, 0]
    assert repurchase == [50, 40, 30, 20, 10, 0, 0, 0, 0, 0]
    assert value == pytest.approx([85, 68, 51, 34, 17, 0, 0, 0, 0, 0])  # 0.7 x amount + 0.3 x repurchase


def test_rank_cut_offs_between_the_shares(world):
    # N = 20 with 11 distinct amounts: p = 0.05, 0.1 | 0.15, 0.2 | ... | 0.45, 0.5 | 0.55
    keys = [f"m{r:02d}" for r in range(1, 12)]
    enrol(world, *keys, *[f"empty{i}" for i in range(9)])
    for r, key in enumerate(keys, start=1):
        world.add(key, "transaction", "2026-03-01", 1000 * (20 - r))
    world.evaluate(P, D)
    amount = [values(world, k)["amount_rank_score"] for k in keys]
    assert amount == [100, 100, 80, 80, 60, 60, 40, 40, 20, 20, 0]


def test_rank_cut_offs_just_above_the_shares(world):
    # N = 19: p = r / 19 lands just above each cut: 0.105 > 0.1, 0.2105 > 0.2, 0.3158 > 0.3,
    # 0.4211 > 0.4, 0.5263 > 0.5
    keys = [f"m{r:02d}" for r in range(1, 11)]
    enrol(world, *keys, *[f"empty{i}" for i in range(9)])
    for r, key in enumerate(keys, start=1):
        world.add(key, "transaction", "2026-03-01", 1000 * (20 - r))
    world.evaluate(P, D)
    amount = [values(world, k)["amount_rank_score"] for k in keys]
    assert amount == [100, 80, 80, 60, 60, 40, 40, 20, 20, 0]


def test_rank_is_over_the_population_as_of_d(world):
    enrol(world, "a", "b")
    world.add("a", "transaction", "2026-03-01", 1000)
    world.add("b", "transaction", "2026-03-01", 500)
    world.add("b", "transaction", "2026-07-01", 5000)  # after D: does not lift b above a
    world.evaluate(P, D)
    # N = 2: a is rank 1 (p 0.5 -> 20), b rank 2 (p 1 -> 0)
    assert values(world, "a")["amount_rank_score"] == 20
    assert values(world, "b")["amount_rank_score"] == 0


def test_repurchases_count_only_the_last_365_days(world):
    enrol(world, "a", *[f"empty{i}" for i in range(9)])
    world.add("a", "transaction", "2025-06-30", 100, times=5)  # D-365: too old
    world.add("a", "transaction", "2025-07-01", 100, times=2)  # D-364
    world.evaluate(P, D)
    v = values(world, "a")
    assert v["transactions_365d"] == 2
    assert v["repurchases_365d"] == 1
    assert v["repurchase_rank_score"] == 50


# -- composite and tiers -------------------------------------------------------------------


def test_composite_is_rounded_to_two_decimals(world):
    # one member (N = 1: p = 1, so no rank score): one transaction of 100 in June.
    # activity 5, stability 50/6, contribution 0.4 x 8.333.. + 6 = 9.333..
    # composite = 1.5 + 4.6666.. = 6.1666.. -> 6.17
    enrol(world, "m")
    world.add("m", "transaction", "2026-06-01", 100)
    world.evaluate(P, D)
    st = world.stored("m", P)
    assert st.values["value_score"] == 0
    assert st.values["composite"] == 6.17
    assert st.score == 6.17
    standing = world.standing("m", P)
    assert standing["score"] == 6.17
    assert standing["level"] == "D"


def test_composite_weights_with_every_part(world):
    # 10 members; "top" leads both rankings. activity 50 + 25, stability 25, amount 30,
    # amount rank 100, repurchase rank 50:
    # 0.3 x 75 + 0.5 x (0.4 x 25 + 0.6 x 30) + 0.2 x (70 + 15) = 22.5 + 14 + 17 = 53.5
    enrol(world, "top", *[f"empty{i}" for i in range(9)])
    world.add("top", "consultation", "2026-02-01", times=5)
    world.rows("top", "transaction", ["2026-01-10", "2026-01-20", "2026-03-10", "2026-05-10", "2026-05-20"], 4000)
    world.evaluate(P, D)
    v = values(world, "top")
    assert (v["activity"], v["stability"], v["amount_score"]) == (75, 25, 30)
    assert (v["amount_rank_score"], v["repurchase_rank_score"], v["value_score"]) == (100, 50, 85)
    assert v["composite"] == 53.5
    assert world.standing("top", P)["level"] == "C"


def test_maximum_composite_is_72_and_tier_b(world):
    enrol(world, "top", *[f"empty{i}" for i in range(9)])
    world.add("top", "consultation", "2026-02-01", times=5)
    world.rows("top", "transaction", HALF_YEAR * 2, 5000)  # 12 deals, 60,000, every month
    world.evaluate(P, D)
    st = world.standing("top", P)
    assert st["score"] == 72  # 30 + 25 + 17
    assert st["level"] == "B"
    # members with no data: 0.5 x (0.6 x 10) = 3
    assert world.standing("empty0", P)["score"] == 3
    assert world.standing("empty0", P)["level"] == "D"


def _forty(world, key: str, transactions: int) -> None:
    """A lone member: 5 consultations, a deal in each of Jan..Jun and more in June, A < 10,000."""
    world.add(key, "consultation", "2026-02-01", times=5)
    world.rows(key, "transaction", HALF_YEAR, 100)
    world.add(key, "transaction", "2026-06-20", 100, times=transactions - 6)


@pytest.mark.parametrize(
    ("transactions", "composite", "level"),
    [
        (8, 40, "C"),  # 0.3 x 90 + 0.5 x 26 = 40: exactly the C threshold
        (7, 38.5, "D"),  # 0.3 x 85 + 13
        (10, 43, "C"),
    ],
)
def test_c_threshold_with_real_data(world, transactions, composite, level):
    enrol(world, "m")
    _forty(world, "m", transactions)
    world.evaluate(P, D)
    st = world.standing("m", P)
    assert st["score"] == composite
    assert st["level"] == level
    assert st["category"] is None


def _bands_only(points_max: float = 100) -> str:
    """The built-in scorecard with the composite read from a test gauge: its band table unchanged."""
    data = yaml.safe_load(builtin_path(P).read_text(encoding="utf-8"))
    data["metrics"]["points"] = {"type": "gauge", "max": points_max}
    data["values"]["composite"] = {"metric": "points", "agg": "latest"}
    return yaml.safe_dump(data, allow_unicode=True)


def test_tier_bands_of_the_builtin_definition(world):
    world.load_programs()
    assert world.publish(_bands_only()) == 2
    cases = {
        0: "D", 39.99: "D", 40: "C", 59.99: "C", 60: "B", 74.99: "B",
        75: "A", 89.99: "A", 90: "S", 100: "S",
    }
    for i, points in enumerate(cases):
        world.member(f"m{i}", P)
        world.add(f"m{i}", "points", "2026-06-01", points)
    world.evaluate(P, D)
    got = {points: world.standing(f"m{i}", P)["level"] for i, points in enumerate(cases)}
    assert got == cases


# -- previous evaluation kept on the standing ----------------------------------------------


def test_prev_score_and_prev_level_are_kept_across_evaluations(world):
    enrol(world, "m")
    _forty(world, "m", 8)
    world.evaluate(P, D)
    st = world.stored("m", P)
    assert (st.level, st.score, st.prev_level, st.prev_score) == ("C", 40, None, None)

    # a month later January leaves the 6-month window: stability 5/6 x 50 -> composite 38.33
    world.evaluate(P, "2026-07-31")
    st = world.stored("m", P)
    assert (st.level, st.score) == ("D", 38.33)
    assert (st.prev_level, st.prev_score) == ("C", 40)
    assert st.prev_values["composite"] == 40
    assert st.values["transaction_months_6m"] == 5

    # a re-run of the same date keeps the previous *evaluation*, not itself
    world.evaluate(P, "2026-07-31")
    st = world.stored("m", P)
    assert (st.level, st.score, st.prev_level, st.prev_score) == ("D", 38.33, "C", 40)

    world.evaluate(P, "2026-08-31")
    st = world.stored("m", P)
    assert (st.prev_level, st.prev_score) == ("D", 38.33)


def test_tier_drop_is_recorded_with_the_composite_as_reason(world):
    enrol(world, "m")
    _forty(world, "m", 8)
    world.evaluate(P, D)
    summary = world.evaluate(P, "2026-07-31")
    assert summary.downgraded == 1
    changes = world.changes("m", P)
    assert [(c.on, c.from_level, c.to_level, c.direction) for c in changes] == [
        (dt.date(2026, 6, 30), None, "C", "up"),
        (dt.date(2026, 7, 31), "C", "D", "down"),
    ]
    reasons = changes[-1].reasons
    assert len(reasons) == 1
    assert reasons[0]["key"] == "composite"
    assert reasons[0]["actual"] == 38.33
    assert reasons[0]["op"] == ">="
    assert reasons[0]["required"] == 40
    assert reasons[0]["met"] is False


def test_same_as_of_date_gives_the_same_result(world):
    enrol(world, "a", "b", "c")
    world.add("a", "transaction", "2026-03-01", 20000)
    world.add("b", "transaction", "2026-04-01", 300)
    world.add("a", "consultation", "2026-05-01", times=3)
    world.evaluate(P, D)
    first = {k: world.stored(k, P).values for k in "abc"}
    world.add("c", "transaction", "2026-07-15", 90000)  # after D
    world.evaluate(P, D)
    assert {k: world.stored(k, P).values for k in "abc"} == first
