"""The member's self-service site through Flask's test client, on a database holding the demo
population (portal.demo): access control, ownership, CSRF on every POST route, the claim and
review flows, what each page shows, password change, language and number formats, and a
constant number of SQL statements per page."""

from __future__ import annotations

import datetime as dt
import html as htmllib
import io
import re
from collections.abc import Callable
from contextlib import contextmanager
from dataclasses import dataclass
from typing import Any

import pytest
from sqlalchemy import func, select

from portal.models import BenefitItem, LevelChange, Member, Notification, Standing

from ..helpers import page_statements
from .test_web import csrf_token, login

PASSWORD = "demo1234"
MEMBER_PAGES = ["/", "/programs/creator", "/history", "/benefits", "/notifications", "/account/password"]


# --- fixtures and helpers ------------------------------------------------------------------


class Site:
    """The app with the demo loaded, and readers of its database."""

    def __init__(self, app):
        self.app = app

    @contextmanager
    def db(self):
        with self.app.extensions["portal.db"].factory() as s:
            yield s

    def member_id(self, key: str) -> int:
        with self.db() as s:
            return s.scalar(select(Member.id).where(Member.key == key))

    def member(self, key: str) -> Member:
        with self.db() as s:
            return s.scalar(select(Member).where(Member.key == key))

    def item(self, item_id: int) -> BenefitItem:
        with self.db() as s:
            return s.get(BenefitItem, item_id)

    def find_item(self, member: str, benefit_key: str, tier: str = "basic") -> BenefitItem:
        with self.db() as s:
            item = s.scalar(select(BenefitItem).where(
                BenefitItem.member_id == self.member_id(member), BenefitItem.benefit_key == benefit_key,
                BenefitItem.tier == tier).order_by(BenefitItem.id.desc()))
        assert item is not None, (member, benefit_key, tier)
        return item

    def notification(self, notification_id: int) -> Notification:
        with self.db() as s:
            return s.get(Notification, notification_id)

    def notifications(self, member: str) -> list[Notification]:
        with self.db() as s:
            return list(s.scalars(select(Notification).where(Notification.member_id == self.member_id(member))
                                  .order_by(Notification.id)))

    def unread(self, member: str) -> int:
        with self.db() as s:
            return s.scalar(select(func.count()).select_from(Notification).where(
                Notification.member_id == self.member_id(member), Notification.read_at.is_(None)))

    def standing(self, member: str, program: str) -> Standing:
        with self.db() as s:
            return s.get(Standing, (self.member_id(member), program))

    def values(self, member: str, program: str) -> dict:
        """The values the member's standing is explained with."""
        from portal.services import explain
        from portal.services import programs as programs_service

        member_id = self.member_id(member)
        with self.db() as s:
            definition, _ = programs_service.definition(s, program)
            return explain.values_of(s, definition, member_id, s.get(Standing, (member_id, program)),
                                     explain.evaluated(s, program))

    def client(self, user: str | None = None, password: str = PASSWORD):
        client = self.app.test_client()
        if user is not None:
            response = login(client, user, password)
            assert response.status_code == 302, f"login of {user} failed: {response.status_code}"
        return client


@pytest.fixture
def site(app, monkeypatch) -> Site:
    """The demo population, loaded as `portal demo` does. Passwords are still argon2id, with
    the cheapest parameters: these tests log in a lot, and hashing is not what they test."""
    from argon2 import PasswordHasher

    from portal.cli import init_database

    monkeypatch.setattr("portal.services.passwords._hasher",
                        PasswordHasher(time_cost=1, memory_cost=8, parallelism=1), raising=False)
    from portal.demo import load_demo

    with app.app_context():
        init_database(app)
        with app.extensions["portal.db"].factory() as session:
            load_demo(session, dt.date.today())
            session.commit()
    return Site(app)


def page(client, path: str) -> str:
    response = client.get(path)
    assert response.status_code == 200, (path, response.status_code)
    return response.get_data(as_text=True)


def post(client, path: str, data: dict[str, Any] | None = None, token_from: str = "/"):
    """A form POST with a CSRF token taken from a page of the same session."""
    form = dict(data or {})
    form["csrf_token"] = csrf_token(client.get(token_from).get_data(as_text=True))
    return client.post(path, data=form)


def switch_language(client, code: str) -> None:
    response = post(client, f"/locale/{code}")
    assert response.status_code == 303, response.status_code


def elements(html: str, name: str, value: str | None = None) -> list[str]:
    """The outer HTML of every element carrying attribute ``name`` (with ``value`` if given)."""
    attr = re.escape(name) + (f'="{re.escape(value)}"' if value is not None else r'(?:="[^"]*")?')
    out = []
    for m in re.finditer(rf"<([a-zA-Z][a-zA-Z0-9]*)\b[^>]*\s{attr}(?=[\s/>])[^>]*>", html):
        tag = m.group(1)
        nested = re.compile(rf"<(/?){tag}\b[^>]*>", re.IGNORECASE)
        depth, pos = 1, m.end()
        while depth:
            n = nested.search(html, pos)
            assert n is not None, f"unclosed <{tag}> at {m.start()}"
            depth += -1 if n.group(1) else 1
            pos = n.end()
        out.append(html[m.start():pos])
    return out


def element(html: str, name: str, value: str | None = None) -> str:
    found = elements(html, name, value)
    assert len(found) == 1, f"expected one element with {name}={value!r}, found {len(found)}"
    return found[0]


def text(fragment: str) -> str:
    """Visible text of a fragment: tags dropped, entities decoded, whitespace collapsed."""
    return " ".join(htmllib.unescape(re.sub(r"<[^>]+>", " ", fragment)).split())


def h1(html: str) -> str:
    return text(re.search(r"<h1>(.*?)</h1>", html, re.S).group(1))


def flashes(html: str) -> list[str]:
    return [text(m) for m in re.findall(r'<p class="flash [^"]*"[^>]*>(.*?)</p>', html, re.S)]


def requirement_rows(html: str, level: str) -> dict[str, str]:
    section = element(html, "data-level-section", level)
    return {re.search(r'data-req="[^/"]+/([^"]+)"', row).group(1): row for row in elements(section, "data-req")}


def chart_after(html: str, level: str, key: str) -> str | None:
    """The trend chart drawn right after a requirement row, if any."""
    section = element(html, "data-level-section", level)
    row = element(section, "data-req", f"{level}/{key}")
    rest = section[section.index(row) + len(row):]
    nxt = re.search(r'<li class="req ', rest)
    rest = rest[: nxt.start()] if nxt else rest
    m = re.search(r'<li class="chart">.*?</li>', rest, re.S)
    return m.group(0) if m else None


