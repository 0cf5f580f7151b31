"""A year of daily evaluations (2026-01-01 .. 2026-12-31, 365 runs per program) of a small
scripted population, checked against expectations worked out by hand (PROGRAMS.md rules):
the level changes and their reasons, the extra_dispatch items (one per started 30-day period
of each tenure), the make-ups, the reward cycles, the guarantee cards expiring after 180
days, the quarterly rebates and the warnings before downgrades. Every month end is run twice
(the re-run issues nothing).

Creators (posts come in batches every 20 days from 2025-12-20, so every 30-day window - and
every 7-day forecast - sees at least one batch):
- ``steady``: LV1 all year; dispatches as scripted in STEADY_DISPATCHES.
- ``updown``: LV2; courses drop to 4 on 04-15 (LV1), back to 5 on 06-10 (LV2 again).
- ``lv3``: LV3 all year; reward tasks (6 orders in 90 days, videos > 80,000) met
  01-01..03-19 and 07-20..12-31.
- ``fade``: LV1; the last batch of posts is on 07-28, so LV1 is lost on 08-27.
Members:
- ``gold``: gold all year (5 referrals), rebates of 1%.
- ``diamond``: silver 01-01, diamond 02-01 (enterprise, 3,600 in 30 days), held by the
  protection period until 05-01, gold 05-02, regular 07-31.
- ``partner``: regular 01-01, partner 03-15 (20,001), silver 09-11, regular 11-16.
"""

from __future__ import annotations

import datetime as dt

from sqlalchemy import select

from portal.models import BenefitItem, Member, Notification

START, END = dt.date(2026, 1, 1), dt.date(2026, 12, 31)
SETUP = "2025-12-01"  # gauges read before the year starts


def at(text: str) -> dt.date:
    return dt.date.fromisoformat(text)


def every(first: str, days: int, last: str) -> list[dt.date]:
    out, on = [], at(first)
    while on <= at(last):
        out.append(on)
        on += dt.timedelta(days=days)
    return out


POST_BATCHES = every("2025-12-20", 20, "2026-12-31")  # 19 batches: 2025-12-20, 2026-01-09, ..., 2026-12-15

# -- the year, run day by day ----------------------------------------------------------------------


def run_year(world, program: str) -> dict[dt.date, int]:
    """Evaluate every day of 2026; month ends twice. Benefits issued per day."""
    issued: dict[dt.date, int] = {}
    on = START
    while on <= END:
        issued[on] = world.evaluate(program, on).benefits_issued
        if (on + dt.timedelta(days=1)).day == 1:
            assert world.evaluate(program, on).benefits_issued == 0, on
        on += dt.timedelta(days=1)
    return issued


def ledger(world, key: str, **where) -> list[BenefitItem]:
    world.s.expire_all()
    stmt = (select(BenefitItem).join(Member, Member.id == BenefitItem.member_id).where(Member.key == key)
            .order_by(BenefitItem.due_on, BenefitItem.id))
    for column, value in where.items():
        stmt = stmt.where(getattr(BenefitItem, column) == value)
    return list(world.s.scalars(stmt))


def notes(world, key: str, kind: str) -> list[Notification]:
    world.s.expire_all()
    return list(world.s.scalars(
        select(Notification).join(Member, Member.id == Notification.member_id)
        .where(Member.key == key, Notification.kind == kind).order_by(Notification.on, Notification.id)))


def changes(world, key: str, program: str) -> list[tuple]:
    return [(c.on.isoformat(), c.from_level, c.to_level) for c in world.changes(key, program)]


def reasons(world, key: str, program: str, on: str) -> list[tuple]:
    [change] = [c for c in world.changes(key, program) if c.on == at(on)]
    return [(r["level"], r["key"], r["actual"], r["op"], r["required"]) for r in change.reasons]


def warnings(world, key: str) -> list[tuple]:
    return [(n.on.isoformat(), n.payload["reason"], n.payload["to"], n.payload["by"])
            for n in notes(world, key, "downgrade_warning")]


def dispatch_items(world, key: str) -> list[tuple]:
    return [(i.level, i.due_on.isoformat(), i.quantity) for i in ledger(world, key, benefit_key="extra_dispatch")]


