"""What an evaluation tells the member (portal/engine/notices.py, run.py's ledger writer and
``expire_items``): level up / down (with reasons), a notification per new benefit item, a
week's notice before an item expires, blacklisting, and warnings *before* a downgrade:

- member (90-day protection): ``protection_ends`` while protected and the data supports a
  lower level, from 7 days before the downgrade can happen (promoted_on + 90);
- music (two months in a row): ``consecutive`` on the first month below the grade;
- creator: ``forecast`` when, with no new data, a basic task fails as of D+7.

Every notification has a dedup key, so re-running a date sends nothing twice.
"""

from __future__ import annotations

import datetime as dt
import json

from sqlalchemy import func, select

from portal.models import Member, Notification
from portal.services import benefits as benefits_service
from tests.engine.test_creator import D, creator, day
from tests.engine.test_ledger import daily, items, member_id, sustain
from tests.engine.test_member import buy, member

M = 1_000_000


def notes(world, key: str, kind: str | None = None) -> list[Notification]:
    world.s.expire_all()
    stmt = (select(Notification).join(Member, Member.id == Notification.member_id).where(Member.key == key)
            .order_by(Notification.id))
    if kind:
        stmt = stmt.where(Notification.kind == kind)
    return list(world.s.scalars(stmt))


def count_notes(world) -> int:
    return world.s.scalar(select(func.count()).select_from(Notification))


def brief(rows: list[dict]) -> list[tuple]:
    return [(r["level"], r["key"], r["actual"], r["op"], r["required"]) for r in rows]


def warnings(world, key: str) -> list[tuple]:
    return [(n.on, n.payload["reason"], n.payload["level"], n.payload["to"], n.payload["by"])
            for n in notes(world, key, "downgrade_warning")]


# -- level up / level down -----------------------------------------------------------------------


def test_level_up_notification(world):
    creator(world, "c", "LV2")
    world.evaluate("creator", D)
    [n] = notes(world, "c", "level_up")
    assert (n.program_key, n.on, n.payload) == ("creator", D, {"from": None, "to": "LV2"})
    world.add("c", "courses_completed", day(1), 10)
    world.add("c", "live", day(1), 80_000, times=20)  # 28 posts averaging 61,428
    world.add("c", "order", day(1), 1)
    for metric, value in (("followers", 300_001), ("likes", 10_001), ("credit_score", 50), ("quote_set", 1),
                          ("assistant_viewed", 1)):
        world.add("c", metric, day(1), value)
    world.evaluate("creator", day(1))
    assert [(n.on, n.payload) for n in notes(world, "c", "level_up")] == [
        (D, {"from": None, "to": "LV2"}), (day(1), {"from": "LV2", "to": "LV3"})]


def test_level_down_notification_carries_the_failed_requirements(world):
    creator(world, "c", "LV3")
    world.evaluate("creator", D)
    world.add("c", "courses_completed", day(1), 4)
    world.evaluate("creator", day(1))
    [n] = notes(world, "c", "level_down")
    assert (n.on, n.payload["from"], n.payload["to"]) == (day(1), "LV3", "LV1")
    assert brief(n.payload["reasons"]) == [("LV2", "courses_completed", 4, ">=", 5), ("LV3", "courses_completed", 4, ">=", 8)]
    assert n.payload["reasons"] == world.changes("c", "creator")[-1].reasons


def test_level_down_to_unrated(world):
    member(world)
    buy(world, "m", 10, on=dt.date(2026, 1, 5))
    world.evaluate("member", "2026-01-05")
    world.add("m", "verified", "2026-05-01", 0)  # past the first rating's protection
    world.evaluate("member", "2026-05-01")
    [n] = notes(world, "m", "level_down")
    assert (n.payload["from"], n.payload["to"], brief(n.payload["reasons"])) == (
        "regular", None, [("regular", "verified", 0, "=", 1)])


# -- a notification per new benefit item ----------------------------------------------------------


