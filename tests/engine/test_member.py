"""The `member` program (PROGRAMS.md, "Conventions" and "`member`"): regular, silver, gold,
diamond, partner - the highest level whose own condition is met, provided `regular` is met,
with a 90-day protection period after every promotion (the first rating included).

Evaluations are as of D = 2026-06-30 unless a test moves through time.
"""

from __future__ import annotations

import datetime as dt

import pytest

from tests.helpers import req

D = dt.date(2026, 6, 30)


def day(offset: int, base: dt.date = D) -> dt.date:
    return base + dt.timedelta(days=offset)


def member(world, key: str = "m", *, verified: float | None = 1, enterprise: float | None = None) -> str:
    """An enrolled member; verified / enterprise gauges read on 2026-01-01 (None: no reading)."""
    world.member(key, "member")
    if verified is not None:
        world.add(key, "verified", "2026-01-01", verified)
    if enterprise is not None:
        world.add(key, "enterprise", "2026-01-01", enterprise)
    return key


def buy(world, key: str, amount: float, on: dt.date = D, times: int = 1) -> None:
    world.add(key, "purchase", on, amount, times=times)


def level_on(world, key: str = "m", as_of: dt.date = D) -> str | None:
    world.evaluate("member", as_of)
    return world.level(key, "member")


def brief(reasons: list[dict]) -> list[tuple]:
    return [(r["level"], r["key"], r["actual"], r["op"], r["required"]) for r in reasons]


# -- regular: verified = 1 AND at least one purchase ever -----------------------------------


def test_verified_with_one_purchase_is_regular(world):
    member(world)
    buy(world, "m", 10)
    assert level_on(world) == "regular"


@pytest.mark.parametrize(("verified", "purchases"), [(None, 1), (0, 1), (1, 0)],
                         ids=["never-verified", "verified-0", "no-purchase"])
def test_regular_needs_verified_and_a_purchase(world, verified, purchases):
    member(world, verified=verified)
    buy(world, "m", 10, times=purchases)
    assert level_on(world) is None


def test_verified_is_the_latest_reading(world):
    member(world)
    world.add("m", "verified", day(-1), 0)
    buy(world, "m", 10)
    assert level_on(world) is None


@pytest.mark.parametrize(("on", "expected"), [(dt.date(2020, 1, 1), "regular"), (day(1), None)],
                         ids=["years-ago", "after-D"])
def test_purchase_ever_counts_all_time_up_to_d(world, on, expected):
    member(world)
    buy(world, "m", 10, on=on)
    assert level_on(world) == expected


@pytest.mark.parametrize("verified", [None, 0])
def test_no_level_without_regular_whatever_the_spend(world, verified):
    member(world, verified=verified, enterprise=1)
    buy(world, "m", 150_000)
    world.add("m", "referral", day(-1), 1, times=10)
    assert level_on(world) is None


def test_no_level_without_a_purchase_even_with_referrals(world):
    member(world)
    world.add("m", "referral", day(-1), 1, times=5)
    assert level_on(world) is None


# -- the conditions of silver .. partner, at their boundaries -------------------------------

SPEND = [
    # purchases on D (amounts), expected level
    ([499], "regular"),
    ([500], "silver"),  # spend_180d >= 500
    ([1, 1], "regular"),
    ([1, 1, 1], "silver"),  # purchases_30d >= 3
    ([1_999], "silver"),
    ([2_000], "gold"),  # spend_180d >= 2,000
    ([6_000], "gold"),  # >= 5,000 but 6,000 / 6 = 1,000 is not > 1,000
    ([6_001], "diamond"),  # 6,001 / 6 > 1,000
    ([3_000, 3_001], "diamond"),  # a sum over rows
    ([20_000], "diamond"),
    ([20_001], "partner"),  # spend_180d > 20,000
]


@pytest.mark.parametrize(("amounts", "expected"), SPEND, ids=["+".join(map(str, a)) for a, _ in SPEND])
def test_spend_and_purchase_thresholds(world, amounts, expected):
    member(world)
    for amount in amounts:
        buy(world, "m", amount)
    assert level_on(world) == expected


@pytest.mark.parametrize(("referrals", "expected"), [(4, "regular"), (5, "gold")])
def test_gold_by_referrals_without_silver_condition(world, referrals, expected):
    member(world)
    buy(world, "m", 10)
    world.add("m", "referral", day(-1), 1, times=referrals)
    assert level_on(world) == expected


@pytest.mark.parametrize(("on", "expected"), [(dt.date(2020, 1, 1), "gold"), (day(1), "regular")],
                         ids=["years-ago", "after-D"])
