"""The benefit ledger an evaluation keeps (PROGRAMS.md "Benefits" of `creator` and `member`;
portal/engine/ledger.py; run.py's ``_Writer._flush_ledger`` and ``expire_items``).

- entering a level makes its basic benefits due: `auto` -> issued, `claim`/`review` -> available;
- reward benefits are due while the reward tasks are met, once per 90-day cycle of the tenure;
- leaving a level revokes its open items and expires its perks; claimed and money items stay;
- extra_dispatch every 30 days of a tenure, dispatch_makeup on a period's last day;
- quarterly_rebate as of a quarter's last day; guarantee cards expire after 180 days;
- re-running a date never issues anything twice.

Creators are built with tests.engine.test_creator's ``creator()`` (the basic tasks of a level
just met, rows dated D-5, D = 2026-06-30).
"""

from __future__ import annotations

import datetime as dt

import pytest
from sqlalchemy import func, select

from portal.models import BenefitItem, Member, Notification
from portal.services import benefits as benefits_service
from tests.engine.test_creator import PROFILES, D, creator, day

FAR = dt.date(2020, 1, 1)


# -- readers ---------------------------------------------------------------------------------


def member_id(world, key: str) -> int:
    return world.s.scalar(select(Member.id).where(Member.key == key))


def items(world, key: str, program: str | None = None, **where) -> list[BenefitItem]:
    """The member's ledger rows, oldest first; ``where`` filters on columns."""
    world.s.expire_all()
    stmt = select(BenefitItem).where(BenefitItem.member_id == member_id(world, key)).order_by(BenefitItem.id)
    if program:
        stmt = stmt.where(BenefitItem.program_key == program)
    for column, value in where.items():
        stmt = stmt.where(getattr(BenefitItem, column) == value)
    return list(world.s.scalars(stmt))


def row(i: BenefitItem) -> tuple:
    """key, tier, mode, state, quantity, amount, value, due_on, issued_on, expires_on"""
    return (i.benefit_key, i.tier, i.mode, i.state, i.quantity, i.amount, i.value, i.due_on, i.issued_on, i.expires_on)


def states(world, key: str, **where) -> list[tuple]:
    return [(i.benefit_key, i.tier, i.state, i.closed_on) for i in items(world, key, **where)]


def count_items(world) -> int:
    return world.s.scalar(select(func.count()).select_from(BenefitItem))


def count_notes(world) -> int:
    return world.s.scalar(select(func.count()).select_from(Notification))


def sustain(world, key: str, level: str, offsets: list[int], post_metric: str = "live") -> None:
    """Keep a `creator()` at its level: the level's posts (and likes) again on D+offset."""
    p = PROFILES[level]
    for offset in offsets:
        world.add(key, post_metric, day(offset), p["plays"], times=p["posts"])
        if p["likes"]:
            world.add(key, "likes", day(offset), p["likes"])


def daily(world, program: str, first: dt.date, last: dt.date) -> int:
    """Evaluate every day first..last; the total of benefits issued."""
    issued, on = 0, first
    while on <= last:
        issued += world.evaluate(program, on).benefits_issued
        on += dt.timedelta(days=1)
    return issued


# -- entering a level: its basic benefits ------------------------------------------------------

E180 = day(180)  # D + 180: a guarantee card due on D expires then