def chart_geometry(chart: str) -> tuple[list[float], float]:
    """Bar heights and the threshold line's height above the bottom of a trend chart."""
    height = float(re.search(r'<svg [^>]*height="([\d.]+)"', chart).group(1))
    bars = [float(h) for h in re.findall(r'<rect [^>]*height="([\d.]+)" class="col"/>', chart)]
    y = float(re.search(r'y1="([\d.]+)"[^>]*class="threshold"', chart).group(1))
    return bars, height - y


# --- access: anonymous users, other members' items, CSRF -------------------------------------


def test_anonymous_get_of_every_member_page_redirects_to_login(site):
    client = site.app.test_client()
    for path in MEMBER_PAGES + ["/programs/music", "/programs/no-such-program"]:
        response = client.get(path)
        assert response.status_code == 302, path
        assert response.headers["Location"].startswith("/login"), (path, response.headers["Location"])


def test_anonymous_post_to_member_routes_redirects_to_login_and_changes_nothing(site):
    claim = site.find_item("c001", "guarantee_card")
    review = site.find_item("c001", "case_showcase")
    unread = site.unread("c001")
    first = site.notifications("c001")[0]
    client = site.app.test_client()
    token = csrf_token(client.get("/login").get_data(as_text=True))  # a valid token of this session
    for path in (f"/benefits/{claim.id}/claim", f"/benefits/{review.id}/review", "/notifications/read",
                 f"/notifications/{first.id}/read", "/logout", "/account/password"):
        response = client.post(path, data={"csrf_token": token, "text": "please", "current": PASSWORD,
                                           "new": "another-pass-1", "confirm": "another-pass-1"})
        assert response.status_code == 302, path
        assert response.headers["Location"].startswith("/login"), path
    assert site.item(claim.id).state == "available"
    assert site.item(review.id).state == "available" and site.item(review.id).request_text is None
    assert site.unread("c001") == unread and site.notification(first.id).read_at is None
    assert site.client("c001").get("/").status_code == 200  # the password did not change


def test_claiming_another_members_item_is_404_and_leaves_it_unchanged(site):
    client = site.client("c001")
    theirs = site.find_item("m004", "custom_goods")  # m004's available claim item
    assert theirs.state == "available" and theirs.mode == "claim"
    response = post(client, f"/benefits/{theirs.id}/claim")
    assert response.status_code == 404
    after = site.item(theirs.id)
    assert (after.state, after.claimed_on) == ("available", None)
    assert f'data-item="{theirs.id}"' not in page(client, "/benefits")  # never listed either
    assert post(client, "/benefits/999999/claim").status_code == 404


def test_reviewing_another_members_item_is_404_and_leaves_it_unchanged(site):
    client = site.client("c001")
    theirs = site.find_item("c002", "case_showcase")  # c002's available review item
    assert theirs.state == "available" and theirs.mode == "review"
    response = post(client, f"/benefits/{theirs.id}/review", {"text": "mine now"})
    assert response.status_code == 404
    after = site.item(theirs.id)
    assert (after.state, after.request_text, after.claimed_on) == ("available", None, None)
    assert post(client, "/benefits/999999/review", {"text": "x"}).status_code == 404


def test_marking_another_members_notifications_read_changes_nothing(site):
    client = site.client("c001")
    theirs = [n for n in site.notifications("c002") if n.read_at is None]
    assert theirs
    before = site.unread("c002")
    response = post(client, f"/notifications/{theirs[0].id}/read")
    assert response.status_code == 404  # the same answer as an id that does not exist
    assert site.notification(theirs[0].id).read_at is None
    assert f'data-notification="{theirs[0].id}"' not in page(client, "/notifications")
    response = post(client, "/notifications/read")  # "all" means all of mine
    assert response.status_code in (302, 303)
    assert site.unread("c001") == 0
    assert site.unread("c002") == before


def test_pages_list_only_the_members_own_rows(site):
    client = site.client("c001")
    c001 = site.member_id("c001")
    with site.db() as s:
        items = set(s.scalars(select(BenefitItem.id).where(BenefitItem.member_id == c001)))
        notes = set(s.scalars(select(Notification.id).where(Notification.member_id == c001)))
        changes = s.scalar(select(func.count()).select_from(LevelChange).where(LevelChange.member_id == c001))
        others = s.scalar(select(func.count()).select_from(BenefitItem).where(BenefitItem.member_id != c001))
    assert items and notes and changes and others
    listed = {int(x) for x in re.findall(r'data-item="(\d+)"', page(client, "/benefits"))}
    assert listed == items
    listed = {int(x) for x in re.findall(r'data-notification="(\d+)"', page(client, "/notifications"))}
    assert listed == notes
    assert len(elements(page(client, "/history"), "data-change")) == changes
    assert [re.search(r'data-program="([^"]+)"', c).group(1) for c in elements(page(client, "/"), "data-program")] == ["creator"]


def test_a_program_the_member_is_not_enrolled_in_is_404(site):
    client = site.client("c001")  # creator only
    assert client.get("/programs/creator").status_code == 200
    for key in ("music", "member", "scorecard", "no-such-program"):
        assert client.get(f"/programs/{key}").status_code == 404, key
    assert site.client("u001").get("/programs/creator").status_code == 404


@dataclass
class CsrfCase:
    """One POST route: the request to send, and the state it would change."""

    client: Any
    url: str
    data: dict[str, str]
    state: Callable[[], Any]


def _login_case(site: Site, _member) -> CsrfCase:
    anon = site.app.test_client()
    return CsrfCase(anon, "/login", {"username": "c001", "password": PASSWORD}, lambda: anon.get("/").status_code)


def _logout_case(site: Site, client) -> CsrfCase:
    return CsrfCase(client, "/logout", {}, lambda: client.get("/").status_code)


def _password_case(site: Site, client) -> CsrfCase:
    data = {"current": PASSWORD, "new": "brand-new-pass", "confirm": "brand-new-pass"}
    return CsrfCase(client, "/account/password", data, lambda: site.member("c001").password_hash)


def _claim_case(site: Site, client) -> CsrfCase:
    item = site.find_item("c001", "guarantee_card")
    return CsrfCase(client, f"/benefits/{item.id}/claim", {}, lambda: site.item(item.id).state)


def _review_case(site: Site, client) -> CsrfCase:
    item = site.find_item("c001", "case_showcase")
    return CsrfCase(client, f"/benefits/{item.id}/review", {"text": "our best campaign"},
                    lambda: (site.item(item.id).state, site.item(item.id).request_text))


def _read_all_case(site: Site, client) -> CsrfCase:
    return CsrfCase(client, "/notifications/read", {}, lambda: site.unread("c001"))


def _read_one_case(site: Site, client) -> CsrfCase:
    first = site.notifications("c001")[0]
    return CsrfCase(client, f"/notifications/{first.id}/read", {}, lambda: site.notification(first.id).read_at)


class _Replayable(io.BytesIO):
    """An upload body the test client can send more than once (it rewinds after the end, and
    the client's close() after each request is ignored)."""

    def read(self, *args):
        data = super().read(*args)
        if not data:
            self.seek(0)
        return data

    def close(self) -> None:
        pass