def makeups(world, key: str) -> list[tuple]:
    return [(i.due_on.isoformat(), i.quantity, i.amount, i.state) for i in ledger(world, key, benefit_key="dispatch_makeup")]


# -- creators --------------------------------------------------------------------------------------

STEADY_DISPATCHES = [  # by 30-day period of the tenure LV1@2026-01-01
    "2026-01-01", "2026-01-10", "2026-01-20", "2026-01-30",  # #0  01-01..01-30: 4
    "2026-01-31",  # #1  01-31..03-01: 1 -> 3 made up
    # #2  03-02..03-31: none -> 4 made up
    "2026-04-01", "2026-04-08", "2026-04-15", "2026-04-30",  # #3
    "2026-05-01", "2026-05-02", "2026-05-03", "2026-05-30",  # #4
    "2026-05-31", "2026-06-10", "2026-06-20", "2026-06-29",  # #5
    "2026-06-30", "2026-07-05", "2026-07-15", "2026-07-29",  # #6
    "2026-07-30", "2026-08-01", "2026-08-05", "2026-08-10", "2026-08-20", "2026-08-28",  # #7: 6
    "2026-08-29", "2026-09-05", "2026-09-15", "2026-09-27",  # #8
    "2026-09-28", "2026-10-05", "2026-10-15", "2026-10-27",  # #9
    "2026-10-28", "2026-11-26",  # #10 10-28..11-26: 2 -> 2 made up
    "2026-11-27", "2026-12-01", "2026-12-10", "2026-12-26",  # #11
    "2026-12-27",  # #12 (ends in 2027)
]
UPDOWN_DISPATCHES = [  # in the second LV2 tenure (from 2026-06-10)
    "2026-07-09",  # #0 06-10..07-09: 1 -> 7 made up
    "2026-07-10", "2026-07-11", "2026-07-12", "2026-07-13", "2026-08-05", "2026-08-06", "2026-08-07", "2026-08-08",  # #1: 8
    "2026-08-09", "2026-08-20", "2026-08-30", "2026-09-06", "2026-09-07",  # #2 08-09..09-07: 5 -> 3 made up
]


def lv1_basics(world, key: str) -> None:
    for gauge in ("profile_complete", "task_hall_visited", "tasks_enabled"):
        world.add(key, gauge, SETUP, 1)


def populate_creators(world) -> None:
    world.member("steady", "creator")
    lv1_basics(world, "steady")
    world.add("steady", "courses_completed", SETUP, 3)
    for on in POST_BATCHES:
        world.add("steady", "live", on, 100, times=5)
    world.rows("steady", "dispatch", STEADY_DISPATCHES)

    world.member("updown", "creator")
    lv1_basics(world, "updown")
    world.add("updown", "courses_completed", SETUP, 5)
    world.add("updown", "submission_task", SETUP, 1)
    world.add("updown", "courses_completed", "2026-04-15", 4)
    world.add("updown", "courses_completed", "2026-06-10", 5)
    for on in POST_BATCHES:
        world.add("updown", "live", on, 15_000, times=8)
    world.rows("updown", "dispatch", UPDOWN_DISPATCHES)

    world.member("lv3", "creator")
    lv1_basics(world, "lv3")
    for gauge, value in (("quote_set", 1), ("assistant_viewed", 1), ("courses_completed", 8), ("followers", 300_001),
                         ("credit_score", 50)):
        world.add("lv3", gauge, SETUP, value)
    world.add("lv3", "submission_task", SETUP, 1)
    for on in POST_BATCHES:
        world.add("lv3", "video", on, 90_000, times=20)
        world.add("lv3", "likes", on, 10_001)
    for on, n in (("2025-12-20", 6), ("2026-03-10", 1), ("2026-06-01", 1), ("2026-07-20", 5), ("2026-08-25", 6),
                  ("2026-11-10", 6)):
        world.add("lv3", "order", on, 1, times=n)

    world.member("fade", "creator")
    lv1_basics(world, "fade")
    world.add("fade", "courses_completed", SETUP, 3)
    for on in POST_BATCHES:
        if on <= at("2026-07-28"):
            world.add("fade", "live", on, 100, times=5)