BASIC = {
    # key, tier, mode, state, quantity, amount, value, due_on, issued_on, expires_on
    "LV1": [
        ("identity_tag", "basic", "auto", "issued", 1, None, None, D, D, None),
        ("extra_dispatch", "basic", "auto", "issued", 4, None, None, D, D, None),
        ("square_booth", "basic", "auto", "issued", 1, None, None, D, D, None),
    ],
    "LV2": [
        ("identity_tag", "basic", "auto", "issued", 1, None, None, D, D, None),
        ("extra_dispatch", "basic", "auto", "issued", 8, None, None, D, D, None),
        ("square_ad_slot", "basic", "auto", "issued", 1, None, None, D, D, None),
        ("diamond_booth", "basic", "auto", "issued", 1, None, 5_000, D, D, None),
        ("case_showcase", "basic", "review", "available", 1, None, None, D, None, None),
    ],
    "LV3": [
        ("identity_tag", "basic", "auto", "issued", 1, None, None, D, D, None),
        ("extra_dispatch", "basic", "auto", "issued", 8, None, None, D, D, None),
        ("square_fixed_ad", "basic", "auto", "issued", 1, None, None, D, D, None),
        ("leaderboard_priority", "basic", "auto", "issued", 1, None, None, D, D, None),
        ("gold_booth", "basic", "auto", "issued", 1, None, 10_000, D, D, None),
        ("case_outreach", "basic", "auto", "issued", 1, None, 30_000, D, D, None),
        ("client_referral", "basic", "auto", "issued", 1, None, None, D, D, None),
        ("case_showcase", "basic", "review", "available", 1, None, None, D, None, None),
        ("guarantee_card", "basic", "claim", "available", 3, 150, 50, D, None, E180),
    ],
    "LV4": [
        ("identity_tag", "basic", "auto", "issued", 1, None, None, D, D, None),
        ("extra_dispatch", "basic", "auto", "issued", 8, None, None, D, D, None),
        ("square_fixed_ad", "basic", "auto", "issued", 1, None, None, D, D, None),
        ("leaderboard_priority", "basic", "auto", "issued", 1, None, None, D, D, None),
        ("combo_booth", "basic", "auto", "issued", 1, None, 30_000, D, D, None),
        ("case_outreach", "basic", "auto", "issued", 1, None, 80_000, D, D, None),
        ("client_referral", "basic", "auto", "issued", 3, None, None, D, D, None),
        ("case_showcase", "basic", "review", "available", 1, None, None, D, None, None),
        ("ops_community", "basic", "claim", "available", 1, None, None, D, None, None),
        ("gala_guest", "basic", "claim", "available", 1, None, None, D, None, None),
        ("honorary_lecturer", "basic", "claim", "available", 1, None, None, D, None, None),
        ("guarantee_card", "basic", "claim", "available", 4, 200, 50, D, None, E180),
    ],
}


@pytest.mark.parametrize("level", ["LV1", "LV2", "LV3", "LV4"])
def test_entering_a_creator_level_makes_exactly_its_basic_benefits_due(world, level):
    creator(world, "c", level)  # reward tasks not met (too few orders)
    summary = world.evaluate("creator", D)
    got = items(world, "c")
    assert sorted(row(i) for i in got) == sorted(BASIC[level])
    assert summary.benefits_issued == len(BASIC[level])
    assert {(i.level, i.tenure, i.program_key, i.closed_on) for i in got} == {(level, D, "creator", None)}
    periods = {i.benefit_key: i.period for i in got}
    assert periods["identity_tag"] == f"{level}@2026-06-30"
    assert periods["extra_dispatch"] == f"{level}@2026-06-30#0"


def test_guarantee_card_is_worth_50_a_card(world):
    creator(world, "c", "LV4")
    world.evaluate("creator", D)
    [card] = items(world, "c", benefit_key="guarantee_card")
    assert (card.quantity, card.value, card.amount) == (4, 50, 4 * 50)
    assert card.expires_on == card.due_on + dt.timedelta(days=180) == dt.date(2026, 12, 27)


def test_lv3_client_referral_is_one_basic_item(world):
    creator(world, "c", "LV3")
    world.evaluate("creator", D)
    assert [(i.tier, i.mode, i.state, i.quantity) for i in items(world, "c", benefit_key="client_referral")] == [
        ("basic", "auto", "issued", 1)]


MEMBER_D = dt.date(2026, 6, 15)  # not a quarter's last day: no rebate on entry

REGULAR = [("discount_90", "auto", "issued"), ("support_48h", "auto", "issued")]
SILVER = REGULAR + [("support_24h", "auto", "issued"), ("points_x1_2", "auto", "issued"),
                    ("priority_shipping", "auto", "issued")]
GOLD = SILVER + [("account_manager", "review", "available"), ("early_access", "auto", "issued")]
DIAMOND = GOLD + [("discount_70", "auto", "issued"), ("custom_goods", "claim", "available"),
                  ("data_report", "claim", "available"), ("event_priority", "claim", "available")]
PARTNER = DIAMOND + [("joint_branding", "claim", "available"), ("supply_guarantee", "auto", "issued"),
                     ("profit_share", "review", "available"), ("council_seat", "claim", "available")]


