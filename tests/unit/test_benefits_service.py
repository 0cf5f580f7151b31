"""The member's side of the benefit ledger (portal/services/benefits.py, docs/benefits.md):
claims, review submissions, staff reviews and staff grants, on a real database.

Items come from real evaluations: a creator meeting LV3's basic tasks as of D gets an
available `guarantee_card` (claim), an available `case_showcase` (review, limit 1 per
creator) and issued auto perks. The services never commit; each test commits as a caller would.
"""

from __future__ import annotations

import datetime as dt

import pytest
from sqlalchemy import func, select

from portal.models import AuditEntry, BenefitItem, Member, Notification
from portal.services import NotFound, ServiceError
from portal.services import benefits as svc
from portal.services.benefits import Conflict

D = dt.date(2026, 6, 30)
T = D + dt.timedelta(days=1)  # "today" for the member's and staff's actions
GAUGES = ("profile_complete", "task_hall_visited", "tasks_enabled", "quote_set", "assistant_viewed")


def lv2_data(world, key: str, on: dt.date) -> None:
    """Rows meeting the basic tasks of LV1 and LV2 (not LV3) as of `on`..`on`+29."""
    for gauge in GAUGES:
        world.add(key, gauge, on, 1)
    world.add(key, "courses_completed", on, 5)
    world.add(key, "live", on, 15_000, times=8)
    world.add(key, "submission_task", on, 1)


def lv3_data(world, key: str, on: dt.date, plays: float = 60_000) -> None:
    """Rows meeting the basic tasks of LV1..LV3 (not LV4, no reward tasks) as of `on`..`on`+29."""
    for gauge in GAUGES:
        world.add(key, gauge, on, 1)
    world.add(key, "courses_completed", on, 8)
    world.add(key, "live", on, plays, times=20)
    world.add(key, "submission_task", on, 1)
    world.add(key, "order", on, 1)
    world.add(key, "followers", on, 300_001)
    world.add(key, "likes", on, 10_001)
    world.add(key, "credit_score", on, 50)


def creator(world, key: str, level: str = "LV3") -> int:
    """An enrolled creator whose data meets `level` as of D (rows dated D-5)."""
    member_id = world.member(key, "creator")
    (lv3_data if level == "LV3" else lv2_data)(world, key, D - dt.timedelta(days=5))
    return member_id


def item(world, member_id: int, benefit_key: str, state: str | None = None) -> BenefitItem:
    """The member's newest item of a benefit (read fresh from the database)."""
    world.s.expire_all()
    stmt = select(BenefitItem).where(BenefitItem.member_id == member_id, BenefitItem.benefit_key == benefit_key)
    if state is not None:
        stmt = stmt.where(BenefitItem.state == state)
    found = world.s.scalars(stmt.order_by(BenefitItem.id.desc())).first()
    assert found is not None, f"no {benefit_key} item for member {member_id}"
    return found


def fresh(world, item_id: int) -> BenefitItem:
    world.s.expire_all()
    return world.s.get(BenefitItem, item_id)


def count(session, model, *where) -> int:
    return session.scalar(select(func.count()).select_from(model).where(*where))


@pytest.fixture
def lv3(world):
    """Creator `c` at LV3 as of D, its items, and a staff member `boss`."""
    c = creator(world, "c")
    world.evaluate("creator", D)
    assert world.level("c", "creator") == "LV3"
    world.member("boss", role="staff")
    return c


# -- claim ------------------------------------------------------------------------------------


def test_an_lv3_evaluation_makes_the_items_these_tests_use(world, lv3):
    card = item(world, lv3, "guarantee_card")
    showcase = item(world, lv3, "case_showcase")
    booth = item(world, lv3, "gold_booth")
    assert (card.mode, card.state, card.quantity, card.amount) == ("claim", "available", 3, 150.0)
    assert (showcase.mode, showcase.state) == ("review", "available")
    assert (booth.mode, booth.state) == ("auto", "issued")


def test_claim_own_available_item_once(world, lv3):
    card = item(world, lv3, "guarantee_card")
    claimed = svc.claim(world.s, lv3, card.id, T)
    world.s.commit()
    assert (claimed.state, claimed.claimed_on) == ("claimed", T)
    assert (fresh(world, card.id).state, fresh(world, card.id).claimed_on) == ("claimed", T)

    with pytest.raises(Conflict) as again:
        svc.claim(world.s, lv3, card.id, T + dt.timedelta(days=3))
    world.s.rollback()
    assert again.value.status == 409
    assert again.value.details == {"state": "claimed"}
    assert "no longer available (it is claimed)" in again.value.message
    after = fresh(world, card.id)
    assert (after.state, after.claimed_on) == ("claimed", T)  # the second claim changed nothing