def test_benefit_issued_or_available_per_new_item(world):
    creator(world, "c", "LV3")
    world.evaluate("creator", D)
    got = {(n.kind, n.payload["benefit"], n.payload["quantity"], n.payload["amount"], n.on)
           for n in notes(world, "c") if n.kind.startswith("benefit_")}
    assert got == {
        ("benefit_issued", "identity_tag", 1, None, D),
        ("benefit_issued", "extra_dispatch", 8, None, D),
        ("benefit_issued", "square_fixed_ad", 1, None, D),
        ("benefit_issued", "leaderboard_priority", 1, None, D),
        ("benefit_issued", "gold_booth", 1, None, D),
        ("benefit_issued", "case_outreach", 1, None, D),
        ("benefit_issued", "client_referral", 1, None, D),
        ("benefit_available", "case_showcase", 1, None, D),
        ("benefit_available", "guarantee_card", 3, 150, D),
    }
    assert len(notes(world, "c")) == 9 + 1  # and level_up
    world.evaluate("creator", D)
    world.evaluate("creator", day(1))
    assert len(notes(world, "c")) == 10


def test_make_up_and_rebate_are_announced(world):
    creator(world, "c", "LV1")
    sustain(world, "c", "LV1", [20])
    world.evaluate("creator", D)
    world.evaluate("creator", day(29))
    [n] = [n for n in notes(world, "c", "benefit_issued") if n.payload["benefit"] == "dispatch_makeup"]
    assert (n.on, n.payload["quantity"], n.payload["amount"]) == (day(29), 4, 80)
    member(world)
    world.rows("m", "referral", ["2026-01-01"] * 5)  # gold
    buy(world, "m", 1_234, on=dt.date(2026, 8, 1))
    world.evaluate("member", "2026-09-30")
    [n] = [n for n in notes(world, "m", "benefit_issued") if n.payload["benefit"] == "quarterly_rebate"]
    assert (n.on, n.payload["level"], n.payload["amount"]) == (dt.date(2026, 9, 30), "gold", 12.34)


# -- a week's notice before an item expires --------------------------------------------------------


def test_benefit_expiring_seven_days_ahead_once(world):
    """LV3 on D: the basic guarantee card expires on D+180; the level is kept."""
    creator(world, "c", "LV3")
    world.evaluate("creator", D)
    sustain(world, "c", "LV3", [165])
    world.add("c", "order", day(165), 1)
    [card] = items(world, "c", benefit_key="guarantee_card")
    world.evaluate("creator", day(172))  # D+180 is 8 days away
    assert notes(world, "c", "benefit_expiring") == []
    world.evaluate("creator", day(173))
    for offset in (173, 174, 177, 179):
        world.evaluate("creator", day(offset))
        assert world.level("c", "creator") == "LV3"
        [n] = notes(world, "c", "benefit_expiring")
        assert (n.on, n.payload) == (day(173), {"item": card.id, "benefit": "guarantee_card",
                                                "expires_on": "2026-12-27", "state": "available"})
    world.evaluate("creator", day(180))
    assert len(notes(world, "c", "benefit_expiring")) == 1
    assert items(world, "c", benefit_key="guarantee_card")[0].state == "expired"


def test_a_claimed_card_is_announced_before_it_expires(world):
    creator(world, "c", "LV3")
    world.evaluate("creator", D)
    [card] = items(world, "c", benefit_key="guarantee_card")
    benefits_service.claim(world.s, member_id(world, "c"), card.id, day(1))
    world.s.commit()
    world.evaluate("creator", day(173))  # unrated by now; the claimed card is the creator's
    world.evaluate("creator", day(173))
    [n] = notes(world, "c", "benefit_expiring")
    assert (n.on, n.payload["state"], n.payload["expires_on"]) == (day(173), "claimed", "2026-12-27")


def test_no_expiry_notice_for_items_without_validity(world):
    creator(world, "c", "LV2")
    sustain(world, "c", "LV2", [20, 45, 70])
    daily(world, "creator", D, day(80))
    assert notes(world, "c", "benefit_expiring") == []