@pytest.mark.parametrize(
    ("spend", "level", "expected"),
    [(10, "regular", REGULAR), (500, "silver", SILVER), (2_000, "gold", GOLD), (6_001, "diamond", DIAMOND),
     (20_001, "partner", PARTNER)],
    ids=["regular", "silver", "gold", "diamond", "partner"],
)
def test_member_levels_inherit_the_benefits_of_the_levels_below(world, spend, level, expected):
    world.member("m", "member")
    world.add("m", "verified", FAR, 1)
    world.add("m", "purchase", MEMBER_D, spend)
    summary = world.evaluate("member", MEMBER_D)
    assert world.level("m", "member") == level
    got = items(world, "m")
    assert sorted((i.benefit_key, i.mode, i.state) for i in got) == sorted(expected)
    assert summary.benefits_issued == len(expected)
    assert {(i.tier, i.quantity, i.amount, i.due_on, i.level, i.tenure) for i in got} == {
        ("basic", 1, None, MEMBER_D, level, MEMBER_D)}
    assert all(i.issued_on == (MEMBER_D if i.mode == "auto" else None) for i in got)


# -- reward benefits -----------------------------------------------------------------------------

REWARD_TASKS = {"LV1": (3, 5_000), "LV2": (3, 20_000), "LV3": (6, 80_000), "LV4": (6, 150_000)}
REWARD = {
    "LV1": [("fanxing_priority", "reward", "claim", "available", 1, None, None, D, None, None)],
    "LV2": [
        ("guarantee_card", "reward", "claim", "available", 2, 100, 50, D, None, E180),
        ("fanxing_priority", "reward", "claim", "available", 1, None, None, D, None, None),
    ],
    "LV3": [
        ("guarantee_card", "reward", "claim", "available", 4, 200, 50, D, None, E180),
        ("client_referral", "reward", "auto", "issued", 2, None, None, D, D, None),
        ("fanxing_priority", "reward", "claim", "available", 1, None, None, D, None, None),
    ],
    "LV4": [
        ("guarantee_card", "reward", "claim", "available", 5, 250, 50, D, None, E180),
        ("client_referral", "reward", "auto", "issued", 5, None, None, D, D, None),
        ("fanxing_priority", "reward", "claim", "available", 1, None, None, D, None, None),
    ],
}


def reward_creator(world, level: str, orders: int, video_plays: float) -> None:
    """A creator of `level` posting live sessions, with one video 60 days ago (outside the
    30-day window, inside the 90-day one) and `orders` orders."""
    creator(world, "c", level, orders=orders, post_metric="live")
    world.add("c", "video", day(-60), video_plays)


@pytest.mark.parametrize("level", ["LV1", "LV2", "LV3", "LV4"])
def test_reward_benefits_are_due_when_the_reward_tasks_are_met(world, level):
    orders, plays = REWARD_TASKS[level]
    reward_creator(world, level, orders, plays + 1)
    summary = world.evaluate("creator", D)
    assert world.standing("c", "creator")["reward_tasks_met"] is True
    rewards = items(world, "c", tier="reward")
    assert sorted(row(i) for i in rewards) == sorted(REWARD[level])
    assert {i.period for i in rewards} == {f"{level}@2026-06-30/r0"}
    assert summary.benefits_issued == len(BASIC[level]) + len(REWARD[level])


@pytest.mark.parametrize("level", ["LV1", "LV2", "LV3", "LV4"])
def test_no_reward_benefits_while_the_reward_tasks_are_not_met(world, level):
    orders, plays = REWARD_TASKS[level]
    reward_creator(world, level, orders - 1, plays + 1)
    world.evaluate("creator", D)
    assert world.standing("c", "creator")["reward_tasks_met"] is False
    assert items(world, "c", tier="reward") == []
    assert len(items(world, "c")) == len(BASIC[level])