def test_another_members_item_is_not_found_like_a_missing_one(world, lv3):
    other = creator(world, "other")
    world.evaluate("creator", D)
    card = item(world, lv3, "guarantee_card")
    missing_id = card.id + 100_000
    assert world.s.get(BenefitItem, missing_id) is None

    with pytest.raises(NotFound) as theirs:
        svc.claim(world.s, other, card.id, T)
    world.s.rollback()
    with pytest.raises(NotFound) as missing:
        svc.claim(world.s, other, missing_id, T)
    world.s.rollback()

    assert theirs.value.status == missing.value.status == 404
    # the same answer, but for the id asked about: nothing tells the item exists or whose it is
    assert theirs.value.message == f"no benefit item {card.id} for this member"
    assert missing.value.message == f"no benefit item {missing_id} for this member"
    assert theirs.value.details == missing.value.details is None
    assert (fresh(world, card.id).state, fresh(world, card.id).claimed_on) == ("available", None)


@pytest.mark.parametrize(("benefit", "state"), [("case_showcase", "available"), ("gold_booth", "issued")],
                         ids=["review-item", "auto-item"])
def test_only_claim_items_can_be_claimed(world, lv3, benefit, state):
    target = item(world, lv3, benefit)
    with pytest.raises(Conflict) as refused:
        svc.claim(world.s, lv3, target.id, T)
    world.s.rollback()
    assert refused.value.status == 409
    assert f"benefit '{benefit}' is not a claim item" in refused.value.message
    assert refused.value.details == {"state": state}
    after = fresh(world, target.id)
    assert (after.state, after.claimed_on) == (state, None)


def test_a_revoked_item_cannot_be_claimed(world, lv3):
    card = item(world, lv3, "guarantee_card")
    world.add("c", "courses_completed", T, 5)  # LV3's courses no longer met: down to LV2 as of T
    world.evaluate("creator", T)
    assert world.level("c", "creator") == "LV2"
    assert (fresh(world, card.id).state, fresh(world, card.id).closed_on) == ("revoked", T)
    with pytest.raises(Conflict) as refused:
        svc.claim(world.s, lv3, card.id, T)
    world.s.rollback()
    assert refused.value.details == {"state": "revoked"}
    assert fresh(world, card.id).claimed_on is None


def test_a_claimed_item_survives_the_downgrade(world, lv3):
    card = item(world, lv3, "guarantee_card")
    svc.claim(world.s, lv3, card.id, T)
    world.s.commit()
    world.add("c", "courses_completed", T, 5)
    world.evaluate("creator", T)
    after = fresh(world, card.id)
    assert (after.state, after.claimed_on, after.closed_on) == ("claimed", T, None)


# -- submit_review and review -------------------------------------------------------------------


def test_submit_review_makes_the_item_pending(world, lv3):
    showcase = item(world, lv3, "case_showcase")
    pending = svc.submit_review(world.s, lv3, showcase.id, "  My best campaign: 3M plays  ", T)
    world.s.commit()
    assert (pending.state, pending.claimed_on, pending.request_text) == ("pending_review", T, "My best campaign: 3M plays")
    with pytest.raises(Conflict) as again:
        svc.submit_review(world.s, lv3, showcase.id, "once more", T)
    world.s.rollback()
    assert again.value.details == {"state": "pending_review"}
    assert fresh(world, showcase.id).request_text == "My best campaign: 3M plays"


@pytest.mark.parametrize("text", ["", "   \n\t ", None], ids=["empty", "blank", "none"])
def test_submit_review_needs_a_text(world, lv3, text):
    showcase = item(world, lv3, "case_showcase")
    with pytest.raises(ServiceError) as refused:
        svc.submit_review(world.s, lv3, showcase.id, text, T)
    world.s.rollback()
    assert not isinstance(refused.value, Conflict) and refused.value.status == 400
    assert refused.value.message == "describe your request for the reviewers"
    after = fresh(world, showcase.id)
    assert (after.state, after.request_text, after.claimed_on) == ("available", None, None)


def test_submit_review_refuses_an_overlong_text(world, lv3):
    showcase = item(world, lv3, "case_showcase")
    with pytest.raises(ServiceError) as refused:
        svc.submit_review(world.s, lv3, showcase.id, "x" * 4001, T)
    world.s.rollback()
    assert refused.value.status == 400 and "4,000" in refused.value.message
    assert fresh(world, showcase.id).state == "available"
    assert svc.submit_review(world.s, lv3, showcase.id, "x" * 4000, T).state == "pending_review"


