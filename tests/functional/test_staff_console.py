"""The staff console (/staff/): pages by role, every action end to end with its audit entry,
search and keyset pagination, CSV exports, the review queue, simulations and publishing, the
churn-warning list. Demo data loaded on a real database (SQLite, and PostgreSQL when set)."""

from __future__ import annotations

import csv
import datetime as dt
import io
import re
from html import unescape

import pytest
from sqlalchemy import func, select, update

from portal.models import (
    AuditEntry,
    BenefitItem,
    Enrolment,
    EvaluationRun,
    LevelChange,
    Member,
    MetricRow,
    Notification,
    ProgramVersion,
    Standing,
)
from portal.services import dashboards, simulation

from ..helpers import page_statements
from .test_web import csrf_token, login

TODAY = dt.date.today()
STAFF_PAGES = ["/staff/", "/staff/members", "/staff/members?program=music&level=A", "/staff/members/c001",
               "/staff/members/u004", "/staff/reviews", "/staff/programs", "/staff/programs/creator",
               "/staff/programs/scorecard", "/staff/programs/music/versions/1", "/staff/audit",
               "/staff/audit?actor=staff", "/staff/members.csv", "/staff/audit.csv"]


def db(app):
    return app.extensions["portal.db"].factory()


def count(app, model) -> int:
    with db(app) as s:
        return s.scalar(select(func.count()).select_from(model))


@pytest.fixture
def demo(app):
    from portal.cli import init_database
    from portal.demo import load_demo
    from portal.extensions import db as database

    with app.app_context():
        init_database(app)
        load_demo(database.session, TODAY)
    return app


def client_of(app, user: str | None):
    client = app.test_client()
    if user is not None:
        password = "staff1234" if user in ("staff", "admin") else "demo1234"
        assert login(client, user, password).status_code == 302
    return client


@pytest.fixture
def staff(demo):
    return client_of(demo, "staff")


@pytest.fixture
def admin(demo):
    return client_of(demo, "admin")


def token(client, url: str = "/staff/members/c001") -> str:
    return csrf_token(client.get(url).get_data(as_text=True))


def post(client, url: str, data: dict, page: str = "/staff/members/c001"):
    return client.post(url, data={"csrf_token": token(client, page), **data})


def flashes(client, url: str = "/staff/members/c001") -> list[str]:
    html = client.get(url).get_data(as_text=True)
    return re.findall(r'<p class="flash (\w+)"[^>]*>([^<]*)</p>', html)


def last_audit(app, action: str) -> AuditEntry | None:
    with db(app) as s:
        return s.scalar(select(AuditEntry).where(AuditEntry.action == action).order_by(AuditEntry.id.desc()))


def standing(app, member: str, program: str) -> Standing:
    with db(app) as s:
        return s.scalar(select(Standing).join(Member, Member.id == Standing.member_id)
                        .where(Member.key == member, Standing.program_key == program))


def member_id(app, key: str) -> int:
    with db(app) as s:
        return s.scalar(select(Member.id).where(Member.key == key))


# -- roles ------------------------------------------------------------------------------------


def test_every_staff_page_renders_for_staff_is_403_for_a_member_and_redirects_anonymous(demo):
    staff, admin, member, anonymous = (client_of(demo, u) for u in ("staff", "admin", "c001", None))
    for url in STAFF_PAGES:
        for client in (staff, admin):
            response = client.get(url)
            assert response.status_code == 200, url
            assert "Traceback" not in response.get_data(as_text=True)
        assert member.get(url).status_code == 403, url
        response = anonymous.get(url)
        assert response.status_code == 302 and "/login" in response.headers["Location"], url


def test_unknown_member_program_or_version_is_404(staff):
    for url in ("/staff/members/nobody", "/staff/programs/nope", "/staff/programs/creator/versions/99"):
        assert staff.get(url).status_code == 404, url


POSTS = [
    ("/staff/members/c001/grant", {"benefit": "bonus", "program": "creator", "quantity": "1", "reason": "x"}),
    ("/staff/members/c001/override", {"program": "creator", "level": "LV4", "reason": "x"}),
    ("/staff/members/c001/lift", {"program": "creator", "reason": "x"}),
    ("/staff/members/c001/blacklist", {"program": "creator", "action": "on", "reason": "x"}),
    ("/staff/members/c001/dispatch", {"day": TODAY.isoformat(), "count": "1", "reason": "x"}),
    ("/staff/members/c001/segments", {"business_type": "brand", "reason": "x"}),
    ("/staff/reviews/1", {"decision": "approve", "note": "x"}),
    ("/staff/programs/scorecard/simulate", {"mode": "scale", "percent": "-20"}),
    ("/staff/programs/scorecard/publish", {"mode": "scale", "percent": "-20", "reason": "x"}),
]


def test_every_post_without_csrf_is_400_and_changes_nothing(demo, admin):
    audit_before = count(demo, AuditEntry)
    for url, data in POSTS:
        response = admin.post(url, data=data)
        assert response.status_code == 400, url
        assert "Traceback" not in response.get_data(as_text=True)
        response = admin.post(url, data={**data, "csrf_token": "forged"})
        assert response.status_code == 400, url
    assert count(demo, AuditEntry) == audit_before
    assert count(demo, ProgramVersion) == 4


def test_posts_are_403_for_members_and_publishing_is_403_for_staff(demo, staff):
    member = client_of(demo, "c001")
    for url, data in POSTS:
        assert member.post(url, data={**data, "csrf_token": token(member, "/")}).status_code == 403, url
    response = post(staff, "/staff/programs/scorecard/publish", {"mode": "scale", "percent": "-20", "reason": "cheaper"})
    assert response.status_code == 403
    assert count(demo, ProgramVersion) == 4
    assert 'data-form="publish"' not in post(staff, "/staff/programs/scorecard/simulate",
                                             {"mode": "scale", "percent": "-20"}).get_data(as_text=True)


# -- member actions ---------------------------------------------------------------------------