def test_reward_benefits_once_per_90_day_cycle_of_the_tenure(world):
    """LV1 from D. Orders (3) arrive on D+10: reward met D+10 .. D+99, except D+30 .. D+39
    when no video is in the 90-day window (videos on D-60 and D+40)."""
    creator(world, "c", "LV1")
    sustain(world, "c", "LV1", [15, 35, 55, 75])
    world.add("c", "video", day(-60), 6_000)
    world.add("c", "video", day(40), 6_000)
    world.add("c", "order", day(10), 1, times=3)
    met = {}
    for offset in range(0, 96):
        world.evaluate("creator", day(offset))
        met[offset] = world.stored("c", "creator").reward_met
    assert world.level("c", "creator") == "LV1"
    assert [k for k, v in met.items() if not v] == [*range(0, 10), *range(30, 40)]
    rewards = items(world, "c", tier="reward")
    assert [(i.benefit_key, i.due_on, i.period, i.state) for i in rewards] == [
        ("fanxing_priority", day(10), "LV1@2026-06-30/r0", "available"),  # first met mid-cycle
        ("fanxing_priority", day(90), "LV1@2026-06-30/r1", "available"),  # next cycle starts D+90
    ]


def test_reward_benefits_only_for_cycles_in_which_the_tasks_are_met(world):
    """Met on D (cycle 0), not met through cycle 1 (D+90 .. D+179): only r0."""
    reward_creator(world, "LV1", 3, 5_001)
    for offset in (0, 60, 90, 120, 170):
        sustain(world, "c", "LV1", [offset - 1] if offset else [])
        world.evaluate("creator", day(offset))
        assert world.level("c", "creator") == "LV1"
    assert [(i.due_on, i.period) for i in items(world, "c", tier="reward")] == [(D, "LV1@2026-06-30/r0")]


# -- leaving a level -----------------------------------------------------------------------------


def test_leaving_a_level_revokes_open_items_and_expires_perks_but_claimed_items_stay(world):
    creator(world, "c", "LV3")
    world.evaluate("creator", D)
    mid = member_id(world, "c")
    [card] = items(world, "c", benefit_key="guarantee_card")
    [showcase] = items(world, "c", benefit_key="case_showcase")
    benefits_service.claim(world.s, mid, card.id, D)
    benefits_service.submit_review(world.s, mid, showcase.id, "our best case", D)
    world.s.commit()
    world.add("c", "courses_completed", day(1), 5)  # LV3 lost, LV2 kept
    summary = world.evaluate("creator", day(1))
    assert world.level("c", "creator") == "LV2"
    assert states(world, "c", level="LV3") == [
        ("identity_tag", "basic", "expired", day(1)),
        ("extra_dispatch", "basic", "expired", day(1)),
        ("square_fixed_ad", "basic", "expired", day(1)),
        ("leaderboard_priority", "basic", "expired", day(1)),
        ("gold_booth", "basic", "expired", day(1)),
        ("case_outreach", "basic", "expired", day(1)),
        ("client_referral", "basic", "expired", day(1)),
        ("case_showcase", "basic", "revoked", day(1)),  # pending_review: still open
        ("guarantee_card", "basic", "claimed", None),  # the creator's own
    ]
    assert sorted(row(i) for i in items(world, "c", level="LV2")) == sorted(
        r[:7] + (day(1), day(1) if r[8] else None, r[9]) for r in BASIC["LV2"])
    assert summary.benefits_issued == len(BASIC["LV2"])


def test_leaving_a_level_keeps_money_items(world):
    """A make-up (money: amount set) stays issued when the tenure ends; the perks expire."""
    creator(world, "c", "LV1")
    sustain(world, "c", "LV1", [15])
    for offset in (0, 29):
        world.evaluate("creator", day(offset))
    world.add("c", "tasks_enabled", day(30), 0)
    world.evaluate("creator", day(30))
    assert world.level("c", "creator") is None
    assert states(world, "c") == [
        ("identity_tag", "basic", "expired", day(30)),
        ("extra_dispatch", "basic", "expired", day(30)),
        ("square_booth", "basic", "expired", day(30)),
        ("dispatch_makeup", "basic", "issued", None),
    ]