def test_submit_review_of_a_claim_item_or_anothers_item_is_refused(world, lv3):
    other = creator(world, "other")
    world.evaluate("creator", D)
    card = item(world, lv3, "guarantee_card")
    with pytest.raises(Conflict) as wrong_mode:
        svc.submit_review(world.s, lv3, card.id, "please", T)
    world.s.rollback()
    assert "is not a review item" in wrong_mode.value.message
    with pytest.raises(NotFound):
        svc.submit_review(world.s, other, item(world, lv3, "case_showcase").id, "mine now", T)
    world.s.rollback()
    assert fresh(world, card.id).state == "available"
    assert item(world, lv3, "case_showcase").state == "available"


@pytest.mark.parametrize("role", ["staff", "admin"])
def test_staff_approve_issues_the_item_audited_and_notified(world, lv3, role):
    reviewer_id = world.member("rev", role=role)
    reviewer = world.s.get(Member, reviewer_id)
    showcase = item(world, lv3, "case_showcase")
    svc.submit_review(world.s, lv3, showcase.id, "case study", T)
    world.s.commit()

    approved = svc.review(world.s, reviewer, showcase.id, True, "", T + dt.timedelta(days=2))
    world.s.commit()
    after = fresh(world, showcase.id)
    assert approved.state == after.state == "issued"
    assert (after.issued_on, after.reviewed_by, after.review_note, after.closed_on) == (T + dt.timedelta(days=2), "rev", None, None)
    audit = world.s.scalars(select(AuditEntry).where(AuditEntry.action == "benefit.approve")).all()
    assert [(a.actor, a.member_id, a.program_key, a.before, a.after) for a in audit] == [
        ("rev", lv3, "creator", {"state": "pending_review"}, {"state": "issued", "item": showcase.id})]
    note = world.s.scalars(select(Notification).where(Notification.kind == "review_result")).one()
    assert (note.member_id, note.program_key) == (lv3, "creator")
    assert note.payload == {"item": showcase.id, "benefit": "case_showcase", "approved": True, "note": None}


def test_a_rejection_needs_a_reason_the_member_sees(world, lv3):
    boss = world.s.scalar(select(Member).where(Member.key == "boss"))
    showcase = item(world, lv3, "case_showcase")
    svc.submit_review(world.s, lv3, showcase.id, "case study", T)
    world.s.commit()

    for blank in ("", "   "):
        with pytest.raises(ServiceError) as refused:
            svc.review(world.s, boss, showcase.id, False, blank, T)
        world.s.rollback()
        assert refused.value.status == 400 and "reason" in refused.value.message
    assert fresh(world, showcase.id).state == "pending_review"
    assert count(world.s, Notification, Notification.kind == "review_result") == 0

    rejected = svc.review(world.s, boss, showcase.id, False, " Plays are not verified ", T)
    world.s.commit()
    after = fresh(world, showcase.id)
    assert rejected.state == after.state == "rejected"
    assert (after.closed_on, after.review_note, after.reviewed_by, after.issued_on) == (T, "Plays are not verified", "boss", None)
    note = world.s.scalars(select(Notification).where(Notification.kind == "review_result")).one()
    assert note.member_id == lv3
    assert note.payload == {"item": showcase.id, "benefit": "case_showcase", "approved": False, "note": "Plays are not verified"}
    audit = world.s.scalars(select(AuditEntry).where(AuditEntry.action == "benefit.reject")).one()
    assert (audit.actor, audit.reason, audit.after) == ("boss", "Plays are not verified", {"state": "rejected", "item": showcase.id})


def test_a_non_staff_reviewer_is_refused(world, lv3):
    other_id = creator(world, "other")
    member = world.s.get(Member, other_id)
    self_reviewer = world.s.get(Member, lv3)
    showcase = item(world, lv3, "case_showcase")
    svc.submit_review(world.s, lv3, showcase.id, "case study", T)
    world.s.commit()
    for who in (member, self_reviewer):
        with pytest.raises(ServiceError) as refused:
            svc.review(world.s, who, showcase.id, True, "", T)
        world.s.rollback()
        assert refused.value.status == 403
    after = fresh(world, showcase.id)
    assert (after.state, after.reviewed_by) == ("pending_review", None)
    assert count(world.s, AuditEntry) == 0
    assert count(world.s, Notification, Notification.kind == "review_result") == 0