def test_referrals_count_all_time_up_to_d(world, on, expected):
    member(world)
    buy(world, "m", 10)
    world.add("m", "referral", day(-1), 1, times=4)
    world.add("m", "referral", on, 1)
    assert level_on(world) == expected


@pytest.mark.parametrize(
    ("enterprise", "spend_30d", "expected"),
    [(1, 3_000, "gold"), (1, 3_001, "diamond"), (0, 3_001, "gold"), (None, 3_001, "gold")],
    ids=["enterprise-3000", "enterprise-3001", "not-enterprise", "no-enterprise-reading"],
)
def test_diamond_by_enterprise_and_30_day_spend(world, enterprise, spend_30d, expected):
    member(world, enterprise=enterprise)
    buy(world, "m", spend_30d)
    assert level_on(world) == expected


def test_enterprise_is_the_latest_reading(world):
    member(world, enterprise=1)
    world.add("m", "enterprise", day(-1), 0)
    buy(world, "m", 3_001)
    assert level_on(world) == "gold"


@pytest.mark.parametrize(("amount", "expected"), [(100_000, "regular"), (100_001, "partner")])
def test_partner_by_365_day_spend_without_lower_conditions(world, amount, expected):
    # bought 200 days ago: outside every 180- and 30-day window, so no other condition holds
    member(world)
    buy(world, "m", amount, on=day(-200))
    assert level_on(world) == expected


# -- windows ("last N days" = D-N+1 .. D) ---------------------------------------------------


@pytest.mark.parametrize(("offset", "expected"), [(-179, "silver"), (-180, "regular")])
def test_spend_window_is_last_180_days(world, offset, expected):
    member(world)
    buy(world, "m", 500, on=day(offset))
    assert level_on(world) == expected


@pytest.mark.parametrize(("offset", "expected"), [(-29, "silver"), (-30, "regular")])
def test_purchases_window_is_last_30_days(world, offset, expected):
    member(world)
    buy(world, "m", 1, times=2)
    buy(world, "m", 1, on=day(offset))
    assert level_on(world) == expected


@pytest.mark.parametrize(("offset", "expected"), [(-29, "diamond"), (-30, "gold")])
def test_enterprise_spend_window_is_last_30_days(world, offset, expected):
    member(world, enterprise=1)
    buy(world, "m", 3_001, on=day(offset))
    assert level_on(world) == expected


@pytest.mark.parametrize(("offset", "expected"), [(-364, "partner"), (-365, "regular")])
def test_spend_window_is_last_365_days(world, offset, expected):
    member(world)
    buy(world, "m", 100_001, on=day(offset))
    assert level_on(world) == expected


def test_purchases_after_d_do_not_count(world):
    member(world)
    buy(world, "m", 10)
    buy(world, "m", 50_000, on=day(1))
    assert level_on(world) == "regular"


# -- transitions: immediate upgrades, 90-day protection after a promotion -------------------

P = dt.date(2026, 2, 1)  # the promotion date of the protection tests


def diamond_promoted_on_p(world) -> None:
    """Silver on 2026-01-05 (first rating), diamond on P by an enterprise purchase of 3,600.

    From P+30 on only gold's condition holds (spend_180d 4,200; spend_30d 0).
    """
    member(world, enterprise=1)
    buy(world, "m", 600, on=dt.date(2026, 1, 5))
    assert level_on(world, as_of=dt.date(2026, 1, 5)) == "silver"
    buy(world, "m", 3_600, on=P)
    assert level_on(world, as_of=P) == "diamond"


def test_upgrade_is_immediate(world):
    diamond_promoted_on_p(world)
    change = world.changes("m", "member")[-1]
    assert (change.on, change.from_level, change.to_level, change.direction) == (P, "silver", "diamond", "up")
    assert world.stored("m", "member").promoted_on == P


@pytest.mark.parametrize("offset", [30, 60, 89])
def test_no_downgrade_within_90_days_of_a_promotion(world, offset):
    diamond_promoted_on_p(world)
    assert level_on(world, as_of=day(offset, P)) == "diamond"
    assert [c.to_level for c in world.changes("m", "member")] == ["silver", "diamond"]


def test_downgrade_on_day_90_after_promotion_with_reasons(world):
    diamond_promoted_on_p(world)
    assert level_on(world, as_of=day(90, P)) == "gold"
    change = world.changes("m", "member")[-1]
    assert (change.on, change.from_level, change.to_level, change.direction) == (day(90, P), "diamond", "gold", "down")
    assert brief(change.reasons) == [
        ("diamond", "spend_180d", 4_200, ">=", 5_000),
        ("diamond", "spend_180d_monthly", 700, ">", 1_000),
        ("diamond", "spend_30d", 0, ">", 3_000),
    ]