def _evidence_count(site: Site) -> int:
    from portal.models import EvidenceFile

    with site.db() as s:
        return s.scalar(select(func.count()).select_from(EvidenceFile))


def _upload_case(site: Site, client) -> CsrfCase:
    music = site.client("u001")
    return CsrfCase(music, "/programs/music/evidence", {"file": (_Replayable(b"%PDF-1.7 proof"), "proof.pdf")},
                    lambda: _evidence_count(site))


def _delete_evidence_case(site: Site, client) -> CsrfCase:
    from pathlib import Path

    from portal.services import evidence, programs

    music, member_id = site.client("u001"), site.member_id("u001")
    with site.db() as s:
        program, _ = programs.definition(s, "music")
        row = evidence.store(s, Path(site.app.instance_path) / "evidence", member_id, program,
                             "proof.pdf", b"%PDF-1.7 proof")
        s.commit()
    return CsrfCase(music, f"/programs/music/evidence/{row.id}/delete", {}, lambda: _evidence_count(site))


def _locale_case(site: Site, client) -> CsrfCase:
    return CsrfCase(client, "/locale/en", {}, lambda: (site.member("c001").locale, h1(page(client, "/"))))


# Every POST route of the member site, by its url_map rule: the exact state each would change.
# A new member-site POST route fails test_every_member_site_post_route_has_a_csrf_case until it
# gets an entry here (and every POST route, /staff/ included, is already checked generically by
# test_every_post_route_refuses_a_missing_or_forged_csrf_token_and_changes_nothing).
CSRF_CASES: dict[str, Callable[[Site, Any], CsrfCase]] = {
    "/login": _login_case,
    "/logout": _logout_case,
    "/account/password": _password_case,
    "/benefits/<int:item_id>/claim": _claim_case,
    "/benefits/<int:item_id>/review": _review_case,
    "/notifications/read": _read_all_case,
    "/notifications/<int:notification_id>/read": _read_one_case,
    "/locale/<code>": _locale_case,
    "/programs/<key>/evidence": _upload_case,
    "/programs/<key>/evidence/<int:file_id>/delete": _delete_evidence_case,
}


def _post_rules(app) -> tuple[dict[str, Any], dict[str, Any]]:
    """The app's POST routes, rule text -> Rule: those CSRF protects, and the exempt ones."""
    csrf = app.extensions["csrf"]
    protected, exempt = {}, {}
    for rule in app.url_map.iter_rules():
        if "POST" not in rule.methods:
            continue
        view = app.view_functions[rule.endpoint]
        blueprint = app.blueprints.get(rule.endpoint.rpartition(".")[0]) if "." in rule.endpoint else None
        if blueprint in csrf._exempt_blueprints or f"{view.__module__}.{view.__name__}" in csrf._exempt_views:
            exempt[rule.rule] = rule
        else:
            protected[rule.rule] = rule
    return protected, exempt


def _sample_url(site: Site, rule) -> str:
    """A URL of the rule with arguments that exist in the demo. A new argument name fails here:
    give it a sample value."""
    values = {"item_id": site.find_item("c001", "guarantee_card").id,
              "notification_id": site.notifications("c001")[0].id, "code": "en", "member": "c001", "file_id": 1,
              "key": "creator" if "/programs/" in rule.rule else "c001", "version": 1}
    unknown = set(rule.arguments) - set(values)
    assert not unknown, f"{rule.rule}: no sample value for {sorted(unknown)}"
    from flask import url_for

    with site.app.test_request_context():
        return url_for(rule.endpoint, **{a: values[a] for a in rule.arguments})


def _database(site: Site) -> dict[str, list[tuple]]:
    """Every row of every table (the demo database is small) but the security event log, which
    records the refusals themselves."""
    from portal.models import Base

    with site.db() as s:
        return {t.name: sorted((tuple(map(repr, row)) for row in s.execute(t.select())), key=repr)
                for t in Base.metadata.sorted_tables if t.name != "security_events"}


def _csrf_refusals(site: Site) -> int:
    from sqlalchemy import func, select

    from portal.models import SecurityEvent

    with site.db() as s:
        return s.scalar(select(func.count()).where(SecurityEvent.kind == "csrf_failed"))


def test_every_post_route_refuses_a_missing_or_forged_csrf_token_and_changes_nothing(site):
    """Every POST route in app.url_map, found anew on each run: a new route is tested as soon as
    it exists. The caller is one the route would otherwise serve (staff for /staff/)."""
    protected, exempt = _post_rules(site.app)
    assert "/benefits/<int:item_id>/claim" in protected and len(protected) >= len(CSRF_CASES)
    clients = {"member": site.client("c001"), "staff": site.client("admin", "staff1234"),
               "anonymous": site.app.test_client()}
    before, refusals = _database(site), _csrf_refusals(site)
    for path, rule in sorted(protected.items()):
        who = "staff" if path.startswith("/staff") else "anonymous" if path == "/login" else "member"
        client, url = clients[who], _sample_url(site, rule)
        form = {"reason": "csrf test", "level": "LV1", "text": "csrf test", "note": "n", "approve": "1",
                "benefit": "extra_dispatch", "program": "creator", "quantity": "1", "current": PASSWORD,
                "new": "brand-new-pass", "confirm": "brand-new-pass", "username": "c001", "password": PASSWORD}
        for token in (None, "forged-token"):
            data = form if token is None else dict(form, csrf_token=token)
            response = client.post(url, data=data)
            body = response.get_data(as_text=True)
            assert response.status_code == 400, (url, who, token, response.status_code)
            assert re.search(r"CSRF (session )?token", body) and "Traceback" not in body, (url, body[:300])
    assert _database(site) == before
    assert _csrf_refusals(site) == refusals + 2 * len(protected)  # each refusal is in the security log
    assert clients["member"].get("/").status_code == 200  # still logged in: /logout was refused
    assert clients["anonymous"].get("/").status_code == 302  # not logged in: /login was refused


def test_every_member_site_post_route_has_a_csrf_case(app):
    """Each POST route of the member site has a case below that shows the exact state it would
    change, and that a valid token does change it."""
    protected, exempt = _post_rules(app)
    site_rules = {r for r in protected if not r.startswith("/staff/")}
    missing = site_rules - set(CSRF_CASES)
    assert not missing, f"POST routes without a CSRF test case (add them to CSRF_CASES): {sorted(missing)}"
    assert set(CSRF_CASES) <= site_rules, f"stale or exempted CSRF cases: {sorted(set(CSRF_CASES) - site_rules)}"
    # Only the bearer-token JSON API is exempt; anything else exempted must be looked at here.
    assert all(rule.startswith("/api/") for rule in exempt), sorted(exempt)