def test_leaving_a_member_level_keeps_the_rebate(world):
    world.member("m", "member")
    world.add("m", "verified", FAR, 1)
    world.add("m", "purchase", "2026-06-01", 2_000)
    world.evaluate("member", "2026-06-01")  # gold (first rating: protected until 2026-08-29)
    world.evaluate("member", "2026-06-30")  # Q2's rebate: 1% of 2,000
    world.add("m", "verified", "2026-09-01", 0)
    world.evaluate("member", "2026-09-01")
    assert world.level("m", "member") is None
    got = {i.benefit_key: (i.state, i.closed_on, i.amount) for i in items(world, "m")}
    closed = dt.date(2026, 9, 1)
    assert got == {
        "discount_90": ("expired", closed, None),
        "support_48h": ("expired", closed, None),
        "support_24h": ("expired", closed, None),
        "points_x1_2": ("expired", closed, None),
        "priority_shipping": ("expired", closed, None),
        "account_manager": ("revoked", closed, None),
        "early_access": ("expired", closed, None),
        "quarterly_rebate": ("issued", None, 20.0),
    }


def test_reentering_a_level_later_gives_a_fresh_set(world):
    creator(world, "c", "LV2")
    world.evaluate("creator", D)
    world.add("c", "courses_completed", day(1), 4)
    world.evaluate("creator", day(1))
    world.add("c", "courses_completed", day(2), 5)
    summary = world.evaluate("creator", day(2))
    assert [(c.on, c.to_level) for c in world.changes("c", "creator")] == [(D, "LV2"), (day(1), "LV1"), (day(2), "LV2")]
    assert summary.benefits_issued == len(BASIC["LV2"])
    lv2 = items(world, "c", level="LV2")
    assert [(i.benefit_key, i.tenure, i.state, i.closed_on) for i in lv2] == [
        ("identity_tag", D, "expired", day(1)),
        ("extra_dispatch", D, "expired", day(1)),
        ("square_ad_slot", D, "expired", day(1)),
        ("diamond_booth", D, "expired", day(1)),
        ("case_showcase", D, "revoked", day(1)),
        ("identity_tag", day(2), "issued", None),
        ("extra_dispatch", day(2), "issued", None),
        ("square_ad_slot", day(2), "issued", None),
        ("diamond_booth", day(2), "issued", None),
        ("case_showcase", day(2), "available", None),
    ]
    assert [i.period for i in lv2 if i.benefit_key == "extra_dispatch"] == ["LV2@2026-06-30#0", "LV2@2026-07-02#0"]
    assert {(i.benefit_key, i.state, i.closed_on) for i in items(world, "c", level="LV1")} == {
        ("identity_tag", "expired", day(2)), ("extra_dispatch", "expired", day(2)), ("square_booth", "expired", day(2))}


def test_blacklisting_revokes_open_items_and_perks(world):
    M = 1_000_000
    world.member("c", "music")
    world.member("ops", role="staff")
    world.add("c", "monthly_plays", "2026-01-15", 200 * M)  # grade A
    world.evaluate("music", "2026-01-31")
    assert [(i.benefit_key, i.mode, i.state) for i in items(world, "c")] == [
        ("dedicated_ops", "auto", "issued"), ("budget_priority", "auto", "issued"), ("custom_plan", "review", "available")]
    benefits_service.grant(world.s, "c", "welcome_pack", "music", "kick-off", "ops", dt.date(2026, 2, 1))
    world.s.commit()
    world.add("c", "monthly_plays", "2026-02-15", 200 * M)
    world.rows("c", "violation", ["2026-02-10", "2026-02-20"])
    summary = world.evaluate("music", "2026-02-28")
    assert summary.blacklisted == 1
    feb = dt.date(2026, 2, 28)
    assert states(world, "c") == [
        ("dedicated_ops", "basic", "revoked", feb),
        ("budget_priority", "basic", "revoked", feb),
        ("custom_plan", "basic", "revoked", feb),
        ("welcome_pack", "grant", "issued", None),  # a staff grant is not the grade's
    ]
    world.evaluate("music", "2026-03-31")  # still blacklisted: nothing new
    assert len(items(world, "c")) == 4


# -- extra_dispatch and dispatch_makeup ----------------------------------------------------------