def test_only_a_pending_item_can_be_reviewed(world, lv3):
    boss = world.s.scalar(select(Member).where(Member.key == "boss"))
    showcase = item(world, lv3, "case_showcase")
    with pytest.raises(Conflict):
        svc.review(world.s, boss, showcase.id, True, "", T)  # still available: never submitted
    world.s.rollback()
    with pytest.raises(NotFound):
        svc.review(world.s, boss, showcase.id + 100_000, True, "", T)
    world.s.rollback()
    assert fresh(world, showcase.id).state == "available"
    assert count(world.s, AuditEntry) == 0


# -- the one-per-creator limit of the case showcase ------------------------------------------------


def second_showcase(world, member_id: int) -> BenefitItem:
    """Another available LV3 showcase of the same creator (inserted directly)."""
    first = item(world, member_id, "case_showcase")
    extra = BenefitItem(member_id=member_id, program_key="creator", level="LV3", tenure=first.tenure,
                        benefit_key="case_showcase", tier="basic", mode="review", state="available", quantity=1,
                        due_on=first.due_on, period=first.period + "-second", created_at=dt.datetime(2026, 7, 1, tzinfo=dt.UTC))
    world.s.add(extra)
    world.s.commit()
    return extra


def test_a_second_showcase_cannot_be_submitted_while_one_is_pending(world, lv3):
    first = item(world, lv3, "case_showcase")
    second = second_showcase(world, lv3)
    svc.submit_review(world.s, lv3, first.id, "first", T)
    world.s.commit()
    with pytest.raises(Conflict) as refused:
        svc.submit_review(world.s, lv3, second.id, "second", T)
    world.s.rollback()
    assert refused.value.status == 409
    assert "can be used 1 time(s) per member" in refused.value.message
    assert (fresh(world, second.id).state, fresh(world, second.id).request_text) == ("available", None)


def test_a_rejected_showcase_does_not_use_up_the_limit(world, lv3):
    boss = world.s.scalar(select(Member).where(Member.key == "boss"))
    first = item(world, lv3, "case_showcase")
    second = second_showcase(world, lv3)
    svc.submit_review(world.s, lv3, first.id, "first", T)
    svc.review(world.s, boss, first.id, False, "not this one", T)
    world.s.commit()
    assert svc.submit_review(world.s, lv3, second.id, "second", T).state == "pending_review"


def test_an_issued_showcase_blocks_the_next_levels_showcase(world):
    """LV2's showcase approved; after the upgrade to LV3 the new tenure's showcase is there
    but cannot be used: one per creator, whatever the level."""
    c = creator(world, "c", "LV2")
    boss_id = world.member("boss", role="staff")
    world.evaluate("creator", D)
    assert world.level("c", "creator") == "LV2"
    lv2_showcase = item(world, c, "case_showcase")
    svc.submit_review(world.s, c, lv2_showcase.id, "case study", T)
    svc.review(world.s, world.s.get(Member, boss_id), lv2_showcase.id, True, "", T)
    world.s.commit()

    lv3_data(world, "c", T, plays=100_000)  # the average over LV2's 8 posts and these stays over 50,000
    world.evaluate("creator", T)
    assert world.level("c", "creator") == "LV3"
    assert fresh(world, lv2_showcase.id).state == "issued"  # used; not revoked with the LV2 tenure
    lv3_showcase = item(world, c, "case_showcase", state="available")
    assert lv3_showcase.level == "LV3"
    with pytest.raises(Conflict) as refused:
        svc.submit_review(world.s, c, lv3_showcase.id, "again", T)
    world.s.rollback()
    assert "can be used 1 time(s) per member" in refused.value.message
    assert fresh(world, lv3_showcase.id).state == "available"


# -- grant ------------------------------------------------------------------------------------------