LV1_STARTS = ["2026-01-01", "2026-01-31", "2026-03-02", "2026-04-01", "2026-05-01", "2026-05-31", "2026-06-30",
              "2026-07-30", "2026-08-29", "2026-09-28", "2026-10-28", "2026-11-27", "2026-12-27"]
LAST_DAYS = ["2026-01-30", "2026-03-01", "2026-03-31", "2026-04-30", "2026-05-30", "2026-06-29", "2026-07-29",
             "2026-08-28", "2026-09-27", "2026-10-27", "2026-11-26", "2026-12-26"]


def test_creators_over_2026(world):
    populate_creators(world)
    issued = run_year(world, "creator")

    # -- levels and their changes, with reasons
    assert changes(world, "steady", "creator") == [("2026-01-01", None, "LV1")]
    assert changes(world, "lv3", "creator") == [("2026-01-01", None, "LV3")]
    assert changes(world, "updown", "creator") == [
        ("2026-01-01", None, "LV2"), ("2026-04-15", "LV2", "LV1"), ("2026-06-10", "LV1", "LV2")]
    assert reasons(world, "updown", "creator", "2026-04-15") == [("LV2", "courses_completed", 4, ">=", 5)]
    assert changes(world, "fade", "creator") == [("2026-01-01", None, "LV1"), ("2026-08-27", "LV1", None)]
    assert reasons(world, "fade", "creator", "2026-08-27") == [("LV1", "posts_30d", 0, ">=", 5)]
    [down] = notes(world, "fade", "level_down")
    assert (down.on, down.payload["to"]) == (at("2026-08-27"), None)

    # -- extra_dispatch: one item per started 30-day period of each tenure
    assert dispatch_items(world, "steady") == [("LV1", on, 4) for on in LV1_STARTS]  # 13
    assert dispatch_items(world, "lv3") == [("LV3", on, 8) for on in LV1_STARTS]  # 13
    assert dispatch_items(world, "updown") == [
        ("LV2", "2026-01-01", 8), ("LV2", "2026-01-31", 8), ("LV2", "2026-03-02", 8), ("LV2", "2026-04-01", 8),
        ("LV1", "2026-04-15", 4), ("LV1", "2026-05-15", 4),
        ("LV2", "2026-06-10", 8), ("LV2", "2026-07-10", 8), ("LV2", "2026-08-09", 8), ("LV2", "2026-09-08", 8),
        ("LV2", "2026-10-08", 8), ("LV2", "2026-11-07", 8), ("LV2", "2026-12-07", 8),
    ]
    assert dispatch_items(world, "fade") == [("LV1", on, 4) for on in LV1_STARTS[:8]]  # 01-01 .. 07-30

    # -- make-ups on each completed period's last day: 20 per missing dispatch
    assert makeups(world, "steady") == [
        ("2026-03-01", 3, 60, "issued"), ("2026-03-31", 4, 80, "issued"), ("2026-11-26", 2, 40, "issued")]
    assert makeups(world, "updown") == [
        ("2026-01-30", 8, 160, "issued"), ("2026-03-01", 8, 160, "issued"), ("2026-03-31", 8, 160, "issued"),
        # the period from 04-01 was cut short by the downgrade on 04-15: no make-up
        ("2026-05-14", 4, 80, "issued"),  # LV1 period 04-15..05-14; 05-15.. cut short on 06-10
        ("2026-07-09", 7, 140, "issued"), ("2026-09-07", 3, 60, "issued"), ("2026-10-07", 8, 160, "issued"),
        ("2026-11-06", 8, 160, "issued"), ("2026-12-06", 8, 160, "issued"),
    ]
    assert makeups(world, "lv3") == [(on, 8, 160, "issued") for on in LAST_DAYS]  # no dispatches at all
    assert makeups(world, "fade") == [(on, 4, 80, "issued") for on in LAST_DAYS[:7]]  # kept after the level went

    # -- reward benefits of lv3: cycles from 01-01, 04-01, 06-30, 09-28, 12-27; met in all but the second
    rewards = [(i.benefit_key, i.due_on.isoformat(), i.period, i.quantity) for i in ledger(world, "lv3", tier="reward")]
    assert rewards == [
        (key, on, f"LV3@2026-01-01/r{cycle}", qty)
        for on, cycle in (("2026-01-01", 0), ("2026-07-20", 2), ("2026-09-28", 3), ("2026-12-27", 4))
        for key, qty in (("guarantee_card", 4), ("client_referral", 2), ("fanxing_priority", 1))
    ]
    assert [k for k in ("steady", "updown", "fade") if ledger(world, k, tier="reward")] == []

    # -- guarantee cards: 180 days after they are due they expire
    cards = [(i.tier, i.due_on.isoformat(), i.expires_on.isoformat(), i.state, i.closed_on and i.closed_on.isoformat(),
              i.amount) for i in ledger(world, "lv3", benefit_key="guarantee_card")]
    assert cards == [
        ("basic", "2026-01-01", "2026-06-30", "expired", "2026-06-30", 150),
        ("reward", "2026-01-01", "2026-06-30", "expired", "2026-06-30", 200),
        ("reward", "2026-07-20", "2027-01-16", "available", None, 200),
        ("reward", "2026-09-28", "2027-03-27", "available", None, 200),
        ("reward", "2026-12-27", "2027-06-25", "available", None, 200),
    ]
    expiring = [(n.on.isoformat(), n.payload["expires_on"]) for n in notes(world, "lv3", "benefit_expiring")]
    assert expiring == [("2026-06-23", "2026-06-30"), ("2026-06-23", "2026-06-30")]

    # -- tenures closed: perks expired, open items revoked, on the day of the change
    first_lv2 = {(i.benefit_key, i.state, i.closed_on.isoformat())
                 for i in ledger(world, "updown", level="LV2") if i.tenure == START and i.benefit_key != "dispatch_makeup"}
    assert first_lv2 == {("identity_tag", "expired", "2026-04-15"), ("extra_dispatch", "expired", "2026-04-15"),
                         ("square_ad_slot", "expired", "2026-04-15"), ("diamond_booth", "expired", "2026-04-15"),
                         ("case_showcase", "revoked", "2026-04-15")}
    assert {i.state for i in ledger(world, "updown", level="LV1") if i.benefit_key != "dispatch_makeup"} == {"expired"}
    assert {(i.benefit_key, i.state) for i in ledger(world, "updown", tenure=at("2026-06-10"))
            if i.benefit_key not in ("extra_dispatch", "dispatch_makeup")} == {
        ("identity_tag", "issued"), ("square_ad_slot", "issued"), ("diamond_booth", "issued"),
        ("case_showcase", "available")}
    assert {(i.benefit_key, i.state, i.closed_on) for i in ledger(world, "fade") if i.benefit_key != "dispatch_makeup"} == {
        ("identity_tag", "expired", at("2026-08-27")), ("square_booth", "expired", at("2026-08-27")),
        ("extra_dispatch", "expired", at("2026-08-27"))}

    # -- totals: 18 + 32 + 45 + 17 rows, each issued once
    totals = {k: len(ledger(world, k)) for k in ("steady", "updown", "lv3", "fade")}
    assert totals == {"steady": 13 + 2 + 3, "updown": 13 + 10 + 9, "lv3": 13 + 8 + 12 + 12, "fade": 8 + 2 + 7}
    assert sum(issued.values()) == 112
    assert issued[START] == 3 + 5 + 9 + 3 + 3  # entry sets (+ lv3's three reward items)

    # -- warnings: only fade's posts run out (its first warning 7 days ahead, again the next ISO week)
    assert warnings(world, "fade") == [("2026-08-20", "forecast", None, "2026-08-27"),
                                       ("2026-08-24", "forecast", None, "2026-08-31")]
    assert [k for k in ("steady", "updown", "lv3") if warnings(world, k)] == []