def test_csrf_exempt_post_routes_ignore_the_session_cookie(site):
    """The API is exempt from CSRF because it authenticates by bearer token only: a browser's
    session cookie alone must get 401 from every exempt POST route, and change nothing."""
    _, exempt = _post_rules(site.app)
    client = site.client("c001")
    before = _database(site)
    for path, rule in sorted(exempt.items()):
        response = client.post(_sample_url(site, rule), json={"rows": [], "benefit": "x", "program": "creator",
                                                               "reason": "r", "level": "LV1"})
        assert response.status_code == 401, (path, response.status_code)
    assert _database(site) == before


@pytest.mark.parametrize("rule", sorted(CSRF_CASES))
def test_post_without_a_valid_csrf_token_is_400_and_changes_nothing(site, rule):
    member = site.client("c001")
    case = CSRF_CASES[rule](site, member)
    before = case.state()
    for token in (None, "not-a-token"):
        data = dict(case.data)
        if token is not None:
            data["csrf_token"] = token
        response = case.client.post(case.url, data=data)
        assert response.status_code == 400, (rule, token, response.status_code)
        assert "Traceback" not in response.get_data(as_text=True)
        assert case.state() == before, (rule, token)
    # The same request with the session's token does change the state: the check above is live.
    token_page = "/login" if rule == "/login" else "/"
    data = dict(case.data, csrf_token=csrf_token(case.client.get(token_page).get_data(as_text=True)))
    response = case.client.post(case.url, data=data)
    assert response.status_code in (302, 303), (rule, response.status_code)
    assert case.state() != before, rule


# --- claim and review ------------------------------------------------------------------------


def test_claim_turns_an_available_item_claimed_once(site):
    client = site.client("c001")
    switch_language(client, "en")
    item = site.find_item("c001", "guarantee_card", tier="reward")
    assert (item.state, item.mode) == ("available", "claim")
    listed = element(page(client, "/benefits"), "data-item", str(item.id))
    assert 'data-state="available"' in listed and "data-claim" in listed

    response = post(client, f"/benefits/{item.id}/claim", token_from="/benefits")
    assert response.status_code == 303
    assert response.headers["Location"].endswith(f"/benefits#item-{item.id}")
    after = site.item(item.id)
    assert (after.state, after.claimed_on) == ("claimed", dt.date.today())
    html = page(client, "/benefits")
    assert any(f.startswith("Claimed: ") for f in flashes(html)), flashes(html)
    listed = element(html, "data-item", str(item.id))
    assert 'data-state="claimed"' in listed and "data-claim" not in listed
    assert str(item.id) in element(html, "data-state-group", "claimed")

    again = post(client, f"/benefits/{item.id}/claim", token_from="/benefits")
    assert again.status_code == 303
    html = page(client, "/benefits")
    assert any("no longer" in f and "Claimed" in f for f in flashes(html)), flashes(html)
    assert (site.item(item.id).state, site.item(item.id).claimed_on) == ("claimed", dt.date.today())
    # the other available claim item is untouched
    assert site.find_item("c001", "guarantee_card").state == "available"


def test_claim_of_a_review_or_issued_item_is_refused_and_changes_nothing(site):
    client = site.client("c001")
    for item in (site.find_item("c001", "case_showcase"), site.find_item("c001", "gold_booth")):
        response = post(client, f"/benefits/{item.id}/claim")
        assert response.status_code == 303
        assert site.item(item.id).state == item.state
        html = page(client, "/benefits")
        assert any("该权益已无法领取" in f for f in flashes(html)), flashes(html)


def test_review_submission_sends_the_item_for_review_and_empty_text_is_refused(site):
    client = site.client("c001")
    switch_language(client, "en")
    item = site.find_item("c001", "case_showcase")
    assert (item.state, item.mode) == ("available", "review")
    listed = element(page(client, "/benefits"), "data-item", str(item.id))
    assert "data-submit-review" in listed and f'id="text-{item.id}"' in listed

    for empty in ("", "   \n  "):
        response = post(client, f"/benefits/{item.id}/review", {"text": empty})
        assert response.status_code == 303
        assert any("Please describe your request" in f for f in flashes(page(client, "/benefits")))
        assert (site.item(item.id).state, site.item(item.id).request_text) == ("available", None)
    too_long = post(client, f"/benefits/{item.id}/review", {"text": "x" * 4001})
    assert too_long.status_code == 303 and site.item(item.id).state == "available"

    response = post(client, f"/benefits/{item.id}/review", {"text": "  Our spring campaign, 3M plays  "})
    assert response.status_code == 303
    assert response.headers["Location"].endswith(f"#item-{item.id}")
    after = site.item(item.id)
    assert after.state == "pending_review"
    assert after.request_text == "Our spring campaign, 3M plays"
    html = page(client, "/benefits")
    assert "Sent for review." in flashes(html)
    listed = element(element(html, "data-state-group", "pending_review"), "data-item", str(item.id))
    assert 'data-state="pending_review"' in listed and "data-submit-review" not in listed

    again = post(client, f"/benefits/{item.id}/review", {"text": "once more"})
    assert again.status_code == 303
    assert site.item(item.id).request_text == "Our spring campaign, 3M plays"


# --- the overview ----------------------------------------------------------------------------


def test_overview_shows_the_level_next_level_and_tasks_left(site):
    client = site.client("c001")
    html = page(client, "/")
    assert "<h1>我的等级</h1>" in html
    card = element(html, "data-program", "creator")
    assert text(element(card, "data-level")) == "LV3"
    assert "<strong>LV4</strong>" in card
    unmet = [k for k, row in requirement_rows(page(client, "/programs/creator"), "LV4").items() if "req unmet" in row]
    assert len(unmet) >= 2
    assert text(element(card, "data-tasks-left")) == f"还差{len(unmet)}项任务"
    switch_language(client, "en")
    card = element(page(client, "/"), "data-program", "creator")
    assert text(element(card, "data-tasks-left")) == f"{len(unmet)} tasks left"


def test_overview_of_a_member_not_yet_rated(site):
    client = site.client("c005")
    card = element(page(client, "/"), "data-program", "creator")
    assert text(element(card, "data-level")) == "未定级"
    assert "<strong>LV1</strong>" in card and "data-tasks-left" in card
    switch_language(client, "en")
    card = element(page(client, "/"), "data-program", "creator")
    assert text(element(card, "data-level")) == "Not yet rated"


def test_overview_shows_sub_class_and_category(site):
    # user: stored (level, sub_class, category), and how the card shows sub_class and category
    expected = {"u001": (("A+", "high", "fast_sales"), "优质", "速销"),
                "u003": (("A", "low", "fast_sales"), "劣质", "速销")}
    for user, (stored, sub_class, category) in expected.items():
        st = site.standing(user, "music")
        assert (st.level, st.sub_class, st.category) == stored
        card = element(page(site.client(user), "/"), "data-program", "music")
        assert text(element(card, "data-level")) == stored[0]
        assert text(element(card, "data-sub-class")) == sub_class
        assert f'<span class="badge">{category}</span>' in card
    client = site.client("u002")
    switch_language(client, "en")
    card = element(page(client, "/"), "data-program", "music")
    assert text(element(card, "data-sub-class")) == "Standard" and '<span class="badge">Nurture</span>' in card
    assert "data-sub-class" not in page(site.client("c001"), "/")


