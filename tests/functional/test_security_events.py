"""The security event log (ASVS 16.3) and server-side login sessions: every login attempt and
every refusal is recorded with time, account, address and route, never a secret; logging out
or changing the password really ends a session, even for someone holding a copy of the cookie."""

from __future__ import annotations

import datetime as dt
import re

from sqlalchemy import select

from portal.models import LoginSession, SecurityEvent
from portal.services import tokens as tokens_service

from .test_member_site import PASSWORD, Site, page, site  # noqa: F401
from .test_web import csrf_token, login

STAFF_PASSWORD = "staff1234"


def events(site: Site, kind: str | None = None) -> list[SecurityEvent]:
    with site.db() as s:
        q = select(SecurityEvent).order_by(SecurityEvent.id)
        if kind:
            q = q.where(SecurityEvent.kind == kind)
        return list(s.scalars(q))


def test_a_failed_and_a_successful_login_are_recorded_without_the_password(site):
    client = site.app.test_client()
    assert login(client, "c001", "wrong-password-123").status_code == 401
    assert login(client, "nobody-here", "whatever-pass").status_code == 401
    assert login(client, "c001", PASSWORD).status_code == 302
    failed = events(site, "login_failed")
    assert [(e.account, e.status, e.method, e.route, e.address) for e in failed] == [
        ("c001", 401, "POST", "/login", "127.0.0.1"), ("nobody-here", 401, "POST", "/login", "127.0.0.1")]
    ok = events(site, "login_succeeded")[-1]
    assert (ok.account, ok.member_id, ok.status) == ("c001", site.member_id("c001"), 302)
    assert ok.at.replace(tzinfo=None) > dt.datetime.now() - dt.timedelta(days=1)
    for e in events(site):
        assert PASSWORD not in repr(vars(e)) and "wrong-password" not in repr(vars(e))


def test_the_login_rate_limit_refusal_is_recorded(site):
    site.app.config["RATELIMIT_ENABLED"] = True
    client = site.app.test_client()
    statuses = [login(client, "c002", f"bad-{i}-password").status_code for i in range(12)]
    assert statuses.count(429) >= 1
    limited = events(site, "login_limited")
    assert limited and limited[0].route == "/login" and limited[0].status == 429


def test_a_member_on_a_staff_page_is_refused_and_recorded(site):
    client = site.client("c001")
    assert client.get("/staff/members").status_code == 403
    e = events(site, "forbidden")[-1]
    assert (e.account, e.member_id, e.route, e.method, e.status) == (
        "c001", site.member_id("c001"), "/staff/members", "GET", 403)


def test_another_members_benefit_is_a_404_recorded_as_not_owner(site):
    with site.db() as s:
        from portal.models import BenefitItem

        item = s.scalar(select(BenefitItem).where(BenefitItem.member_id != site.member_id("c001")))
    client = site.client("c001")
    token = csrf_token(page(client, "/benefits"))
    response = client.post(f"/benefits/{item.id}/claim", data={"csrf_token": token})
    assert response.status_code == 404
    e = events(site, "not_owner")[-1]
    assert e.account == "c001" and e.detail == f"benefit_items#{item.id}" and e.status == 404
    # an id that does not exist at all is a plain 404, not a refusal
    before = len(events(site, "not_owner"))
    assert client.post("/benefits/999999/claim", data={"csrf_token": token}).status_code == 404
    assert len(events(site, "not_owner")) == before


def test_api_401_403_and_another_members_data_are_recorded(site):
    with site.db() as s:
        member_token = tokens_service.create(s, "c001-app", "member", "c001")
        s.commit()
    client = site.app.test_client()
    assert client.get("/api/v1/members/c001/standing").status_code == 401
    assert client.get("/api/v1/members/c001/standing",
                      headers={"Authorization": "Bearer not-a-token"}).status_code == 401
    auth = {"Authorization": f"Bearer {member_token}"}
    assert client.get("/api/v1/members/c002/standing", headers=auth).status_code == 404
    assert client.post("/api/v1/metrics", json={"rows": []}, headers=auth).status_code == 403
    unauth = events(site, "unauthenticated")
    assert [e.route for e in unauth[-2:]] == ["/api/v1/members/c001/standing"] * 2
    assert all(e.account is None and "not-a-token" not in repr(vars(e)) for e in unauth)
    assert events(site, "not_owner")[-1].account == "token:c001-app"
    assert events(site, "forbidden")[-1].route == "/api/v1/metrics"


def test_an_anonymous_visit_to_a_page_is_recorded_and_sent_to_login(site):
    response = site.app.test_client().get("/benefits")
    assert response.status_code == 302 and "/login" in response.headers["Location"]
    e = events(site, "unauthenticated")[-1]
    assert (e.route, e.status, e.account) == ("/benefits", 302, None)