# -- members ---------------------------------------------------------------------------------------


def populate_members(world) -> None:
    world.member("gold", "member")
    world.add("gold", "verified", SETUP, 1)
    world.rows("gold", "referral", ["2025-11-01"] * 5)
    for on, amount in (("2025-12-15", 300), ("2026-02-10", 1_000), ("2026-05-05", 500), ("2026-06-30", 700),
                       ("2026-10-01", 2_500)):
        world.add("gold", "purchase", on, amount)

    world.member("diamond", "member")
    world.add("diamond", "verified", SETUP, 1)
    world.add("diamond", "enterprise", SETUP, 1)
    world.add("diamond", "purchase", "2025-12-20", 600)
    world.add("diamond", "purchase", "2026-02-01", 3_600)

    world.member("partner", "member")
    world.add("partner", "verified", SETUP, 1)
    for on, amount in (("2025-12-01", 100), ("2026-03-15", 20_001), ("2026-05-20", 1_000)):
        world.add("partner", "purchase", on, amount)


REGULAR = ["discount_90", "support_48h"]
SILVER = REGULAR + ["support_24h", "points_x1_2", "priority_shipping"]
GOLD = SILVER + ["account_manager", "early_access"]
DIAMOND = GOLD + ["discount_70", "custom_goods", "data_report", "event_priority"]
PARTNER = DIAMOND + ["joint_branding", "supply_guarantee", "profit_share", "council_seat"]