def test_overview_shows_the_score_with_the_tier_cut_offs(site):
    client = site.client("s001")
    card = element(page(client, "/"), "data-program", "scorecard")
    stored = site.standing("s001", "scorecard")
    assert stored.score is not None
    assert float(text(element(card, "data-score")).replace(",", "")) == round(stored.score, 2)
    cut_offs = dict(re.findall(r"\b([A-Z]) ≥ (\d+)", text(card)))
    assert cut_offs == {"S": "90", "A": "75", "B": "60", "C": "40"}
    # the level shown is the one whose cut-off the score reaches (D below them all)
    reached = [lv for lv, cut in cut_offs.items() if stored.score >= float(cut)]
    expected = max(reached, key=lambda lv: float(cut_offs[lv])) if reached else "D"
    assert text(element(card, "data-level")) == stored.level == expected
    assert stored.level == "B"  # the demo's s001
    # a program without a score shows none
    assert "data-score" not in page(site.client("c001"), "/")


def test_overview_shows_the_blacklisted_status(site):
    card = element(page(site.client("u004"), "/"), "data-program", "music")
    assert text(element(card, "data-status")) == "已列入黑名单"
    assert "权益已暂停" in card
    assert "data-status" not in page(site.client("u001"), "/")


def test_overview_shows_the_downgrade_warning(site):
    client = site.client("u003")
    html = page(client, "/")
    warning = element(html, "data-warning", "music")
    stored = [n for n in site.notifications("u003") if n.kind == "downgrade_warning"]
    assert len(stored) == 1 and stored[0].payload["reason"] == "consecutive"
    payload = stored[0].payload
    assert "降级预警" in warning and 'role="alert"' in warning
    by = dt.date.fromisoformat(payload["by"])
    assert by >= dt.date.today()
    assert payload["by"] in text(warning) or f"{by.year}年{by.month}月{by.day}日" in text(warning)  # when it goes
    assert "如下期仍未达到" in text(warning)  # the 'consecutive' wording
    assert "8000万 / >= 1亿" in text(warning)  # the failing requirement, actual / required
    assert html.index("data-warning") < html.index("<h1>")  # shown first
    for user in ("u001", "c001", "u004"):
        assert "data-warning" not in page(site.client(user), "/"), user
    switch_language(client, "en")
    warning = element(page(client, "/"), "data-warning", "music")
    assert "If the next one is too, your level becomes" in text(warning)
    assert "80,000,000 / >= 100,000,000" in text(warning)


def test_overview_shows_each_programs_newest_warning_whose_date_has_not_passed(site):
    # c003 is in creator only: warnings dated by a past day are over, one without a date is
    # open, and of the open ones the newest (by its day, then by id) is shown.
    member_id, today = site.member_id("c003"), dt.date.today()

    def warn(on: dt.date, by: str | None, to: str) -> None:
        payload = {"reason": "protection_ends", "to": to, "failing": []} | ({"by": by} if by else {})
        with site.db() as s:
            s.add(Notification(member_id=member_id, program_key="creator", kind="downgrade_warning", on=on,
                               payload=payload, dedup_key=f"w:{on}:{by}:{to}", created_at=dt.datetime.now(dt.UTC)))
            s.commit()

    def shown() -> str | None:
        html = page(site.client("c003"), "/")
        return text(element(html, "data-warning", "creator")) if "data-warning" in html else None

    warn(today - dt.timedelta(days=3), (today - dt.timedelta(days=1)).isoformat(), "LV1")
    assert shown() is None  # its day has passed
    warn(today - dt.timedelta(days=9), None, "LV1")
    assert "LV1" in shown()  # no date: open
    warn(today - dt.timedelta(days=5), today.isoformat(), "LV3")  # newer, and open today
    assert "LV3" in shown() and str(today.day) in shown()
    warn(today - dt.timedelta(days=1), (today - dt.timedelta(days=1)).isoformat(), "LV1")  # newest, but over
    assert "LV3" in shown()


# --- the program page ------------------------------------------------------------------------


def test_program_page_shows_requirement_rows_with_progress_and_hints(site):
    client = site.client("c004")  # LV1 now; LV2 lost on posts_30d and avg_plays_30d
    html = page(client, "/programs/creator")
    assert "保持LV1需达成" in element(html, "data-level-section", "LV1")
    assert "升至LV2需达成" in element(html, "data-level-section", "LV2")
    kept = requirement_rows(html, "LV1")
    assert kept and all("req met" in row for row in kept.values())
    for row in kept.values():
        assert 'aria-valuenow="100"' in row and 'class="hint"' not in row
    rows = requirement_rows(html, "LV2")
    assert set(rows) == {"courses_completed", "posts_30d", "avg_plays_30d", "submission_tasks"}
    posts, plays = rows["posts_30d"], rows["avg_plays_30d"]
    assert "req unmet" in posts and "req unmet" in plays
    assert "req met" in rows["courses_completed"] and 'class="hint"' not in rows["courses_completed"]
    # actual, required, progress, hint
    assert (text(element(posts, "data-actual")), text(element(posts, "data-required"))) == ("6", "8")
    assert 'aria-valuenow="75"' in posts and "width: 75%" in posts
    assert text(element(posts, "class", "hint")) == "近30天内还差2"
    assert (text(element(plays, "data-actual")), text(element(plays, "data-required"))) == ("8,000", "1万")
    assert 'aria-valuenow="80"' in plays
    assert text(element(plays, "class", "hint")) == "需达到1万（当前8,000）"

    switch_language(client, "en")
    rows = requirement_rows(page(client, "/programs/creator"), "LV2")
    assert text(element(rows["posts_30d"], "class", "hint")) == "2 more within the last 30 days window"
    assert text(element(rows["avg_plays_30d"], "class", "hint")) == "Needs to reach 10,000 (now 8,000)"
    assert "Posts in the last 30 days" in rows["posts_30d"]


def test_program_page_hints_what_to_do_for_an_unmet_task(site):
    client = site.client("c005")
    html = page(client, "/programs/creator")
    assert 'data-level-section="LV1"' in html and "升至LV1需达成" in html
    rows = requirement_rows(html, "LV1")
    assert "req met" in rows["profile_complete"]
    hall = rows["task_hall_visited"]
    assert "req unmet" in hall and 'aria-valuenow="0"' in hall
    assert text(element(hall, "class", "hint")).startswith("待完成：")