@pytest.mark.parametrize(("level", "quota"), [("LV1", 4), ("LV2", 8), ("LV3", 8), ("LV4", 8)])
def test_extra_dispatch_quota_is_due_every_30_days_of_the_tenure(world, level, quota):
    creator(world, "c", level)
    sustain(world, "c", level, [20, 45])
    for offset in (0, 15, 29, 30, 59, 60):
        world.evaluate("creator", day(offset))
        assert world.level("c", "creator") == level
    got = items(world, "c", benefit_key="extra_dispatch")
    assert [(i.due_on, i.issued_on, i.quantity, i.state, i.period) for i in got] == [
        (D, D, quota, "issued", f"{level}@2026-06-30#0"),
        (day(30), day(30), quota, "issued", f"{level}@2026-06-30#1"),
        (day(60), day(60), quota, "issued", f"{level}@2026-06-30#2"),
    ]


def test_dispatch_makeup_on_the_last_day_of_each_30_day_period(world):
    """LV1 (quota 4) from D. Period #0 = D .. D+29: 2 dispatches; #1 = D+30 .. D+59: 4."""
    creator(world, "c", "LV1")
    sustain(world, "c", "LV1", [20, 45])
    world.rows("c", "dispatch", [day(-1)])  # before the tenure: outside period #0
    world.rows("c", "dispatch", [day(3), day(29)])
    world.rows("c", "dispatch", [day(30), day(31), day(40), day(59)])
    daily(world, "creator", D, day(28))
    assert items(world, "c", benefit_key="dispatch_makeup") == []
    daily(world, "creator", day(29), day(62))
    assert world.level("c", "creator") == "LV1"
    got = items(world, "c", benefit_key="dispatch_makeup")
    assert [row(i) + (i.period, i.level) for i in got] == [
        ("dispatch_makeup", "basic", "auto", "issued", 2, 40, None, day(29), day(29), None, "LV1@2026-06-30#0", "LV1"),
    ]  # none for period #1: its quota was met


@pytest.mark.parametrize(("dispatches", "missing"), [(0, 8), (3, 5), (7, 1), (8, 0), (10, 0)])
def test_dispatch_makeup_quantity_is_quota_minus_dispatches_at_lv2(world, dispatches, missing):
    creator(world, "c", "LV2")
    sustain(world, "c", "LV2", [20])
    world.add("c", "dispatch", day(10), 1, times=dispatches)
    world.evaluate("creator", D)
    world.evaluate("creator", day(29))
    got = [(i.quantity, i.amount, i.due_on) for i in items(world, "c", benefit_key="dispatch_makeup")]
    assert got == ([(missing, 20 * missing, day(29))] if missing else [])


# -- quarterly rebate ----------------------------------------------------------------------------

Q3_END = dt.date(2026, 9, 30)


def rebate_member(world, level: str) -> None:
    """A member of `level` as of 2026-09-30. Purchases: Q3 (counted) plus 2026-06-30 (Q2)
    and 2026-10-01 (Q4), which are not."""
    world.member("m", "member")
    world.add("m", "verified", FAR, 1)
    world.add("m", "purchase", "2026-06-30", 1_000)
    world.add("m", "purchase", "2026-10-01", 7)
    if level == "silver":
        world.rows("m", "purchase", ["2026-07-01", "2026-09-30"], 250)  # Q3 500
    elif level == "gold":
        world.rows("m", "referral", ["2026-01-01"] * 5)
        world.rows("m", "purchase", ["2026-07-01", "2026-09-30"], 250)  # Q3 500
    elif level == "diamond":
        world.add("m", "enterprise", FAR, 1)  # diamond by an enterprise's 30-day spend over 3,000
        world.add("m", "purchase", "2026-07-01", 998)
        world.add("m", "purchase", "2026-09-15", 3_001)
        world.add("m", "purchase", "2026-09-30", 1)  # Q3 4,000
    else:
        world.add("m", "purchase", "2026-07-01", 20_001)
        world.add("m", "purchase", "2026-09-30", 999)  # Q3 21,000