def test_grant_end_to_end_with_audit_and_an_empty_reason_refused(demo, staff):
    before = count(demo, BenefitItem)
    response = post(staff, "/staff/members/c002/grant",
                    {"benefit": "welcome_bonus", "program": "creator", "quantity": "2", "amount": "300", "reason": "  "})
    assert response.status_code == 303
    assert count(demo, BenefitItem) == before
    assert any(c == "error" and "reason" in m for c, m in flashes(staff, "/staff/members/c002"))

    response = post(staff, "/staff/members/c002/grant", {"benefit": "welcome_bonus", "program": "creator", "quantity": "2",
                                                           "amount": "300", "reason": "great campaign"})
    assert response.status_code == 303 and response.headers["Location"].endswith("/staff/members/c002#benefits")
    with db(demo) as s:
        item = s.scalar(select(BenefitItem).where(BenefitItem.benefit_key == "welcome_bonus"))
        assert (item.state, item.tier, item.quantity, item.amount, item.granted_by, item.reason) == (
            "issued", "grant", 2, 300, "staff", "great campaign")
    entry = last_audit(demo, "benefit.grant")
    assert (entry.actor, entry.reason, entry.member_id) == ("staff", "great campaign", member_id(demo, "c002"))
    assert entry.after["benefit"] == "welcome_bonus" and entry.after["amount"] == 300
    page = staff.get("/staff/members/c002").get_data(as_text=True)
    assert 'data-key="welcome_bonus"' in page and 'data-audit="benefit.grant"' in page


def test_grant_limit_refuses_staff_above_it_and_lets_an_admin_grant(demo, staff, admin):
    demo.config["PORTAL_GRANT_LIMIT"] = 500
    before = count(demo, BenefitItem)
    data = {"benefit": "big_bonus", "program": "creator", "quantity": "1", "amount": "800", "reason": "record month"}
    assert post(staff, "/staff/members/c001/grant", data).status_code == 303
    assert count(demo, BenefitItem) == before
    refusals = [m for c, m in flashes(staff) if c == "error"]
    assert refusals and "admin" in refusals[0] and "500" in refusals[0]
    assert last_audit(demo, "benefit.grant") is None

    assert post(staff, "/staff/members/c001/grant", {**data, "amount": "500"}).status_code == 303  # at the limit
    assert count(demo, BenefitItem) == before + 1
    assert post(admin, "/staff/members/c001/grant", data).status_code == 303
    assert count(demo, BenefitItem) == before + 2
    entry = last_audit(demo, "benefit.grant")
    assert entry.actor == "admin" and entry.after["amount"] == 800


def test_default_grant_limit_is_1000(demo, staff):
    before = count(demo, BenefitItem)
    data = {"benefit": "b", "program": "creator", "amount": "1000.01", "reason": "r"}
    post(staff, "/staff/members/c001/grant", data)
    assert count(demo, BenefitItem) == before
    post(staff, "/staff/members/c001/grant", {**data, "amount": "1000"})
    assert count(demo, BenefitItem) == before + 1


def test_grant_in_a_program_the_member_is_not_in_is_refused(demo, staff):
    before = count(demo, BenefitItem)
    post(staff, "/staff/members/c001/grant", {"benefit": "b", "program": "music", "reason": "wrong program"})
    assert count(demo, BenefitItem) == before
    assert any(c == "error" and "music" in m for c, m in flashes(staff))
    assert last_audit(demo, "benefit.grant") is None


def test_override_with_expiry_then_lift_each_audited(demo, staff):
    until = TODAY + dt.timedelta(days=30)
    assert post(staff, "/staff/members/c002/override", {"program": "creator", "level": "LV4", "until": until.isoformat(),
                                                          "reason": ""}).status_code == 303
    assert standing(demo, "c002", "creator").level == "LV2"
    response = post(staff, "/staff/members/c002/override", {"program": "creator", "level": "LV4",
                                                              "until": until.isoformat(), "reason": "event partner"})
    assert response.status_code == 303
    st = standing(demo, "c002", "creator")
    assert (st.level, st.locked_level, st.lock_until, st.locked_by) == ("LV4", "LV4", until, "staff")
    entry = last_audit(demo, "level.override")
    assert entry.actor == "staff" and entry.reason == "event partner"
    assert entry.before["level"] == "LV2" and entry.after["level"] == "LV4" and entry.after["lock_until"] == until.isoformat()
    c002 = member_id(demo, "c002")
    with db(demo) as s:
        change = s.scalar(select(LevelChange).where(LevelChange.member_id == c002,
                                                    LevelChange.cause == "override"))
        assert (change.from_level, change.to_level, change.direction) == ("LV2", "LV4", "up")
    page = staff.get("/staff/members/c002").get_data(as_text=True)
    assert 'data-locked="LV4"' in page and 'data-form="lift"' in page

    assert post(staff, "/staff/members/c002/lift", {"program": "creator", "reason": ""}).status_code == 303
    assert standing(demo, "c002", "creator").locked_level == "LV4"
    assert post(staff, "/staff/members/c002/lift", {"program": "creator", "reason": "event over"}).status_code == 303
    assert standing(demo, "c002", "creator").locked_level is None
    entry = last_audit(demo, "level.unlock")
    assert entry.reason == "event over" and entry.before["locked_level"] == "LV4" and entry.after["locked_level"] is None


def test_service_errors_are_flashed_not_raised(demo, staff):
    response = post(staff, "/staff/members/c002/override", {"program": "creator", "level": "LV9", "reason": "typo"})
    assert response.status_code == 303
    errors = [m for c, m in flashes(staff, "/staff/members/c002") if c == "error"]
    assert errors and "LV9" in errors[0]
    post(staff, "/staff/members/c002/lift", {"program": "creator", "reason": "nothing to lift"})
    assert any("not locked" in m for c, m in flashes(staff, "/staff/members/c002") if c == "error")
    post(staff, "/staff/members/c002/override", {"program": "music", "level": "A", "reason": "not enrolled"})
    assert any("not enrolled" in m for c, m in flashes(staff, "/staff/members/c002") if c == "error")
    response = post(staff, "/staff/members/c002/dispatch", {"day": "not-a-date", "count": "1", "reason": "x"})
    assert response.status_code == 303
    assert any(c == "error" for c, m in flashes(staff, "/staff/members/c002"))
    assert last_audit(demo, "level.override") is None and last_audit(demo, "creator.dispatch") is None