def test_program_page_draws_a_trend_chart_for_unmet_requirements(site):
    html = page(site.client("c004"), "/programs/creator")
    for key in ("posts_30d", "avg_plays_30d"):
        chart = chart_after(html, "LV2", key)
        assert chart is not None, key
        assert "<svg" in chart and 'class="trend"' in chart
        assert re.search(r'<line x1="0" x2="320" y1="[\d.]+" y2="[\d.]+" class="threshold"/>', chart), chart
        assert len(re.findall(r'<rect [^>]*class="col"/>', chart)) == 8
        assert "按周统计，近8周" in chart
    for level, rows in (("LV1", requirement_rows(html, "LV1")), ("LV2", requirement_rows(html, "LV2"))):
        for key, row in rows.items():
            if "req met" in row:
                assert chart_after(html, level, key) is None, (level, key)
    # c004 posted every 4 days over the last 3 weeks (2 posts a week, 8,000 plays each): those
    # bars are equal, and the line sits at the weekly pace of the requirement relative to them -
    # 8 posts per 30 days is 8 * 7 / 30 a week; the average is compared with 10,000 as it is.
    for key, line_over_bar in (("posts_30d", (8 * 7 / 30) / 2), ("avg_plays_30d", 10_000 / 8_000)):
        bars, line = chart_geometry(chart_after(html, "LV2", key))
        assert bars[-1] == bars[-2] == bars[-3] > 0, (key, bars)
        assert line / bars[-1] == pytest.approx(line_over_bar, rel=0.01), (key, bars, line)
    # at most four charts per page
    assert page(site.client("c001"), "/programs/creator").count("<svg") <= 4


def test_program_page_shows_the_reward_task_state(site):
    html = page(site.client("c001"), "/programs/creator")
    assert site.standing("c001", "creator").reward_met is True
    reward = element(html, "data-reward")
    assert "奖励任务（考核周期：3个月）" in reward and "已达成：奖励权益已解锁。" in reward
    rows = {re.search(r'data-req="([^"]+)"', r).group(1): r for r in elements(reward, "data-req")}
    assert "LV3/orders_90d" in rows and all("req met" in r for r in rows.values())
    assert (text(element(rows["LV3/orders_90d"], "data-actual")), text(element(rows["LV3/orders_90d"], "data-required"))) == ("7", "6")
    assert "满足其一即可" in rows["LV3/avg_video_plays_90d"]  # one of the plays options is enough

    assert site.standing("c003", "creator").reward_met is False
    reward = element(page(site.client("c003"), "/programs/creator"), "data-reward")
    assert "未达成：完成奖励任务即可解锁当前等级的奖励权益。" in reward and "已达成：奖励权益已解锁" not in reward
    orders = element(reward, "data-req", "LV1/orders_90d")
    assert "req unmet" in orders and text(element(orders, "class", "hint")) == "近90天内还差3"


def test_program_page_shows_the_composite_index(site):
    client = site.client("c001")
    switch_language(client, "en")
    composite = element(page(client, "/programs/creator"), "data-composite")
    assert "Composite index" in composite
    values = site.values("c001", "creator")
    keys = ["propagation_index", "cooperation_index", "growth_index", "value_index", "seeding_index"]
    for label, key in zip(["Propagation", "Cooperation", "Growth", "Cost-effectiveness", "Seeding"], keys, strict=True):
        assert re.search(rf"<span>{label}</span><span>{values[key]:g}</span>", composite), label
        assert f'aria-valuenow="{values[key]:g}"' in composite
    expected = round(sum(values[k] for k in keys) / len(keys), 1)
    assert float(text(element(composite, "data-composite-score"))) == expected
    assert "data-composite" not in page(site.client("u001"), "/programs/music")


def test_program_page_shows_the_evidence_for_a_music_sub_class(site):
    client = site.client("u001")
    assert site.standing("u001", "music").sub_class == "high"
    switch_language(client, "en")
    evidence = element(page(client, "/programs/music"), "data-evidence")
    assert "Evidence to supply" in evidence
    assert "A screen recording of the data dashboard and the audience profile" in evidence
    # u003 is in A with sub-class low: A has no evidence text for 'low' in the definition
    assert "data-evidence" not in page(site.client("c001"), "/programs/creator")


# --- history ---------------------------------------------------------------------------------


def test_history_shows_the_downgrade_with_its_reasons_and_how_to_recover(site):
    client = site.client("c004")
    html = page(client, "/history")
    assert "<h1>等级变动</h1>" in html
    changes = elements(html, "data-change")
    assert len(changes) == 2
    down = changes[0]  # newest first
    assert 'class="card change down"' in down
    assert "降级" in down and "LV2 → LV1" in text(down)
    reasons = {re.search(r'data-reason="([^"]+)"', r).group(1): text(r) for r in elements(down, "data-reason")}
    assert set(reasons) == {"posts_30d", "avg_plays_30d"}
    assert reasons["posts_30d"].endswith("6 (要求 >= 8)")
    assert reasons["avg_plays_30d"].endswith("8,000 (要求 > 1万)")
    assert "如何恢复" in down and 'class="hint"' in down
    up = changes[1]
    assert 'class="card change up"' in up and "未定级 → LV2" in text(up) and "如何恢复" not in up

    switch_language(client, "en")
    down = elements(page(client, "/history"), "data-change")[0]
    assert "Downgrade reasons" in down and "How to recover" in down
    assert "Posts in the last 30 days: 6 (required >= 8)" in text(down)
    assert "Average effective plays, last 30 days: 8,000 (required > 10,000)" in text(down)


def test_history_of_a_blacklisting_and_of_nothing_yet(site):
    html = page(site.client("u004"), "/history")
    blacklisting = elements(html, "data-change")[0]
    assert "已列入黑名单" in blacklisting and "变动依据" in blacklisting
    assert 'data-reason="like_play_ratio"' in blacklisting
    assert "如何恢复" not in blacklisting
    c005 = page(site.client("c005"), "/history")
    assert "data-change" not in c005 and "暂无等级变动。" in c005


# --- notifications ---------------------------------------------------------------------------


def test_notifications_show_the_unread_count_and_can_be_marked_read(site):
    client = site.client("c001")
    total = len(site.notifications("c001"))
    unread = site.unread("c001")
    assert unread == total > 2
    html = page(client, "/notifications")
    assert text(element(html, "data-unread")) == str(unread)
    assert text(element(page(client, "/"), "data-unread")) == str(unread)  # in the header everywhere
    listed = elements(html, "data-notification")
    assert len(listed) == total and all('class="card unread"' in li for li in listed)
    ids = [int(re.search(r'data-notification="(\d+)"', li).group(1)) for li in listed]
    assert ids == sorted(ids, reverse=True)  # newest first
    assert 'data-kind="level_up"' in html and "未定级 → LV3" in text(html)

    one = ids[0]
    response = post(client, f"/notifications/{one}/read", token_from="/notifications")
    assert response.status_code == 303 and response.headers["Location"].endswith("/notifications")
    assert site.notification(one).read_at is not None
    html = page(client, "/notifications")
    assert text(element(html, "data-unread")) == str(unread - 1)
    li = element(html, "data-notification", str(one))
    assert "unread" not in li and f"/notifications/{one}/read" not in li
    # marking it again is harmless
    first_read_at = site.notification(one).read_at
    post(client, f"/notifications/{one}/read")
    assert site.notification(one).read_at == first_read_at

    response = post(client, "/notifications/read", token_from="/notifications")
    assert response.status_code == 303
    assert site.unread("c001") == 0
    html = page(client, "/notifications")
    assert "data-unread" not in html and "data-read-all" not in html and "card unread" not in html