# -- blacklisting ----------------------------------------------------------------------------------


def test_blacklisted_notification_with_reasons(world):
    world.member("c", "music")
    world.add("c", "monthly_plays", "2026-01-15", 200 * M)
    world.evaluate("music", "2026-01-31")
    world.add("c", "monthly_plays", "2026-02-15", 200 * M)
    world.add("c", "zombie_fan_share", "2026-02-20", 0.4)
    world.evaluate("music", "2026-02-28")
    world.evaluate("music", "2026-02-28")
    world.evaluate("music", "2026-03-31")
    [n] = notes(world, "c", "blacklisted")
    assert n.on == dt.date(2026, 2, 28)
    assert [(r["key"], r["actual"], r["op"], r["required"]) for r in n.payload["reasons"]] == [
        ("zombie_fan_share", 0.4, ">=", 0.3)]
    assert notes(world, "c", "downgrade_warning") == []


# -- warnings before a downgrade: (a) the member program's protection period ----------------------

P = dt.date(2026, 2, 1)  # diamond promotion; from P+30 only gold's condition holds


def test_protection_ends_warning_from_seven_days_before_the_downgrade(world):
    member(world, "m", enterprise=1)
    buy(world, "m", 600, on=dt.date(2026, 1, 5))
    world.evaluate("member", "2026-01-05")  # silver (first rating)
    buy(world, "m", 3_600, on=P)
    member(world, "keep")  # diamond by spend: its data keeps diamond past P+90
    buy(world, "keep", 6_001, on=P)
    daily(world, "member", P, P + dt.timedelta(days=82))
    assert warnings(world, "m") == []  # protected, but the downgrade is more than 7 days away
    for offset in range(83, 90):
        world.evaluate("member", P + dt.timedelta(days=offset))
        world.evaluate("member", P + dt.timedelta(days=offset))
        assert world.level("m", "member") == "diamond"
    assert warnings(world, "m") == [(P + dt.timedelta(days=83), "protection_ends", "diamond", "gold", "2026-05-02")]
    [n] = notes(world, "m", "downgrade_warning")
    assert brief(n.payload["failing"]) == [
        ("diamond", "spend_180d", 4_200, ">=", 5_000),
        ("diamond", "spend_180d_monthly", 700, ">", 1_000),
        ("diamond", "spend_30d", 0, ">", 3_000),
    ]
    world.evaluate("member", "2026-05-02")  # promoted_on + 90
    assert world.level("m", "member") == "gold"
    [down] = notes(world, "m", "level_down")
    assert brief(down.payload["reasons"]) == brief(n.payload["failing"])
    assert world.level("keep", "member") == "diamond"
    assert notes(world, "keep", "downgrade_warning") == []


# -- (b) music: the first month below the grade ----------------------------------------------------


def test_consecutive_warning_on_the_first_month_below_the_grade(world):
    plays = {"down": [200 * M, 50 * M, 50 * M], "up": [50 * M, 200 * M, 200 * M], "same": [200 * M] * 3,
             "back": [200 * M, 50 * M, 200 * M]}
    for key in plays:
        world.member(key, "music")
    for i, as_of in enumerate(["2026-01-31", "2026-02-28", "2026-03-31"]):
        for key, by_month in plays.items():
            world.add(key, "monthly_plays", as_of[:8] + "15", by_month[i])
        world.evaluate("music", as_of)
        world.evaluate("music", as_of)
    assert warnings(world, "down") == [(dt.date(2026, 2, 28), "consecutive", "A", "B", "2026-03-31")]
    [n] = notes(world, "down", "downgrade_warning")
    assert brief(n.payload["failing"]) == [("A", "monthly_plays", 50 * M, ">=", 100 * M)]
    assert [(c.on, c.to_level) for c in world.changes("down", "music")] == [
        (dt.date(2026, 1, 31), "A"), (dt.date(2026, 3, 31), "B")]
    [down] = notes(world, "down", "level_down")
    assert (down.on, down.payload["from"], down.payload["to"]) == (dt.date(2026, 3, 31), "A", "B")
    assert warnings(world, "back") == [(dt.date(2026, 2, 28), "consecutive", "A", "B", "2026-03-31")]
    assert world.level("back", "music") == "A"
    assert warnings(world, "up") == []  # held back on the way up: nothing to warn about
    assert warnings(world, "same") == []