@pytest.mark.parametrize(("level", "amount"), [("gold", 5.0), ("diamond", 80.0), ("partner", 630.0)])
def test_quarterly_rebate_is_a_percentage_of_the_quarter_spend(world, level, amount):
    rebate_member(world, level)
    world.evaluate("member", Q3_END - dt.timedelta(days=1))
    assert items(world, "m", benefit_key="quarterly_rebate") == []
    summary = world.evaluate("member", Q3_END)
    assert world.level("m", "member") == level
    assert summary.benefits_issued == 1
    [rebate] = items(world, "m", benefit_key="quarterly_rebate")
    assert row(rebate) == ("quarterly_rebate", "basic", "auto", "issued", 1, amount, None, dt.date(2026, 10, 1),
                           dt.date(2026, 10, 1), None)
    assert (rebate.period, rebate.level) == ("2026Q3", level)
    before = count_items(world)
    assert world.evaluate("member", Q3_END).benefits_issued == 0  # a re-run: once
    assert world.evaluate("member", "2026-10-01").benefits_issued == 0
    assert count_items(world) == before
    assert len(items(world, "m", benefit_key="quarterly_rebate")) == 1


@pytest.mark.parametrize("level", ["silver", "regular"])
def test_no_rebate_below_gold(world, level):
    world.member("m", "member")
    world.add("m", "verified", FAR, 1)
    world.rows("m", "purchase", ["2026-07-01", "2026-09-30"], 250 if level == "silver" else 100)
    world.evaluate("member", Q3_END)
    assert world.level("m", "member") == level
    assert items(world, "m", benefit_key="quarterly_rebate") == []


def test_no_rebate_except_on_a_quarter_last_day(world):
    rebate_member(world, "partner")
    for as_of in ("2026-07-31", "2026-08-31", "2026-09-29", "2026-10-01", "2026-10-31"):
        world.evaluate("member", as_of)
    assert items(world, "m", benefit_key="quarterly_rebate") == []


# -- idempotency ---------------------------------------------------------------------------------


def test_rerunning_any_date_issues_nothing_twice(world):
    """LV1 -> LV2 on D+10, a make-up due on D+39, a reward on D+20; every date run twice."""
    creator(world, "c", "LV2", submissions=0, orders=3)
    sustain(world, "c", "LV2", [15, 35])
    world.add("c", "submission_task", day(10), 1)
    world.add("c", "video", day(20), 30_000)  # LV2's reward: 3 orders and a 20,000+ video average
    issued = []
    for offset in range(0, 42):
        first = world.evaluate("creator", day(offset))
        rows, notes = count_items(world), count_notes(world)
        again = world.evaluate("creator", day(offset))
        assert again.benefits_issued == 0, offset
        assert (count_items(world), count_notes(world)) == (rows, notes), offset
        issued.append(first.benefits_issued)
    assert sum(issued) == count_items(world)
    assert [(c.on, c.to_level) for c in world.changes("c", "creator")] == [(D, "LV1"), (day(10), "LV2")]
    got = {(i.benefit_key, i.tier, i.due_on) for i in items(world, "c", level="LV2")}
    assert got == {
        ("identity_tag", "basic", day(10)), ("extra_dispatch", "basic", day(10)), ("square_ad_slot", "basic", day(10)),
        ("diamond_booth", "basic", day(10)), ("case_showcase", "basic", day(10)),
        ("guarantee_card", "reward", day(20)), ("fanxing_priority", "reward", day(20)),
        ("extra_dispatch", "basic", day(40)), ("dispatch_makeup", "basic", day(39)),
    }


def test_summary_counts_new_rows_only(world):
    creator(world, "c", "LV1")
    sustain(world, "c", "LV1", [20])
    assert world.evaluate("creator", D).benefits_issued == 3
    assert world.evaluate("creator", D).benefits_issued == 0
    assert world.evaluate("creator", day(1)).benefits_issued == 0
    assert world.evaluate("creator", day(29)).benefits_issued == 1  # the make-up
    assert count_items(world) == 4


# -- expiry --------------------------------------------------------------------------------------


def test_guarantee_card_expires_on_day_180_not_before(world):
    """LV3 on D with a basic card (3) due D; the level kept (data renewed) until D+180."""
    creator(world, "c", "LV3")
    world.evaluate("creator", D)
    sustain(world, "c", "LV3", [170])
    world.add("c", "order", day(170), 1)
    world.evaluate("creator", day(179))
    assert world.level("c", "creator") == "LV3"
    [card] = items(world, "c", benefit_key="guarantee_card")
    assert (card.state, card.expires_on, card.closed_on) == ("available", day(180), None)
    world.evaluate("creator", day(180))
    assert world.level("c", "creator") == "LV3"
    [card] = items(world, "c", benefit_key="guarantee_card")
    assert (card.state, card.closed_on) == ("expired", day(180))