def test_blacklist_and_lift_each_audited(demo, staff):
    assert post(staff, "/staff/members/c001/blacklist", {"program": "creator", "action": "on", "reason": ""}).status_code == 303
    assert standing(demo, "c001", "creator").status == "active"
    post(staff, "/staff/members/c001/blacklist", {"program": "creator", "action": "on", "reason": "fake plays"})
    assert standing(demo, "c001", "creator").status == "blacklisted"
    entry = last_audit(demo, "member.blacklist")
    assert (entry.actor, entry.reason, entry.before["status"], entry.after["status"]) == (
        "staff", "fake plays", "active", "blacklisted")
    c001 = member_id(demo, "c001")
    with db(demo) as s:
        open_items = s.scalar(select(func.count()).select_from(BenefitItem).where(
            BenefitItem.member_id == c001, BenefitItem.state.in_(("available", "pending_review"))))
        assert open_items == 0
    assert 'value="off"' in staff.get("/staff/members/c001").get_data(as_text=True)
    post(staff, "/staff/members/c001/blacklist", {"program": "creator", "action": "off", "reason": "appeal accepted"})
    st = standing(demo, "c001", "creator")
    assert st.status == "active" and st.blacklist_exempt_until is not None
    entry = last_audit(demo, "member.lift")
    assert entry.reason == "appeal accepted" and entry.before["status"] == "blacklisted"


def test_record_dispatch_end_to_end(demo, staff):
    day = TODAY - dt.timedelta(days=2)
    post(staff, "/staff/members/c001/dispatch", {"day": day.isoformat(), "count": "3", "reason": ""})
    with db(demo) as s:
        assert s.scalar(select(func.count()).select_from(MetricRow).where(MetricRow.metric == "dispatch")) == 0
    post(staff, "/staff/members/c001/dispatch", {"day": day.isoformat(), "count": "3", "reason": "brand campaign"})
    c001 = member_id(demo, "c001")
    with db(demo) as s:
        rows = s.scalars(select(MetricRow).where(MetricRow.metric == "dispatch")).all()
        assert len(rows) == 3 and {(r.date, r.kind, r.member_id) for r in rows} == {(day, "staff", c001)}
    entry = last_audit(demo, "creator.dispatch")
    assert entry.actor == "staff" and entry.reason == "brand campaign" and entry.after == {"date": day.isoformat(), "count": 3}


def test_edit_segments_end_to_end(demo, staff):
    post(staff, "/staff/members/c003/segments", {"business_type": "content", "industry": "beauty", "scale": "small",
                                                 "reason": ""})
    with db(demo) as s:
        assert s.scalar(select(Member.industry).where(Member.key == "c003")) is None
    post(staff, "/staff/members/c003/segments", {"business_type": "content", "industry": "beauty", "scale": "small",
                                                 "reason": "sales call"})
    with db(demo) as s:
        m = s.scalar(select(Member).where(Member.key == "c003"))
        assert (m.business_type, m.industry, m.scale) == ("content", "beauty", "small")
    entry = last_audit(demo, "member.segments")
    assert entry.before == {"business_type": None, "industry": None, "scale": None}
    assert entry.after == {"business_type": "content", "industry": "beauty", "scale": "small"}
    assert entry.reason == "sales call" and entry.actor == "staff"


def test_member_page_shows_standings_history_ledger_notifications_and_audit(demo, staff):
    post(staff, "/staff/members/c004/segments", {"scale": "small", "reason": "profile"})
    page = staff.get("/staff/members/c004").get_data(as_text=True)
    assert 'data-standing="creator"' in page and "<strong data-level>LV1</strong>" in page
    assert 'data-requirements="LV2"' in page  # every level's requirements, from the stored values
    assert 'class="change down"' in page  # the LV2 -> LV1 downgrade with its reasons
    assert 'data-state="revoked"' in page  # the ledger
    assert 'data-notification="level_down"' in page
    assert 'data-audit="member.segments"' in page


# -- reviews ----------------------------------------------------------------------------------


def _pending(app, member: str, benefit: str, claimed_on: dt.date, text: str = "please") -> int:
    with db(app) as s:
        item = s.scalar(select(BenefitItem).join(Member, Member.id == BenefitItem.member_id).where(
            Member.key == member, BenefitItem.benefit_key == benefit, BenefitItem.state == "available"))
        s.execute(update(BenefitItem).where(BenefitItem.id == item.id).values(
            state="pending_review", claimed_on=claimed_on, request_text=text))
        s.commit()
        return item.id


def test_review_queue_oldest_first_with_music_deadlines(demo, staff):
    creator = _pending(demo, "c001", "case_showcase", TODAY - dt.timedelta(days=5), "my best video")
    low = _pending(demo, "u003", "custom_plan", TODAY - dt.timedelta(days=2))  # music A, low: 4 h
    high = _pending(demo, "u001", "custom_plan", TODAY + dt.timedelta(days=1))  # music A+, high: 24 h, not due yet
    page = staff.get("/staff/reviews").get_data(as_text=True)
    order = [int(x) for x in re.findall(r'data-review="(\d+)"', page)]
    assert order == [creator, low, high]
    low_block = page[page.index(f'data-review="{low}"'):page.index(f'data-review="{high}"')]
    assert "data-overdue" in low_block
    assert f'data-deadline="{(TODAY - dt.timedelta(days=2)).isoformat()}T04:00"' in low_block
    high_block = page[page.index(f'data-review="{high}"'):]
    assert "data-overdue" not in high_block
    assert f'data-deadline="{(TODAY + dt.timedelta(days=2)).isoformat()}T00:00"' in high_block
    creator_block = page[page.index(f'data-review="{creator}"'):page.index(f'data-review="{low}"')]
    assert "data-deadline" not in creator_block and "my best video" in creator_block

    with db(demo) as s:  # the service with a fixed clock: 4 h for low, 24 h for high
        day = TODAY - dt.timedelta(days=2)
        rows = {r.item.id: r for r in dashboards.review_queue(s, dt.datetime.combine(day, dt.time(5, 0)))}
        assert rows[low].review_hours == 4 and rows[low].sub_class == "low" and rows[low].overdue
        assert rows[high].review_hours == 24 and rows[high].sub_class == "high" and not rows[high].overdue
        rows = {r.item.id: r for r in dashboards.review_queue(s, dt.datetime.combine(day, dt.time(3, 59)))}
        assert not rows[low].overdue