def test_marking_read_returns_to_the_referring_page_of_this_site_only(site):
    client = site.client("c001")
    token = csrf_token(page(client, "/"))
    own = client.post("/notifications/read", data={"csrf_token": token}, headers={"Referer": "http://localhost/history"})
    assert own.status_code == 303 and own.headers["Location"] == "http://localhost/history"
    other = client.post("/notifications/read", data={"csrf_token": token}, headers={"Referer": "https://evil.example/x"})
    assert other.status_code == 303 and other.headers["Location"] == "/notifications"


# --- password --------------------------------------------------------------------------------


def test_change_password_refuses_a_wrong_current_password_and_a_mismatch(site):
    client = site.client("c001")
    before = site.member("c001").password_hash
    html = page(client, "/account/password")
    assert "<h1>修改密码</h1>" in html and 'name="current"' in html
    wrong = post(client, "/account/password", {"current": "not-it-at-all", "new": "brand-new-pass",
                                                 "confirm": "brand-new-pass"}, token_from="/account/password")
    assert wrong.status_code == 400
    assert "当前密码不正确。" in flashes(wrong.get_data(as_text=True))
    mismatch = post(client, "/account/password", {"current": PASSWORD, "new": "brand-new-pass",
                                                    "confirm": "brand-new-pasz"}, token_from="/account/password")
    assert mismatch.status_code == 400
    assert any("两次输入必须一致" in f for f in flashes(mismatch.get_data(as_text=True)))
    short = post(client, "/account/password", {"current": PASSWORD, "new": "short", "confirm": "short"},
                 token_from="/account/password")
    assert short.status_code == 400
    assert site.member("c001").password_hash == before


def test_change_password_then_the_new_one_logs_in_and_the_old_one_does_not(site):
    client = site.client("c001")
    response = post(client, "/account/password", {"current": PASSWORD, "new": "brand-new-pass",
                                                    "confirm": "brand-new-pass"}, token_from="/account/password")
    assert response.status_code == 303 and response.headers["Location"].endswith("/")
    assert "密码已修改。" in flashes(page(client, "/"))
    assert post(client, "/logout").status_code == 302
    assert client.get("/").status_code == 302

    assert login(site.app.test_client(), "c001", PASSWORD).status_code == 401
    fresh = site.app.test_client()
    assert login(fresh, "c001", "brand-new-pass").status_code == 302
    assert text(element(page(fresh, "/"), "data-level")) == "LV3"


# --- language and numbers --------------------------------------------------------------------


def test_language_defaults_to_chinese_switches_to_english_and_is_remembered(site):
    client = site.client("m005")
    html = page(client, "/")
    assert "<h1>我的等级</h1>" in html and '<html lang="zh-CN">' in html
    assert text(element(html, "data-lang-switch")) == "English"
    response = post(client, "/locale/en")
    assert response.status_code == 303
    assert site.member("m005").locale == "en"
    html = page(client, "/")
    assert "<h1>My levels</h1>" in html and '<html lang="en">' in html
    assert text(element(html, "data-lang-switch")) == "中文"
    assert "<h1>My benefits</h1>" in page(client, "/benefits")
    assert "<h1>History</h1>" in page(client, "/history")
    assert "<h1>Notifications</h1>" in page(client, "/notifications")
    assert "<h1>Change password</h1>" in page(client, "/account/password")
    assert "To keep partner" in page(client, "/programs/member")

    # A new browser: Chinese until the member logs in, then their choice.
    fresh = site.app.test_client()
    assert "<h1>登录</h1>" in fresh.get("/login").get_data(as_text=True)
    assert login(fresh, "m005", PASSWORD).status_code == 302
    assert "<h1>My levels</h1>" in page(fresh, "/")
    # another member is not affected
    assert "<h1>我的等级</h1>" in page(site.client("m001"), "/")

    # and back to Chinese
    assert post(fresh, "/locale/zh_CN").status_code == 303
    assert "<h1>我的等级</h1>" in page(fresh, "/") and site.member("m005").locale == "zh_CN"


def test_an_unknown_language_changes_nothing(site):
    client = site.client("c001")
    response = post(client, "/locale/xx")
    assert response.status_code == 303
    assert site.member("c001").locale is None
    assert "<h1>我的等级</h1>" in page(client, "/")


def test_ten_thousand_is_1wan_in_chinese_and_10000_in_english_on_the_same_page(site):
    client = site.client("c001")
    item = site.find_item("c001", "gold_booth")
    assert item.value == 10_000
    listed = text(element(page(client, "/benefits"), "data-item", str(item.id)))
    assert "价值: 1万" in listed and "10,000" not in listed
    switch_language(client, "en")
    listed = text(element(page(client, "/benefits"), "data-item", str(item.id)))
    assert "Worth: 10,000" in listed and "万" not in listed

    c004 = site.client("c004")
    reason = text(element(page(c004, "/history"), "data-reason", "avg_plays_30d"))
    assert "1万" in reason and "10,000" not in reason
    switch_language(c004, "en")
    reason = text(element(page(c004, "/history"), "data-reason", "avg_plays_30d"))
    assert "10,000" in reason and "万" not in reason


def test_chinese_pages_show_the_definition_texts_in_chinese(site):
    """Names, labels and evidence come from the definitions in the page's language (Babel calls
    the default locale zh_Hans_CN; the definitions say zh_CN)."""
    client = site.client("c001")
    card = element(page(client, "/"), "data-program", "creator")
    assert "创作者等级" in card and "LV3 创作者" in card
    program = page(client, "/programs/creator")
    assert "<h1>创作者等级</h1>" in program
    assert "完成课程数" in requirement_rows(program, "LV3")["courses_completed"]
    assert "综合指数" in element(program, "data-composite")
    evidence = element(page(site.client("u001"), "/programs/music"), "data-evidence")
    assert "开放数据后台录屏及用户画像" in evidence
    history = elements(page(site.client("c004"), "/history"), "data-change")[0]
    assert "创作者等级" in history and "近30天发布作品数: 6" in text(history)
    switch_language(client, "en")
    card = element(page(client, "/"), "data-program", "creator")
    assert "Creator levels" in card and "LV3 creator" in card