def test_a_claimed_card_expires_after_180_days_even_after_the_level_is_lost(world):
    creator(world, "c", "LV3")
    world.evaluate("creator", D)
    [card] = items(world, "c", benefit_key="guarantee_card")
    benefits_service.claim(world.s, member_id(world, "c"), card.id, day(2))
    world.s.commit()
    world.evaluate("creator", day(40))  # the posts are gone: unrated
    assert world.level("c", "creator") is None
    world.evaluate("creator", day(179))
    [card] = items(world, "c", benefit_key="guarantee_card")
    assert (card.state, card.claimed_on) == ("claimed", day(2))
    world.evaluate("creator", day(180))
    [card] = items(world, "c", benefit_key="guarantee_card")
    assert (card.state, card.closed_on) == ("expired", day(180))


# -- the standing JSON ---------------------------------------------------------------------------


def test_standing_lists_the_items(world):
    creator(world, "c", "LV3")
    world.evaluate("creator", D)
    sustain(world, "c", "LV3", [20])
    world.evaluate("creator", day(29))
    st = world.standing("c", "creator")
    listed = st["benefits"]
    assert len(listed) == len(BASIC["LV3"]) + 1  # the make-up of period #0
    assert listed[0] == {
        "id": listed[0]["id"], "key": "dispatch_makeup", "level": "LV3", "tier": "basic", "mode": "auto",
        "state": "issued", "quantity": 8, "amount": 160, "value": None, "due_on": "2026-07-29",
        "issued_on": "2026-07-29", "claimed_on": None, "expires_on": None, "review_note": None, "granted_by": None,
        "reason": None,
    }
    card = next(b for b in listed if b["key"] == "guarantee_card")
    assert {k: card[k] for k in ("tier", "mode", "state", "quantity", "amount", "value", "due_on", "expires_on")} == {
        "tier": "basic", "mode": "claim", "state": "available", "quantity": 3, "amount": 150, "value": 50,
        "due_on": "2026-06-30", "expires_on": "2026-12-27"}
    assert sorted(b["key"] for b in listed) == sorted([r[0] for r in BASIC["LV3"]] + ["dispatch_makeup"])


# -- re-runs that change or replay history (bugs found: see the reasons) ---------------------------


def test_a_same_day_rerun_that_undoes_the_change_undoes_its_ledger(world):
    creator(world, "c", "LV2", submissions=0)  # LV1 on D (LV2 lacks a submission task)
    world.evaluate("creator", D)
    world.add("c", "submission_task", day(1), 1)
    world.evaluate("creator", day(1))
    assert world.level("c", "creator") == "LV2"
    # a late import for D+1: 4 more posts without plays -> 12 posts averaging 10,000: not LV2
    world.add("c", "video", day(1), 0, times=4)
    world.evaluate("creator", day(1))
    assert world.level("c", "creator") == "LV1"
    assert [(c.on, c.to_level) for c in world.changes("c", "creator")] == [(D, "LV1")]  # the change is gone
    held = {(i.level, i.benefit_key) for i in items(world, "c") if i.state in ("issued", "available")}
    assert held == {("LV1", "identity_tag"), ("LV1", "extra_dispatch"), ("LV1", "square_booth")}


def test_evaluating_an_earlier_date_than_the_standings_is_refused(world):
    """Going back would rewrite the history after that date; a dry run may look at it."""
    from portal.engine.run import HistoryError

    creator(world, "c", "LV2")
    world.add("c", "courses_completed", day(3), 4)  # LV2 on D .. D+2, LV1 from D+3
    daily(world, "creator", D, day(5))
    rows = count_items(world)
    history = [(c.on, c.from_level, c.to_level) for c in world.changes("c", "creator")]
    assert history == [(D, None, "LV2"), (day(3), "LV2", "LV1")]
    with pytest.raises(HistoryError, match="already evaluated as of"):
        world.evaluate("creator", day(1))
    world.s.rollback()
    assert world.evaluate("creator", day(1), dry_run=True).evaluated == 1
    assert count_items(world) == rows
    assert [(c.on, c.from_level, c.to_level) for c in world.changes("c", "creator")] == history
    assert world.level("c", "creator") == "LV1"