def test_approve_and_reject_need_a_reason_and_are_audited(demo, staff):
    approve_id = _pending(demo, "c001", "case_showcase", TODAY)
    reject_id = _pending(demo, "u003", "custom_plan", TODAY)
    page = "/staff/reviews"
    assert post(staff, f"/staff/reviews/{reject_id}", {"decision": "reject", "note": ""}, page).status_code == 303
    assert post(staff, f"/staff/reviews/{approve_id}", {"decision": "approve", "note": " "}, page).status_code == 303
    with db(demo) as s:
        assert {s.get(BenefitItem, i).state for i in (approve_id, reject_id)} == {"pending_review"}
    assert last_audit(demo, "benefit.reject") is None and last_audit(demo, "benefit.approve") is None

    # the console dates an approval by the clock when it happens: a run may cross midnight
    before = dt.date.today()
    post(staff, f"/staff/reviews/{approve_id}", {"decision": "approve", "note": "lovely case"}, page)
    after = dt.date.today()
    post(staff, f"/staff/reviews/{reject_id}", {"decision": "reject", "note": "no play curve attached"}, page)
    with db(demo) as s:
        approved, rejected = s.get(BenefitItem, approve_id), s.get(BenefitItem, reject_id)
        assert (approved.state, approved.reviewed_by) == ("issued", "staff")
        assert before <= approved.issued_on <= after
        assert (rejected.state, rejected.review_note) == ("rejected", "no play curve attached")
        assert s.scalar(select(func.count()).select_from(Notification).where(Notification.kind == "review_result")) == 2
    entry = last_audit(demo, "benefit.reject")
    assert (entry.actor, entry.reason, entry.before, entry.after["state"]) == (
        "staff", "no play curve attached", {"state": "pending_review"}, "rejected")
    assert last_audit(demo, "benefit.approve").reason == "lovely case"
    assert "data-queue-empty" in staff.get(page).get_data(as_text=True)
    post(staff, f"/staff/reviews/{approve_id}", {"decision": "reject", "note": "again"}, page)  # no longer pending
    assert any(c == "error" for c, m in flashes(staff, page))


# -- search, pagination, exports --------------------------------------------------------------


def _many(app, n: int = 120) -> None:
    now = dt.datetime.now(dt.UTC)
    with db(app) as s:
        for i in range(n):
            m = Member(key=f"x{i:03d}", name=f"Extra {i}", email=f"x{i:03d}@example.com", role="member", created_at=now,
                       business_type="advertising" if i % 2 else "content", industry="tech" if i % 3 == 0 else "retail",
                       scale="large" if i < 60 else "small")
            s.add(m)
            s.flush()
            s.add(Enrolment(member_id=m.id, program_key="member", enrolled_on=TODAY))
            if i % 4 == 0:
                s.add(Standing(member_id=m.id, program_key="member", level="gold", status="active", as_of=TODAY,
                               values={}, program_version=1))
        s.commit()


def _page_keys(html: str) -> list[str]:
    return re.findall(r'<tr data-member="([^"]+)"', html)


def _next(html: str) -> str | None:
    match = re.search(r'<a href="([^"]+)" rel="next"', html)
    return match.group(1).replace("&amp;", "&") if match else None