def test_logout_ends_the_session_even_for_a_copied_cookie(site):
    client = site.client("c001")
    stolen = client.get_cookie("session").value
    token = csrf_token(page(client, "/"))
    assert client.post("/logout", data={"csrf_token": token}).status_code == 302
    thief = site.app.test_client()
    thief.set_cookie("session", stolen)
    response = thief.get("/")
    assert response.status_code == 302 and "/login" in response.headers["Location"]
    assert events(site, "logout")[-1].account == "c001"
    assert events(site, "session_ended")


def test_a_password_change_ends_the_accounts_other_sessions_and_keeps_this_one(site):
    laptop, phone = site.client("c001"), site.client("c001")
    remembered = site.app.test_client()
    token = csrf_token(remembered.get("/login").get_data(as_text=True))
    assert remembered.post("/login", data={"username": "c001", "password": PASSWORD, "remember": "y",
                                           "csrf_token": token}).status_code == 302
    remember_cookie = remembered.get_cookie("remember_token").value
    token = csrf_token(page(laptop, "/account/password"))
    response = laptop.post("/account/password", data={"current": PASSWORD, "new": "a-new-password-1",
                                                      "confirm": "a-new-password-1", "csrf_token": token})
    assert response.status_code == 303
    assert laptop.get("/").status_code == 200
    assert phone.get("/").status_code == 302
    # the remember-me cookie of the other browser no longer logs in either
    fresh = site.app.test_client()
    fresh.set_cookie("remember_token", remember_cookie)
    assert fresh.get("/").status_code == 302
    with site.db() as s:
        sessions = s.scalars(select(LoginSession).where(LoginSession.member_id == site.member_id("c001"))).all()
    assert sum(1 for x in sessions if x.ended_at is None) == 1
    assert events(site, "password_changed")[-1].account == "c001"


def test_login_sessions_store_only_a_digest(site):
    client = site.client("c001")
    cookie_user_id = None
    with client.session_transaction() as sess:
        cookie_user_id = sess["_user_id"]
    member_id, token = cookie_user_id.split(":")
    assert int(member_id) == site.member_id("c001") and len(token) >= 40
    with site.db() as s:
        stored = s.scalars(select(LoginSession.token_hash)).all()
    assert token not in stored and all(len(h) == 64 for h in stored)


def test_staff_read_the_security_log_and_members_may_not(site):
    login(site.app.test_client(), "c001", "wrong-password-123")
    staff = site.client("staff", STAFF_PASSWORD)
    html = page(staff, "/staff/security?kind=login_failed")
    assert 'data-kind="login_failed"' in html and "c001" in html and 'data-kind="login_succeeded"' not in html
    assert page(staff, "/staff/security?account=c001").count("data-event=") >= 1
    assert site.client("c001").get("/staff/security").status_code == 403


def test_the_security_page_pages_by_id(site):
    from portal.services import security_log

    with site.db() as s:
        for i in range(105):
            security_log.record(s, "login_failed", method="POST", route="/login", status=401, account=f"ghost{i}")
        s.commit()
    staff = site.client("staff", STAFF_PASSWORD)
    html = page(staff, "/staff/security?kind=login_failed")
    assert html.count("data-event=") == 100 and "ghost104" in html and "ghost4<" not in html
    older = re.search(r'href="([^"]+)" rel="next"', html).group(1).replace("&amp;", "&")
    rest = page(staff, older)
    assert rest.count("data-event=") == 5 and "ghost0<" in rest


def test_marking_another_members_notification_read_is_a_404_and_changes_nothing(site):
    from portal.models import Notification

    with site.db() as s:
        theirs = s.scalar(select(Notification).where(Notification.member_id == site.member_id("c002"),
                                                     Notification.read_at.is_(None)))
    assert theirs is not None
    client = site.client("c001")
    token = csrf_token(page(client, "/notifications"))
    assert client.post(f"/notifications/{theirs.id}/read", data={"csrf_token": token}).status_code == 404
    assert site.notification(theirs.id).read_at is None
    assert events(site, "not_owner")[-1].detail == f"notifications#{theirs.id}"
    assert client.post("/notifications/999999/read", data={"csrf_token": token}).status_code == 404


def test_a_staff_page_of_a_member_not_yet_evaluated_answers(site):
    from portal.services.imports import import_members_csv

    with site.db() as s:
        import_members_csv(s, "member,name,email,role,password,programs\nnew1,New,,member,,creator music\n",
                           dt.date.today())
        s.commit()
    assert "new1" in page(site.client("staff", STAFF_PASSWORD), "/staff/members/new1")