def test_grant_issues_an_audited_item(world, lv3):
    granted = svc.grant(world.s, "c", "bonus_card", "creator", "  great launch month ", "boss", T, quantity=2, amount=88.5)
    world.s.commit()
    row = fresh(world, granted.id)
    assert (row.member_id, row.program_key, row.benefit_key, row.tier, row.mode, row.state) == (
        lv3, "creator", "bonus_card", "grant", "auto", "issued")
    assert (row.quantity, row.amount, row.due_on, row.issued_on) == (2, 88.5, T, T)
    assert (row.granted_by, row.reason, row.level, row.closed_on) == ("boss", "great launch month", None, None)
    assert row.period.startswith("grant:")

    audit = world.s.scalars(select(AuditEntry)).one()
    assert (audit.actor, audit.action, audit.member_id, audit.program_key, audit.reason) == (
        "boss", "benefit.grant", lv3, "creator", "great launch month")
    assert audit.before is None
    assert audit.after == {"item": row.id, "benefit": "bonus_card", "quantity": 2, "amount": 88.5}
    assert audit.at is not None
    note = world.s.scalars(select(Notification).where(Notification.dedup_key == f"grant:{row.id}")).one()
    assert (note.member_id, note.kind, note.payload["granted"]) == (lv3, "benefit_issued", True)

    listed = svc.items_of(world.s, lv3, ["creator", "member"])
    assert listed["member"] == []
    assert listed["creator"][0].id == row.id  # newest first
    assert svc.item_json(listed["creator"][0])["granted_by"] == "boss"


def test_two_grants_are_two_items_and_an_admin_may_grant(world, lv3):
    world.member("root", role="admin")
    a = svc.grant(world.s, "c", "bonus_card", "creator", "first", "boss", T)
    b = svc.grant(world.s, "c", "bonus_card", "creator", "second", "root", T)
    world.s.commit()
    assert a.id != b.id and a.period != b.period
    assert (a.quantity, a.amount, b.granted_by) == (1, None, "root")
    assert count(world.s, AuditEntry, AuditEntry.action == "benefit.grant") == 2


def test_a_grant_survives_a_downgrade(world, lv3):
    granted = svc.grant(world.s, "c", "bonus_card", "creator", "thanks", "boss", T)
    world.s.commit()
    world.add("c", "courses_completed", T, 0)
    world.add("c", "profile_complete", T, 0)
    world.evaluate("creator", T)
    assert world.level("c", "creator") is None
    assert (fresh(world, granted.id).state, fresh(world, granted.id).closed_on) == ("issued", None)


GRANT_REFUSALS = [
    # member, program, by, reason, quantity, amount, status, message
    ("ghost", "creator", "boss", "r", 1, None, 404, "unknown member 'ghost'"),
    ("c", "nope", "boss", "r", 1, None, 404, "unknown program 'nope'"),
    ("c", "creator", "c", "r", 1, None, 403, "'c' is not a staff member"),
    ("c", "creator", "nobody", "r", 1, None, 403, "'nobody' is not a staff member"),
    ("c", "creator", "boss", "  ", 1, None, 400, "a grant needs a reason"),
    ("c", "creator", "boss", "r", 0, None, 400, "quantity must be at least 1"),
    ("c", "creator", "boss", "r", 1, -5.0, 400, "amount cannot be negative"),
]


@pytest.mark.parametrize(("member", "program", "by", "reason", "quantity", "amount", "status", "message"), GRANT_REFUSALS,
                         ids=["unknown-member", "unknown-program", "non-staff-by", "unknown-by", "no-reason",
                              "zero-quantity", "negative-amount"])
def test_a_refused_grant_writes_nothing(world, lv3, member, program, by, reason, quantity, amount, status, message):
    before = (count(world.s, BenefitItem), count(world.s, AuditEntry), count(world.s, Notification))
    with pytest.raises(ServiceError) as refused:
        svc.grant(world.s, member, "bonus_card", program, reason, by, T, quantity=quantity, amount=amount)
    assert (refused.value.status, refused.value.message) == (status, message)
    # nothing pending in the session either (counting autoflushes it)
    assert (count(world.s, BenefitItem), count(world.s, AuditEntry), count(world.s, Notification)) == before
    world.s.rollback()
    assert count(world.s, BenefitItem, BenefitItem.tier == "grant") == 0
    assert count(world.s, AuditEntry) == 0


# -- items_of ---------------------------------------------------------------------------------------


def test_items_of_lists_a_members_items_by_program_newest_first(world, lv3):
    world.add("c", "courses_completed", T, 5)
    world.evaluate("creator", T)  # LV2 as of T: a second tenure's items
    listed = svc.items_of(world.s, lv3, ["creator", "music"])
    assert set(listed) == {"creator", "music"} and listed["music"] == []
    rows = listed["creator"]
    assert len(rows) == count(world.s, BenefitItem, BenefitItem.member_id == lv3)
    assert [(r.due_on, r.id) for r in rows] == sorted(((r.due_on, r.id) for r in rows), reverse=True)
    assert rows[0].level == "LV2" and rows[-1].level == "LV3"
    assert svc.items_of(world.s, lv3, []) == {}