def test_protection_counts_from_the_promotion_not_from_evaluations(world):
    # evaluated daily through the protection period, the downgrade still comes on P+90
    diamond_promoted_on_p(world)
    for offset in range(80, 90):
        assert level_on(world, as_of=day(offset, P)) == "diamond"
    assert level_on(world, as_of=day(90, P)) == "gold"


def test_downgrade_does_not_start_a_new_protection_period(world):
    diamond_promoted_on_p(world)
    assert level_on(world, as_of=day(90, P)) == "gold"
    world.add("m", "verified", day(91, P), 0)
    assert level_on(world, as_of=day(91, P)) is None


def test_upgrade_during_protection_is_immediate_and_restarts_protection(world):
    # silver on P (promotion), diamond on Q = P+30 during silver's protection
    q = day(30, P)
    member(world, enterprise=1)
    buy(world, "m", 600, on=P)
    assert level_on(world, as_of=P) == "silver"
    buy(world, "m", 3_600, on=q)
    assert level_on(world, as_of=q) == "diamond"
    assert world.stored("m", "member").promoted_on == q
    assert level_on(world, as_of=day(90, P)) == "diamond"  # P's protection would be over
    assert level_on(world, as_of=day(89, q)) == "diamond"
    assert level_on(world, as_of=day(90, q)) == "gold"


def test_first_rating_counts_as_a_promotion(world):
    member(world)
    buy(world, "m", 10, on=P)
    assert level_on(world, as_of=P) == "regular"
    [change] = world.changes("m", "member")
    assert (change.from_level, change.to_level, change.direction) == (None, "regular", "up")
    assert world.stored("m", "member").promoted_on == P
    world.add("m", "verified", day(1, P), 0)
    assert level_on(world, as_of=day(89, P)) == "regular"
    assert level_on(world, as_of=day(90, P)) is None
    assert brief(world.changes("m", "member")[-1].reasons) == [("regular", "verified", 0, "=", 1)]


def test_downgrade_after_protection_goes_to_highest_level_met_with_every_reason(world):
    # partner by 365-day spend of a purchase 300 days before P; 90 days later none of
    # silver .. partner holds
    member(world)
    buy(world, "m", 100_001, on=day(-300, P))
    assert level_on(world, as_of=P) == "partner"
    assert level_on(world, as_of=day(89, P)) == "partner"
    assert level_on(world, as_of=day(90, P)) == "regular"
    change = world.changes("m", "member")[-1]
    assert (change.from_level, change.to_level, change.direction) == ("partner", "regular", "down")
    assert brief(change.reasons) == [
        ("silver", "spend_180d", 0, ">=", 500),
        ("silver", "purchases_30d", 0, ">=", 3),
        ("gold", "spend_180d", 0, ">=", 2_000),
        ("gold", "referrals", 0, ">=", 5),
        ("diamond", "spend_180d", 0, ">=", 5_000),
        ("diamond", "spend_180d_monthly", 0, ">", 1_000),
        ("diamond", "enterprise", 0, "=", 1),
        ("diamond", "spend_30d", 0, ">", 3_000),
        ("partner", "spend_180d", 0, ">", 20_000),
        ("partner", "spend_365d", 0, ">", 100_000),
    ]


# -- requirements shown ---------------------------------------------------------------------


def test_requirements_list_current_and_next_level(world):
    member(world)
    buy(world, "m", 10)
    world.evaluate("member", D)
    st = world.standing("m", "member")
    assert (st["level"], st["next_level"]) == ("regular", "silver")
    assert [(r["level"], r["key"]) for r in st["requirements"]] == [
        ("regular", "verified"),
        ("regular", "purchases_ever"),
        ("silver", "spend_180d"),
        ("silver", "purchases_30d"),
    ]
    assert req(st, "silver", "spend_180d") == {
        "level": "silver", "key": "spend_180d", "metric": "purchase", "actual": 10, "op": ">=",
        "required": 500, "met": False, "window": "180d", "group": "silver_condition", "group_mode": "any",
    }


def test_unrated_member_sees_regular_requirements(world):
    member(world, verified=0)
    buy(world, "m", 10)
    world.evaluate("member", D)
    st = world.standing("m", "member")
    assert (st["level"], st["next_level"]) == (None, "regular")
    assert [(r["level"], r["key"], r["met"]) for r in st["requirements"]] == [
        ("regular", "verified", False),
        ("regular", "purchases_ever", True),
    ]