def test_members_over_2026(world):
    populate_members(world)
    issued = run_year(world, "member")

    # -- levels, with the protection period and reasons
    assert changes(world, "gold", "member") == [("2026-01-01", None, "gold")]
    assert changes(world, "diamond", "member") == [
        ("2026-01-01", None, "silver"), ("2026-02-01", "silver", "diamond"),
        ("2026-05-02", "diamond", "gold"),  # promoted 02-01: protected through 05-01
        ("2026-07-31", "gold", "regular"),  # 02-01's 3,600 leaves the 180-day window
    ]
    assert reasons(world, "diamond", "member", "2026-05-02") == [
        ("diamond", "spend_180d", 4_200, ">=", 5_000),
        ("diamond", "spend_180d_monthly", 700, ">", 1_000),
        ("diamond", "spend_30d", 0, ">", 3_000),
    ]
    assert reasons(world, "diamond", "member", "2026-07-31") == [
        ("silver", "spend_180d", 0, ">=", 500), ("silver", "purchases_30d", 0, ">=", 3),
        ("gold", "spend_180d", 0, ">=", 2_000), ("gold", "referrals", 0, ">=", 5),
    ]
    assert changes(world, "partner", "member") == [
        ("2026-01-01", None, "regular"), ("2026-03-15", "regular", "partner"),
        ("2026-09-11", "partner", "silver"),  # 03-15's 20,001 leaves the 180-day window
        ("2026-11-16", "silver", "regular"),  # and 05-20's 1,000
    ]
    partner_down = reasons(world, "partner", "member", "2026-09-11")
    assert [(r[0], r[1]) for r in partner_down] == [
        ("gold", "spend_180d"), ("gold", "referrals"),
        ("diamond", "spend_180d"), ("diamond", "spend_180d_monthly"), ("diamond", "enterprise"), ("diamond", "spend_30d"),
        ("partner", "spend_180d"), ("partner", "spend_365d"),
    ]
    assert partner_down[0][2] == 1_000 and partner_down[-1][2] == 21_101
    assert reasons(world, "partner", "member", "2026-11-16") == [
        ("silver", "spend_180d", 0, ">=", 500), ("silver", "purchases_30d", 0, ">=", 3)]

    # -- quarterly rebates: as of each quarter's last day, issued the next day
    rebates = {k: [(i.period, i.level, i.amount, i.due_on.isoformat(), i.issued_on.isoformat(), i.state)
                   for i in ledger(world, k, benefit_key="quarterly_rebate")] for k in ("gold", "diamond", "partner")}
    assert rebates == {
        "gold": [("2026Q1", "gold", 10.0, "2026-04-01", "2026-04-01", "issued"),  # 1% of 1,000
                 ("2026Q2", "gold", 12.0, "2026-07-01", "2026-07-01", "issued"),  # 1% of 500 + 700
                 # Q3: no spend, no rebate
                 ("2026Q4", "gold", 25.0, "2027-01-01", "2027-01-01", "issued")],  # 1% of 2,500
        "diamond": [("2026Q1", "diamond", 72.0, "2026-04-01", "2026-04-01", "issued")],  # 2% of 3,600; Q2 gold, no spend
        "partner": [("2026Q1", "partner", 600.03, "2026-04-01", "2026-04-01", "issued"),  # 3% of 20,001
                    ("2026Q2", "partner", 30.0, "2026-07-01", "2026-07-01", "issued")],  # 3% of 1,000; Q3/Q4 below gold
    }

    # -- entry sets per tenure, and which of them are still the member's
    def tenures(key: str) -> list[tuple]:
        out: dict[tuple, list[str]] = {}
        for i in ledger(world, key):
            if i.benefit_key != "quarterly_rebate":
                out.setdefault((i.level, i.tenure.isoformat()), []).append(i.benefit_key)
        return [(lv, since, sorted(keys)) for (lv, since), keys in out.items()]

    assert tenures("gold") == [("gold", "2026-01-01", sorted(GOLD))]
    assert tenures("diamond") == [("silver", "2026-01-01", sorted(SILVER)), ("diamond", "2026-02-01", sorted(DIAMOND)),
                                  ("gold", "2026-05-02", sorted(GOLD)), ("regular", "2026-07-31", sorted(REGULAR))]
    assert tenures("partner") == [("regular", "2026-01-01", sorted(REGULAR)), ("partner", "2026-03-15", sorted(PARTNER)),
                                  ("silver", "2026-09-11", sorted(SILVER)), ("regular", "2026-11-16", sorted(REGULAR))]
    current = {(i.benefit_key, i.state) for i in ledger(world, "diamond") if i.state in ("issued", "available")}
    assert current == {("discount_90", "issued"), ("support_48h", "issued"), ("quarterly_rebate", "issued")}
    closed = {(i.level, i.benefit_key): (i.state, i.closed_on.isoformat())
              for i in ledger(world, "diamond") if i.level == "diamond" and i.closed_on}
    assert closed[("diamond", "custom_goods")] == ("revoked", "2026-05-02")
    assert closed[("diamond", "account_manager")] == ("revoked", "2026-05-02")
    assert closed[("diamond", "discount_70")] == ("expired", "2026-05-02")
    assert len(closed) == len(DIAMOND)  # the whole set closed on 05-02; only the rebate is left
    assert {(i.benefit_key, i.state) for i in ledger(world, "gold")} == {
        *((k, "available" if k == "account_manager" else "issued") for k in GOLD), ("quarterly_rebate", "issued")}

    totals = {k: len(ledger(world, k)) for k in ("gold", "diamond", "partner")}
    assert totals == {"gold": 7 + 3, "diamond": 5 + 11 + 1 + 7 + 2, "partner": 2 + 15 + 2 + 5 + 2}
    assert sum(issued.values()) == 10 + 26 + 26

    # -- warnings before downgrades
    assert warnings(world, "diamond") == [
        ("2026-04-25", "protection_ends", "gold", "2026-05-02"),  # once, 7 days before
        ("2026-07-24", "forecast", "regular", "2026-07-31"),
        ("2026-07-27", "forecast", "regular", "2026-08-03"),  # a new ISO week
    ]
    assert warnings(world, "partner") == [
        ("2026-09-04", "forecast", "silver", "2026-09-11"),
        ("2026-09-07", "forecast", "silver", "2026-09-14"),
        ("2026-11-09", "forecast", "regular", "2026-11-16"),
    ]
    assert warnings(world, "gold") == []
    levels_up = [(n.on.isoformat(), n.payload["to"]) for n in notes(world, "diamond", "level_up")]
    levels_down = [(n.on.isoformat(), n.payload["to"]) for n in notes(world, "diamond", "level_down")]
    assert (levels_up, levels_down) == ([("2026-01-01", "silver"), ("2026-02-01", "diamond")],
                                        [("2026-05-02", "gold"), ("2026-07-31", "regular")])