# -- (c) creator: a forecast with no new data ------------------------------------------------------


def test_forecast_warning_when_posts_would_leave_the_window(world):
    creator(world, "c", "LV1")  # 5 posts on D-5: the last day they count is D+24
    world.evaluate("creator", D)
    world.evaluate("creator", day(17))
    assert warnings(world, "c") == []  # D+24 is still fine
    world.evaluate("creator", day(18))
    world.evaluate("creator", day(18))
    assert warnings(world, "c") == [(day(18), "forecast", "LV1", None, "2026-07-25")]
    [n] = notes(world, "c", "downgrade_warning")
    assert brief(n.payload["failing"]) == [("LV1", "posts_30d", 0, ">=", 5)]
    assert n.payload["failing"][0]["window"] == "30d"
    world.evaluate("creator", day(19))  # same week: not repeated
    assert len(notes(world, "c", "downgrade_warning")) == 1
    world.evaluate("creator", day(25))
    assert world.level("c", "creator") is None
    assert brief(notes(world, "c", "level_down")[0].payload["reasons"]) == [("LV1", "posts_30d", 0, ">=", 5)]


def test_forecast_names_only_the_requirements_that_fail(world):
    creator(world, "c", "LV3")  # likes on D-5 only; posts renewed on D+10
    world.add("c", "live", day(10), 60_000, times=20)
    world.evaluate("creator", D)
    world.evaluate("creator", day(18))
    assert warnings(world, "c") == [(day(18), "forecast", "LV3", "LV2", "2026-07-25")]
    [n] = notes(world, "c", "downgrade_warning")
    assert brief(n.payload["failing"]) == [("LV3", "likes_30d", 0, ">", 10_000)]


def test_no_forecast_warning_while_the_data_keeps_the_level(world):
    creator(world, "c", "LV2")
    sustain(world, "c", "LV2", [15, 35, 55])
    daily(world, "creator", D, day(60))
    assert world.level("c", "creator") == "LV2"
    assert notes(world, "c", "downgrade_warning") == []


def test_forecast_ignores_rows_already_dated_after_the_as_of_date(world):
    """Posts imported ahead of time (dated D+20) are not known as of D+18."""
    creator(world, "c", "LV1")
    sustain(world, "c", "LV1", [20])
    world.evaluate("creator", day(18))
    assert warnings(world, "c") == [(day(18), "forecast", "LV1", None, "2026-07-25")]
    world.evaluate("creator", day(25))
    assert world.level("c", "creator") == "LV1"


# -- re-runs ---------------------------------------------------------------------------------------


def test_rerunning_dates_sends_nothing_twice(world):
    creator(world, "c", "LV3")
    member(world)
    buy(world, "m", 6_001, on=dt.date(2026, 6, 1))
    for offset in (0, 1, 18, 25, 29, 92, 173):
        world.evaluate("creator", day(offset))
        world.evaluate("member", day(offset))
        before = count_notes(world)
        world.evaluate("creator", day(offset))
        world.evaluate("member", day(offset))
        assert count_notes(world) == before, offset
    kinds = sorted({n.kind for n in notes(world, "c")} | {n.kind for n in notes(world, "m")})
    assert kinds == ["benefit_available", "benefit_issued", "downgrade_warning", "level_down", "level_up"]
    seen = [(n.member_id, n.kind, n.on, json.dumps(n.payload, sort_keys=True)) for n in world.s.scalars(select(Notification))]
    assert len(set(seen)) == len(seen)