def test_benefits_page_shows_the_benefit_names_in_the_pages_language(site):
    client = site.client("c001")
    gold, card = site.find_item("c001", "gold_booth"), site.find_item("c001", "guarantee_card")
    html = page(client, "/benefits")
    assert "黄金展位" in text(element(html, "data-item", str(gold.id)))
    assert "投稿任务收益保底卡" in text(element(html, "data-item", str(card.id)))
    switch_language(client, "en")
    html = page(client, "/benefits")
    assert "Gold booth" in text(element(html, "data-item", str(gold.id)))
    assert "Guarantee card" in text(element(html, "data-item", str(card.id)))


# --- constant number of SQL statements per page ------------------------------------------------


def _add_rows(site: Site, member: str, n: int) -> None:
    """n more benefit items, level changes and notifications of every kind, inserted directly."""
    member_id = site.member_id(member)
    today = dt.date.today()
    now = dt.datetime.now(dt.UTC)
    states = [("available", "claim"), ("available", "review"), ("claimed", "claim"), ("issued", "auto"),
              ("pending_review", "review"), ("rejected", "review"), ("expired", "claim"), ("revoked", "auto")]
    kinds = ["level_up", "level_down", "benefit_issued", "benefit_available", "benefit_expiring",
             "downgrade_warning", "blacklisted", "review_result"]
    reason = {"level": "LV2", "key": "posts_30d", "metric": "video+live", "actual": 6, "op": ">=", "required": 8,
              "met": False, "window": "30d"}
    with site.db() as s:
        for i in range(n):
            state, mode = states[i % len(states)]
            s.add(BenefitItem(member_id=member_id, program_key="creator", level="LV1", tenure=today,
                              benefit_key=f"extra_{i}", tier="basic" if i % 3 else "reward", mode=mode, state=state,
                              quantity=1 + i % 4, amount=1000.0 * i if i % 2 else None, value=10_000 + i,
                              due_on=today - dt.timedelta(days=i), expires_on=today + dt.timedelta(days=90),
                              period=f"extra-{i}", reason="extra" if i % 5 == 0 else None,
                              review_note="ok" if state == "rejected" else None, created_at=now))
            down = i % 2 == 0
            s.add(LevelChange(member_id=member_id, program_key="creator", on=today - dt.timedelta(days=30 + i),
                              from_level="LV2" if down else "LV1", to_level="LV1" if down else "LV2",
                              direction="down" if down else "up", cause="evaluation",
                              reasons=[reason, dict(reason, key="avg_plays_30d", actual=8000, op=">", required=10000)]
                              if down else [], program_version=1, created_at=now))
            kind = kinds[i % len(kinds)]
            payload = {"from": "LV2", "to": "LV1", "benefit": f"extra_{i}", "quantity": 2, "expires_on": "2099-01-01",
                       "level": "LV1", "by": "2099-12-31", "reason": "consecutive", "approved": i % 2 == 0,
                       "note": "n", "failing": [reason], "reasons": [reason]}
            s.add(Notification(member_id=member_id, program_key="creator", kind=kind, on=today - dt.timedelta(days=i),
                               payload=payload, dedup_key=f"extra:{i}", created_at=now))
        s.commit()


def test_each_page_issues_the_same_number_of_statements_with_few_or_many_rows(site):
    client = site.client("c003")  # 3 items, 4 notifications, 1 level change
    for path in MEMBER_PAGES:
        page(client, path)  # warm any per-process caches (parsed definitions)
    few = {path: page_statements(site.app, client, path) for path in MEMBER_PAGES}
    _add_rows(site, "c003", 50)
    many = {path: page_statements(site.app, client, path) for path in MEMBER_PAGES}
    assert {p: len(s) for p, s in many.items()} == {p: len(s) for p, s in few.items()}, {
        p: many[p][len(few[p]):] for p in MEMBER_PAGES if len(many[p]) != len(few[p])}
    assert all(len(s) > 0 for s in few.values())
    # ... and the pages did show the added rows
    assert len(elements(page(client, "/benefits"), "data-item")) == 53
    assert len(elements(page(client, "/history"), "data-change")) == 51
    assert len(elements(page(client, "/notifications"), "data-notification")) == 54
    assert "data-warning" in page(client, "/")


def test_the_header_count_is_read_with_the_session_check(site):
    """Every logged-in page shows the unread count: it comes with the login-session check, so
    no page spends a statement of its own on it - and the count is still right."""
    client = site.client("c003")
    page(client, "/")
    statements = page_statements(site.app, client, "/")
    counting = [s for s in statements if "notifications" in s and "count(" in s.lower()]
    assert len(counting) == 1 and "login_sessions" in counting[0], counting
    _add_rows(site, "c003", 3)
    assert text(element(page(client, "/"), "data-unread")) == str(site.unread("c003"))


# --- bugs found by these tests, since fixed -------------------------------------------------------


def test_scorecard_cut_offs_have_no_dangling_separator(site):
    card = element(page(site.client("s001"), "/"), "data-program", "scorecard")
    line = re.search(r'<p class="muted small">([^<]*≥[^<]*)</p>', card).group(1)
    assert text(line) == "S ≥ 90 · A ≥ 75 · B ≥ 60 · C ≥ 40"


def test_trend_chart_of_a_latest_value_shows_the_current_reading(site):
    html = page(site.client("c001"), "/programs/creator")
    row = requirement_rows(html, "LV4")["courses_completed"]
    assert "req unmet" in row and text(element(row, "data-actual")) == "9"
    chart = chart_after(html, "LV4", "courses_completed")
    assert chart is not None
    bars, _line = chart_geometry(chart)
    assert bars[-1] > 0


def test_claim_flash_and_notifications_name_the_benefit(site):
    client = site.client("c001")
    switch_language(client, "en")
    item = site.find_item("c001", "guarantee_card")
    post(client, f"/benefits/{item.id}/claim", token_from="/benefits")
    assert "Claimed: Guarantee card" in flashes(page(client, "/benefits"))
    fanxing = [n for n in site.notifications("c001") if n.payload.get("benefit") == "fanxing_priority"]
    assert fanxing
    listed = text(element(page(client, "/notifications"), "data-notification", str(fanxing[0].id)))
    assert "Fanxing priority" in listed and "fanxing_priority" not in listed


def test_a_number_rounding_up_to_the_next_chinese_unit_uses_that_unit(site):
    member_id = site.member_id("c001")
    with site.db() as s:
        s.add(BenefitItem(member_id=member_id, program_key="creator", level="LV3", benefit_key="gold_booth",
                          tier="basic", mode="auto", state="issued", quantity=1, value=99_999_999,
                          due_on=dt.date.today(), period="big-one", created_at=dt.datetime.now(dt.UTC)))
        s.commit()
        item_id = s.scalar(select(BenefitItem.id).where(BenefitItem.period == "big-one"))
    listed = text(element(page(site.client("c001"), "/benefits"), "data-item", str(item_id)))
    assert "价值: 1亿" in listed, listed