def test_keyset_pagination_pages_through_every_member_once(demo, staff):
    _many(demo)
    with db(demo) as s:
        total = s.scalar(select(func.count()).select_from(Member))
    seen, url, pages = [], "/staff/members", 0
    while url:
        html = staff.get(url).get_data(as_text=True)
        keys = _page_keys(html)
        assert len(keys) <= 50
        seen += keys
        url, pages = _next(html), pages + 1
        assert pages < 10
    assert len(seen) == len(set(seen)) == total and pages == -(-total // 50)
    assert "after=" in staff.get("/staff/members").get_data(as_text=True)


def test_search_filters_combine_and_carry_over_to_the_next_page(demo, staff):
    _many(demo)
    html = staff.get("/staff/members?text=x01").get_data(as_text=True)
    assert _page_keys(html) == [f"x{i:03d}" for i in range(10, 20)]
    html = staff.get("/staff/members?text=Extra 11").get_data(as_text=True)  # a name prefix
    assert set(_page_keys(html)) == {"x011"} | {f"x{i}" for i in range(110, 120)}
    html = staff.get("/staff/members?scale=large&business_type=advertising&industry=tech").get_data(as_text=True)
    assert _page_keys(html) == ["s001"] + [f"x{i:03d}" for i in range(60) if i % 2 and i % 3 == 0]
    html = staff.get("/staff/members?program=member&level=gold").get_data(as_text=True)
    keys = _page_keys(html)
    assert keys[:1] == ["m003"] and len(keys) == 31
    html = staff.get("/staff/members?program=member&level=-").get_data(as_text=True)  # enrolled, not rated
    assert "x001" in _page_keys(html) and "x000" not in _page_keys(html)
    html = staff.get("/staff/members?program=music&status=blacklisted").get_data(as_text=True)
    assert _page_keys(html) == ["u004"]
    html = staff.get("/staff/members?program=music&sub_class=high").get_data(as_text=True)
    assert _page_keys(html) == ["u001"]
    html = staff.get("/staff/members?program=member&business_type=content").get_data(as_text=True)
    first = _page_keys(html)
    assert len(first) == 50
    second = _page_keys(staff.get(_next(html)).get_data(as_text=True))
    assert second and not set(first) & set(second)
    assert all(int(k[1:]) % 2 == 0 for k in first + second if k.startswith("x"))


def _csv(response) -> list[list[str]]:
    assert response.status_code == 200 and response.mimetype == "text/csv"
    return list(csv.reader(io.StringIO(response.get_data(as_text=True))))


def test_members_csv_has_a_header_and_the_filtered_rows(demo, staff):
    _many(demo)
    rows = _csv(staff.get("/staff/members.csv?program=member&level=gold"))
    assert rows[0] == ["member", "name", "email", "role", "business_type", "industry", "scale", "program", "level",
                       "sub_class", "status", "score"]
    assert [r[0] for r in rows[1:]] == ["m003"] + [f"x{i:03d}" for i in range(0, 120, 4)]
    assert {r[8] for r in rows[1:]} == {"gold"}
    rows = _csv(staff.get("/staff/members.csv?scale=small"))
    assert rows[0] == ["member", "name", "email", "role", "business_type", "industry", "scale"]
    assert [r[0] for r in rows[1:]] == ["s003"] + [f"x{i:03d}" for i in range(60, 120)]
    everyone = _csv(staff.get("/staff/members.csv"))
    assert len(everyone) == 1 + count(demo, Member)


def test_csv_cells_cannot_start_a_formula(demo, staff):
    with db(demo) as s:
        s.execute(update(Member).where(Member.key == "c005").values(name="=HYPERLINK(1)"))
        s.commit()
    rows = _csv(staff.get("/staff/members.csv?text=c005"))
    assert rows[1][1] == "'=HYPERLINK(1)"


def test_audit_log_filters_pages_and_exports(demo, staff, admin):
    post(staff, "/staff/members/c003/segments", {"scale": "small", "reason": "first"})
    post(staff, "/staff/members/c002/segments", {"scale": "large", "reason": "second"})
    post(admin, "/staff/members/c002/grant", {"benefit": "b1", "program": "creator", "reason": "third"})
    html = staff.get("/staff/audit").get_data(as_text=True)
    assert re.findall(r'data-action="([^"]+)"', html) == ["benefit.grant", "member.segments", "member.segments"]
    html = staff.get("/staff/audit?actor=staff").get_data(as_text=True)
    assert re.findall(r'data-action="([^"]+)"', html) == ["member.segments", "member.segments"]
    html = staff.get("/staff/audit?member=c002").get_data(as_text=True)
    assert re.findall(r'data-action="([^"]+)"', html) == ["benefit.grant", "member.segments"]
    html = staff.get("/staff/audit?action=benefit.").get_data(as_text=True)
    assert re.findall(r'data-action="([^"]+)"', html) == ["benefit.grant"]
    html = staff.get("/staff/audit?action=member.segments&member=c003").get_data(as_text=True)
    assert len(re.findall(r"data-action=", html)) == 1
    today, tomorrow = TODAY.isoformat(), (TODAY + dt.timedelta(days=1)).isoformat()
    utc_today = dt.datetime.now(dt.UTC).date().isoformat()
    html = staff.get(f"/staff/audit?since={utc_today}&until={utc_today}").get_data(as_text=True)
    assert len(re.findall(r"data-action=", html)) == 3
    html = staff.get(f"/staff/audit?since={(dt.datetime.now(dt.UTC).date() + dt.timedelta(days=1)).isoformat()}").get_data(as_text=True)
    assert "data-action=" not in html
    html = staff.get("/staff/audit?until=2000-01-01").get_data(as_text=True)
    assert "data-action=" not in html
    assert today and tomorrow

    with db(demo) as s:  # more than a page: keyset by id, newest first
        for i in range(150):
            s.add(AuditEntry(at=dt.datetime.now(dt.UTC), actor="bot", action="test.fill", reason=str(i)))
        s.commit()
    html = staff.get("/staff/audit?actor=bot").get_data(as_text=True)
    first = [int(x) for x in re.findall(r'data-audit="(\d+)"', html)]
    second_html = staff.get(_next(html)).get_data(as_text=True)
    second = [int(x) for x in re.findall(r'data-audit="(\d+)"', second_html)]
    assert len(first) == 100 and len(second) == 50 and first == sorted(first, reverse=True) and min(first) > max(second)
    assert _next(second_html) is None

    rows = _csv(staff.get("/staff/audit.csv?member=c002"))
    assert rows[0] == ["id", "at", "actor", "action", "member", "program", "reason", "before", "after"]
    assert [(r[2], r[3], r[4], r[6]) for r in rows[1:]] == [("admin", "benefit.grant", "c002", "third"),
                                                            ("staff", "member.segments", "c002", "second")]
    assert '"scale": "large"' in rows[2][8]
    assert len(_csv(staff.get("/staff/audit.csv?actor=bot"))) == 151


# -- programs, simulation, publishing ---------------------------------------------------------


TABLES = (Standing, LevelChange, BenefitItem, Notification, EvaluationRun, AuditEntry, ProgramVersion, MetricRow)


def _counts(app) -> dict[str, int]:
    return {t.__tablename__: count(app, t) for t in TABLES}


def test_program_page_shows_tables_versions_and_lint(demo, staff):
    page = staff.get("/staff/programs/scorecard").get_data(as_text=True)
    assert 'data-level="S"' in page and 'data-req="S/composite"' in page
    assert 'data-benefit="S/account_manager/basic"' in page
    assert 'data-version="1"' in page
    assert 'data-finding="error"' in page or 'data-finding="warning"' in page  # S and A are unreachable
    page = staff.get("/staff/programs/creator").get_data(as_text=True)
    assert 'data-req="LV3/followers"' in page and 'data-benefit="LV4/combo_booth/basic"' in page
    listing = staff.get("/staff/programs").get_data(as_text=True)
    assert all(f'data-program="{k}"' in listing for k in ("creator", "member", "music", "scorecard"))


def test_simulation_minus_20_percent_moves_members_up_and_writes_nothing(demo, staff):
    before = _counts(demo)
    response = post(staff, "/staff/programs/scorecard/simulate", {"mode": "scale", "percent": "-20"},
                    "/staff/programs/scorecard")
    assert response.status_code == 200
    page = response.get_data(as_text=True)
    moves = dict(re.findall(r'data-move="([^"]+)" data-direction="(\w+)"', page))
    assert moves == {"m004": "up", "s001": "up", "s002": "up"}  # C->B, B->A, D->C with S>=72 A>=60 B>=48 C>=32
    assert 'data-upgraded="3"' in page and 'data-downgraded="0"' in page
    b_row = re.search(r'data-sim-level="B".*?</tr>', page, re.S).group(0)
    assert 'data-up="1"' in b_row
    assert _counts(demo) == before
    assert standing(demo, "s001", "scorecard").level == "B"

    page = post(staff, "/staff/programs/creator/simulate", {"mode": "scale", "percent": "-20"},
                "/staff/programs/creator").get_data(as_text=True)
    assert dict(re.findall(r'data-move="([^"]+)" data-direction="(\w+)"', page)) == {"c001": "up"}
    page = post(staff, "/staff/programs/creator/simulate", {"mode": "scale", "percent": "20"},
                "/staff/programs/creator").get_data(as_text=True)
    assert set(re.findall(r'data-direction="(\w+)"', page)) == {"down"}
    assert _counts(demo) == before


def test_simulating_one_threshold(demo, staff):
    with db(demo) as s:
        program, _ = simulation.programs_service.definition(s, "scorecard")
    path = next(t.path for t in simulation.thresholds(program) if t.level == "B" and t.path.endswith("band.min"))
    page = post(staff, "/staff/programs/scorecard/simulate", {"mode": "set", "path": path, "value": "50"},
                "/staff/programs/scorecard").get_data(as_text=True)
    assert dict(re.findall(r'data-move="([^"]+)" data-direction="(\w+)"', page)) == {"m004": "up"}
    response = post(staff, "/staff/programs/scorecard/simulate", {"mode": "set", "path": "levels[9].band.min", "value": "1"},
                    "/staff/programs/scorecard")
    assert response.status_code == 303
    assert any("no threshold" in m for c, m in flashes(staff, "/staff/programs/scorecard") if c == "error")
    response = post(staff, "/staff/programs/scorecard/simulate", {"mode": "scale", "percent": "-500"},
                    "/staff/programs/scorecard")
    assert response.status_code == 303
    assert any("percentage" in m for c, m in flashes(staff, "/staff/programs/scorecard") if c == "error")


def test_simulation_service_scales_requirements_and_bands_only(demo):
    with db(demo) as s:
        creator, _ = simulation.programs_service.definition(s, "creator")
        scaled = simulation.build(creator, simulation.Change("scale", percent=-20))
    lv3_old, lv3_new = creator.level("LV3"), scaled.level("LV3")
    old = {r.key: r.required for r in lv3_old.requires if r.required is not None}
    new = {r.key: r.required for r in lv3_new.requires if r.required is not None}
    assert new["followers"] == pytest.approx(old["followers"] * 0.8)
    lv1 = {r.key: (r.op, r.required) for r in scaled.level("LV1").requires if r.required is not None}
    assert lv1["profile_complete"] == ("=", 1)  # a done/not-done task is not a threshold
    assert creator.level("LV3").requires[0] is lv3_old.requires[0]  # the published definition is untouched


def test_admin_publishes_the_simulated_definition_as_version_2(demo, admin):
    page = post(admin, "/staff/programs/scorecard/simulate", {"mode": "scale", "percent": "-20"},
                "/staff/programs/scorecard").get_data(as_text=True)
    assert 'data-form="publish"' in page
    response = post(admin, "/staff/programs/scorecard/publish", {"mode": "scale", "percent": "-20", "reason": ""},
                    "/staff/programs/scorecard")
    assert response.status_code == 303 and count(demo, ProgramVersion) == 4
    response = post(admin, "/staff/programs/scorecard/publish",
                    {"mode": "scale", "percent": "-20", "reason": "S and A were unreachable"}, "/staff/programs/scorecard")
    assert response.status_code == 303
    with db(demo) as s:
        versions = s.scalars(select(ProgramVersion).where(ProgramVersion.program_key == "scorecard")
                             .order_by(ProgramVersion.version)).all()
        assert [v.version for v in versions] == [1, 2]
        assert versions[1].published_by == "admin" and "S and A were unreachable" in versions[1].note
        program, version = simulation.programs_service.definition(s, "scorecard")
        assert version == 2 and program.level("S").band.min == pytest.approx(72)
        old, _ = simulation.programs_service.definition(s, "scorecard", 1)
        assert old.level("S").band.min == 90
    entry = last_audit(demo, "program.publish")
    assert (entry.actor, entry.program_key, entry.reason) == ("admin", "scorecard", "S and A were unreachable")
    assert entry.before == {"version": 1} and entry.after["version"] == 2
    page = admin.get("/staff/programs/scorecard").get_data(as_text=True)
    assert 'data-version="2"' in page and 'data-version="1"' in page
    assert admin.get("/staff/programs/scorecard/versions/1").status_code == 200


# -- dashboard --------------------------------------------------------------------------------


def test_dashboard_shows_distribution_runs_benefits_and_jobs(demo, staff):
    from portal.models import JobRun

    now = dt.datetime.now(dt.UTC)
    with db(demo) as s:
        s.add(JobRun(job="evaluate:creator", as_of=TODAY, status="done", holder="h", started_at=now,
                     heartbeat_at=now, finished_at=now + dt.timedelta(seconds=3), attempts=1))
        s.add(JobRun(job="evaluate:music", as_of=TODAY, status="failed", holder="h", started_at=now,
                     heartbeat_at=now, attempts=2, error="boom"))
        s.commit()
    page = staff.get("/staff/").get_data(as_text=True)
    music = page[page.index('data-distribution="music"'):]
    assert 'data-level="A" data-count="2"' in music  # u003 and u004
    assert 'data-distribution="scorecard"' in page and 'data-level="D" data-count="3"' in page
    assert 'data-runs="creator"' in page and "<svg" in page and 'class="up"' in page
    assert re.search(r'data-benefits="creator"', page)
    assert 'data-job="evaluate:creator"' in page and "3.0 s" in page and "boom" in page


def test_churn_list_shows_a_scorecard_member_whose_score_fell_by_10(demo, staff):
    page = staff.get("/staff/").get_data(as_text=True)
    assert "data-churn-empty" in page
    with db(demo) as s:
        for key, prev_score, prev_level in (("s001", 80.6, "B"), ("s002", 40.0, "C"), ("s003", 15.0, "D")):
            st = s.scalar(select(Standing).join(Member, Member.id == Standing.member_id)
                          .where(Member.key == key, Standing.program_key == "scorecard"))
            prev = dict(st.values)
            prev["activity"] = prev.get("activity", 0) + 20
            st.prev_score, st.prev_level, st.prev_as_of, st.prev_values = prev_score, prev_level, st.as_of - dt.timedelta(days=30), prev
        s.commit()
    page = staff.get("/staff/").get_data(as_text=True)
    churn = re.findall(r'data-churn="([^"]+)"', page)
    assert churn == ["s001", "s002"]  # s001: 80.6 -> 68.6 (12); s002: tier C -> D (8.83 only); s003: 5.83, same tier
    s001 = page[page.index('data-churn="s001"'):page.index('data-churn="s002"')]
    assert 'data-dropped="activity"' in s001 and ">12<" in s001
    s002 = page[page.index('data-churn="s002"'):]
    assert "data-tier-fell" in s002


# -- admin: API tokens and roles --------------------------------------------------------------


ADMIN_PAGES = ["/staff/admin/tokens", "/staff/admin/staff"]
ADMIN_POSTS = [
    ("/staff/admin/tokens", {"name": "t1", "role": "staff"}),
    ("/staff/admin/tokens/revoke", {"name": "t1", "reason": "x"}),
    ("/staff/admin/staff", {"member": "c001", "role": "staff", "reason": "x"}),
]


def _create_token(admin, name: str, role: str, member: str = "", reason: str = ""):
    return post(admin, "/staff/admin/tokens", {"name": name, "role": role, "member": member, "reason": reason},
                "/staff/admin/tokens")


def _plain_token(html: str) -> str:
    match = re.search(r"<code data-plain-token>(pt_[^<]+)</code>", html)
    assert match, html
    return match.group(1)


def test_admin_pages_are_admin_only_and_linked_for_admins(demo, staff, admin):
    member = client_of(demo, "c001")
    for url in ADMIN_PAGES:
        assert staff.get(url).status_code == 403, url
        assert member.get(url).status_code == 403, url
        response = admin.get(url)
        assert response.status_code == 200 and "Traceback" not in response.get_data(as_text=True), url
        anonymous = demo.test_client().get(url)
        assert anonymous.status_code == 302 and "/login" in anonymous.headers["Location"]
    for url, data in ADMIN_POSTS:
        assert post(staff, url, data, "/staff/").status_code == 403, url
    assert last_audit(demo, "token.create") is None and last_audit(demo, "member.role") is None
    assert 'href="/staff/admin/tokens"' in admin.get("/staff/").get_data(as_text=True)
    assert 'href="/staff/admin/staff"' in admin.get("/staff/").get_data(as_text=True)
    assert "/staff/admin/" not in staff.get("/staff/").get_data(as_text=True)
    page = admin.get("/staff/admin/staff").get_data(as_text=True)
    assert re.findall(r'data-staff-member="([^"]+)" data-role="(\w+)"', page) == [("admin", "admin"), ("staff", "staff")]


def test_admin_posts_without_csrf_are_400_and_change_nothing(demo, admin):
    audit_before = count(demo, AuditEntry)
    for url, data in ADMIN_POSTS:
        assert admin.post(url, data=data).status_code == 400, url
        assert admin.post(url, data={**data, "csrf_token": "forged"}).status_code == 400, url
    assert count(demo, AuditEntry) == audit_before
    assert "data-plain-token" not in admin.get("/staff/admin/tokens").get_data(as_text=True)
    with db(demo) as s:
        assert s.scalar(select(Member.role).where(Member.key == "c001")) == "member"


def test_member_token_created_once_works_on_the_api_and_stops_after_revoke(demo, admin):
    from portal.models import ApiToken

    response = _create_token(admin, "c001-app", "member", "c001", "partner integration")
    assert response.status_code == 200 and response.headers["Cache-Control"] == "no-store"
    html = response.get_data(as_text=True)
    plain = _plain_token(html)
    assert 'data-token="c001-app" data-role="member" data-revoked="no"' in html
    listing = admin.get("/staff/admin/tokens").get_data(as_text=True)
    assert plain not in listing and "data-plain-token" not in listing  # shown once
    assert plain[:10] in listing  # the prefix is listed
    c001 = member_id(demo, "c001")
    with db(demo) as s:
        row = s.scalar(select(ApiToken).where(ApiToken.name == "c001-app"))
        assert row.role == "member" and row.member_id == c001 and row.token_hash != plain
    entry = last_audit(demo, "token.create")
    assert entry.actor == "admin" and entry.reason == "partner integration"
    assert entry.after == {"name": "c001-app", "role": "member", "member": "c001"}
    assert entry.member_id == c001
    with db(demo) as s:
        for e in s.scalars(select(AuditEntry)):
            assert plain not in repr((e.before, e.after, e.reason))

    api = demo.test_client()
    bearer = {"Authorization": f"Bearer {plain}"}
    response = api.get("/api/v1/members/c001/standing", headers=bearer)
    assert response.status_code == 200
    assert api.get("/api/v1/members/c002/standing", headers=bearer).status_code == 404  # its own member only

    assert post(admin, "/staff/admin/tokens/revoke", {"name": "c001-app", "reason": " "},
                "/staff/admin/tokens").status_code == 303
    assert api.get("/api/v1/members/c001/standing", headers=bearer).status_code == 200
    assert last_audit(demo, "token.revoke") is None
    assert post(admin, "/staff/admin/tokens/revoke", {"name": "c001-app", "reason": "contract ended"},
                "/staff/admin/tokens").status_code == 303
    assert api.get("/api/v1/members/c001/standing", headers=bearer).status_code == 401
    entry = last_audit(demo, "token.revoke")
    assert entry.actor == "admin" and entry.reason == "contract ended" and entry.after == {"name": "c001-app",
                                                                                            "revoked": True}
    assert 'data-token="c001-app" data-role="member" data-revoked="yes"' in admin.get(
        "/staff/admin/tokens").get_data(as_text=True)
    post(admin, "/staff/admin/tokens/revoke", {"name": "c001-app", "reason": "again"}, "/staff/admin/tokens")
    assert any(c == "error" and "already revoked" in m for c, m in flashes(admin, "/staff/admin/tokens"))


def test_staff_token_reads_any_member_and_bad_token_requests_are_refused(demo, admin):
    plain = _plain_token(_create_token(admin, "ops", "staff", "ignored-for-staff").get_data(as_text=True))
    api = demo.test_client()
    for key in ("c001", "u001"):
        assert api.get(f"/api/v1/members/{key}/standing",
                       headers={"Authorization": f"Bearer {plain}"}).status_code == 200
    before = count(demo, AuditEntry)
    for name, role, member, needle in (("ops", "staff", "", "exists"), ("bad name!", "staff", "", "token name"),
                                       ("m", "member", "", "member"), ("m", "member", "nobody", "nobody"),
                                       ("r", "root", "", "role")):
        response = _create_token(admin, name, role, member)
        assert response.status_code == 303, name
        errors = [m for c, m in flashes(admin, "/staff/admin/tokens") if c == "error"]
        assert len(errors) == 1 and needle in errors[0], (name, errors)
    assert count(demo, AuditEntry) == before


def test_admin_sets_roles_audited_and_the_last_admin_is_kept(demo, admin):
    assert post(admin, "/staff/admin/staff", {"member": "c001", "role": "staff", "reason": ""},
                "/staff/admin/staff").status_code == 303
    with db(demo) as s:
        assert s.scalar(select(Member.role).where(Member.key == "c001")) == "member"
    post(admin, "/staff/admin/staff", {"member": "c001", "role": "staff", "reason": "joins operations"},
         "/staff/admin/staff")
    with db(demo) as s:
        assert s.scalar(select(Member.role).where(Member.key == "c001")) == "staff"
    entry = last_audit(demo, "member.role")
    assert (entry.actor, entry.reason, entry.member_id, entry.before, entry.after) == (
        "admin", "joins operations", member_id(demo, "c001"), {"role": "member"}, {"role": "staff"})
    c001 = client_of(demo, "c001")  # demo password of a member, now staff
    assert c001.get("/staff/").status_code == 200 and c001.get("/staff/admin/tokens").status_code == 403

    # the only admin cannot demote itself
    post(admin, "/staff/admin/staff", {"member": "admin", "role": "staff", "reason": "step down"}, "/staff/admin/staff")
    assert any(c == "error" and "last admin" in m for c, m in flashes(admin, "/staff/admin/staff"))
    with db(demo) as s:
        assert s.scalar(select(Member.role).where(Member.key == "admin")) == "admin"
    assert admin.get("/staff/admin/staff").status_code == 200

    # with a second admin it can
    post(admin, "/staff/admin/staff", {"member": "staff", "role": "admin", "reason": "deputy"}, "/staff/admin/staff")
    post(admin, "/staff/admin/staff", {"member": "admin", "role": "staff", "reason": "step down"}, "/staff/admin/staff")
    with db(demo) as s:
        roles = dict(s.execute(select(Member.key, Member.role).where(Member.key.in_(("admin", "staff")))).all())
    assert roles == {"admin": "staff", "staff": "admin"}
    assert admin.get("/staff/admin/staff").status_code == 403  # the role is read on every request
    new_admin = client_of(demo, "staff")
    post(new_admin, "/staff/admin/staff", {"member": "staff", "role": "member", "reason": "oops"}, "/staff/admin/staff")
    with db(demo) as s:
        assert s.scalar(select(Member.role).where(Member.key == "staff")) == "admin"

    for member, role, needle in (("nobody", "staff", "nobody"), ("c002", "root", "root"), ("c001", "staff", "already")):
        post(new_admin, "/staff/admin/staff", {"member": member, "role": role, "reason": "r"}, "/staff/admin/staff")
        assert any(c == "error" and needle in m for c, m in flashes(new_admin, "/staff/admin/staff")), needle


def test_set_role_service_refuses_staff_and_tokens(demo):
    from portal.services import ServiceError
    from portal.services import staff as staff_service

    with db(demo) as s:
        for by in ("staff", "token:ops", "c001"):
            with pytest.raises(ServiceError) as exc:
                staff_service.set_role(s, by, "c002", "staff", "r")
            assert exc.value.status == 403
        with pytest.raises(ServiceError):
            staff_service.revoke_token(s, "staff", "x", "r")


def test_staff_pages_issue_the_same_number_of_statements_with_few_or_many_members(demo, staff):
    """Issue 7: the staff pages' SQL does not grow with the population (search pages keyset-paged)."""
    from sqlalchemy import insert

    from portal.models import Enrolment, Member

    pages = ["/staff/", "/staff/members", "/staff/members?text=c0", "/staff/members?program=creator",
             "/staff/members?program=creator&level=LV1", "/staff/members/c001", "/staff/security"]
    for path in pages:
        staff.get(path)  # warm per-process caches
    few = {path: len(page_statements(demo, staff, path)) for path in pages}
    now = dt.datetime.now(dt.UTC)
    with db(demo) as s:
        s.execute(insert(Member.__table__), [{"key": f"c0x{i:04d}", "name": f"Bulk {i}", "role": "member",
                                              "created_at": now} for i in range(300)])
        ids = s.scalars(select(Member.id).where(Member.key.like("c0x%"))).all()
        s.execute(insert(Enrolment.__table__), [{"member_id": i, "program_key": "creator", "enrolled_on": TODAY}
                                                for i in ids])
        s.commit()
    many = {path: len(page_statements(demo, staff, path)) for path in pages}
    assert many == few


@pytest.mark.parametrize("key", ["m0000001", "a b", "x?y#z", "50%", "张三", "a/b", "o'k&<>"])
def test_member_links_are_what_url_for_builds(app, key):
    from flask import url_for

    from portal.web.staff import member_url

    with app.test_request_context("/staff/members", base_url="https://portal.example/sub/"):
        assert member_url(key) == url_for("staff.member", key=key)
        assert member_url("other") == url_for("staff.member", key="other")  # the base is reused


def test_every_member_row_links_to_that_members_file(demo, staff):
    _many(demo)
    html = staff.get("/staff/members?text=x01").get_data(as_text=True)
    links = re.findall(r'<tr data-member="([^"]+)"[^>]*>\s*<td><a href="([^"]+)">', html)
    assert links and all(href == f"/staff/members/{key}" for key, href in links)
    key, href = links[0]
    assert key in staff.get(href).get_data(as_text=True)


def test_member_list_cells_are_escaped_and_program_columns_shown(demo, staff):
    now = dt.datetime.now(dt.UTC)
    with db(demo) as s:
        m = Member(key="q.1", name='<b>Bold</b> & "Co"', email="o'neil@example.com", role="member", created_at=now,
                   industry="<i>tech</i>")
        s.add(m)
        s.flush()
        s.add(Enrolment(member_id=m.id, program_key="member", enrolled_on=TODAY))
        s.add(Standing(member_id=m.id, program_key="member", level="gold", status="active", as_of=TODAY,
                       values={}, program_version=1, score=12345.5))
        s.commit()
    html = staff.get("/staff/members?text=q.1").get_data(as_text=True)
    row = re.search(r'<tr data-member="q\.1" data-id="\d+">(.*?)</tr>', html, re.S).group(1)
    assert "<b>" not in row and "<i>" not in row and '"Co"' not in row and "o'neil" not in row
    cells = [unescape(c) for c in re.findall(r"<td>(.*?)</td>", row)]
    assert cells == ['<a href="/staff/members/q.1">q.1</a>', '<b>Bold</b> & "Co"', "o'neil@example.com", "member",
                     "", "<i>tech</i>", ""]  # no program chosen: no level columns
    with_program = staff.get("/staff/members?text=q.1&program=member").get_data(as_text=True)
    cells = re.findall(r"<td[^>]*>(.*?)</td>", re.search(r'<tr data-member="q\.1".*?</tr>', with_program, re.S).group(0))
    assert cells[-4:] == ["gold", "", "active", "1.23万"]  # zh_CN by default
    empty = staff.get("/staff/members?text=nobody-matches-this").get_data(as_text=True)
    assert 'data-results="0"' in empty and "<tr data-member" not in empty
