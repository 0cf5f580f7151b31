"""The authorization matrix: every rule of the application's URL map (each method apart,
static/HEAD/OPTIONS aside) is one test case, classified in MATRIX below, and checked against
every kind of caller on one real database (SQLite file, one app per module):

- anonymous: a page redirects to /login, an API endpoint answers 401 JSON (also with only a
  browser session cookie, a garbage token or a revoked one);
- a member: 403 on every staff and admin route, GET and POST (with a valid CSRF token, so the
  refusal is the role check and not CSRF); staff: 403 on every admin route;
- member-scoped routes with an object id (a benefit item, a notification, a program, an
  evidence file, ...):
  member B asking for member A's object gets 404, the same answer as for an id that does not
  exist, and nothing changes; A's own request does what it should;
- API: a member token asking for another member's resources gets 403/404, a member token on a
  staff endpoint gets 403, no token 401; the permitted token is served.

Each refusal is followed by the same request from the caller that *is* allowed, so a route that
refuses everybody cannot pass. A route added to the app without a MATRIX entry fails here by
name, and so does an entry whose route is gone.
"""

from __future__ import annotations

import datetime as dt
import hashlib
import io
import itertools
import re
from collections.abc import Callable
from dataclasses import dataclass, field
from functools import cache
from pathlib import Path
from typing import Any

import pytest
from sqlalchemy import select

from portal import create_app
from portal.models import Base, BenefitItem, Member, Notification

from ..helpers import World
from .test_web import csrf_token, login

PASSWORD = "matrix-pass-1"
SKIPPED_METHODS = {"HEAD", "OPTIONS"}
# Append-only records *of the request itself*: a refusal is written there on purpose, so they
# are left out of "nothing changed".
REQUEST_LOGS = {"security_events"}
TODAY = dt.date.today()
MISSING_ID = 987_654_321
# How member pages mark the objects they list (data-item="12", data-notification="7").
MARKER = re.compile(r'data-(item|notification)="(\d+)"')
PDF = b"%PDF-1.4\n% evidence for the authorization matrix\n"

# Route classes
PUBLIC = "public"  # anyone, no login
MEMBER_OWN = "member-own"  # the logged-in account's own pages: no object id in the URL
MEMBER_SCOPED = "member-scoped"  # the id of an object that belongs to one member
STAFF = "staff"  # role staff or admin
ADMIN = "admin"  # role admin only
API_PUBLIC = "api-public"  # no token needed
API_MEMBER = "api-member"  # a member token for its own member; staff tokens for anyone
API_STAFF = "api-staff"  # staff tokens only
PAGE_CLASSES = (PUBLIC, MEMBER_OWN, MEMBER_SCOPED, STAFF, ADMIN)


class ForeignObjectNot404(AssertionError):
    """Member B's request for member A's object was refused without changing anything, but the
    answer was not the 404 an unknown id gets (xfail markers name this exact failure)."""


# --- the world: two members, staff, an admin, their clients and tokens -------------------------


class Ctx:
    """The module's app and database, the people in it and a logged-in client for each."""

    def __init__(self, app):
        self.app = app
        self._serial = itertools.count(1)
        from portal.services import tokens
        from portal.services.passwords import hash_password

        with self.db() as s:
            world = World(s)
            self.ids = {"alice": world.member("alice", "creator", "music"), "bob": world.member("bob", "member"),
                        "sam": world.member("sam", role="staff"), "ada": world.member("ada", role="admin")}
            pw = hash_password(PASSWORD)
            for key in self.ids:
                member = s.scalar(select(Member).where(Member.key == key))
                member.password_hash, member.email, member.name = pw, f"{key}@matrix.test", f"Name-{key}-7f3a"
            self.tokens = {"alice": tokens.create(s, "alice-app", "member", "alice"),
                           "bob": tokens.create(s, "bob-app", "member", "bob"),
                           "staff": tokens.create(s, "crm", "staff"),
                           "revoked": tokens.create(s, "old-crm", "staff")}
            tokens.revoke(s, "old-crm")
            s.commit()
            for program in ("creator", "music", "member"):  # standings, as after the first scheduled run
                world.evaluate(program, TODAY)
        self.clients = {key: self.login(key) for key in self.ids}

    def db(self):
        return self.app.extensions["portal.db"].factory()

    def login(self, key: str):
        client = self.app.test_client()
        response = login(client, key, PASSWORD)
        assert response.status_code == 302, f"login of {key} failed: {response.status_code}"
        return client

    def anonymous(self):
        return self.app.test_client()

    def csrf(self, client) -> str:
        """A valid CSRF token of the client's session (any page with a form carries it)."""
        token = getattr(client, "matrix_csrf", None)
        if token is None:
            token = client.matrix_csrf = csrf_token(client.get("/login").get_data(as_text=True))
        return token

    # -- objects: fresh ones per case, so no case depends on another's leftovers

    def item(self, owner: str, mode: str = "claim", state: str = "available") -> int:
        n = next(self._serial)
        benefit = {"claim": "guarantee_card", "review": "case_showcase"}[mode]
        with self.db() as s:
            item = BenefitItem(member_id=self.ids[owner], program_key="creator", level=None, benefit_key=benefit,
                               tier="grant", mode=mode, state=state, quantity=1, due_on=TODAY,
                               period=f"matrix-{n}", created_at=dt.datetime.now(dt.UTC))
            s.add(item)
            s.commit()
            return item.id

    def notification(self, owner: str) -> int:
        n = next(self._serial)
        with self.db() as s:
            row = Notification(member_id=self.ids[owner], program_key="creator", kind="benefit_issued", on=TODAY,
                               payload={"benefit": "guarantee_card"}, dedup_key=f"matrix:{n}",
                               created_at=dt.datetime.now(dt.UTC))
            s.add(row)
            s.commit()
            return row.id

    def evidence(self, owner: str, program: str = "music") -> int:
        """An evidence file of the member, stored by the service where the site keeps them."""
        from portal.services import evidence
        from portal.services import programs as programs_service
        from portal.web.member import evidence_root

        with self.app.test_request_context(), self.db() as s:
            definition, _version = programs_service.definition(s, program)
            row = evidence.store(s, evidence_root(), self.ids[owner], definition, f"proof-{owner}.pdf", PDF)
            s.commit()
            return row.id

    def owned(self, owner: str) -> set[tuple[str, int]]:
        """("item" | "notification", id) of every such object of the member."""
        member_id = self.ids[owner]
        with self.db() as s:
            items = s.scalars(select(BenefitItem.id).where(BenefitItem.member_id == member_id))
            notes = s.scalars(select(Notification.id).where(Notification.member_id == member_id))
            return {("item", i) for i in items} | {("notification", n) for n in notes}

    def snapshot(self) -> dict[str, Any]:
        """Every row of every table but the request logs (the database is small), and every
        file in the instance folder (uploads live there)."""
        with self.db() as s:
            state: dict[str, Any] = {
                t.name: sorted((tuple(map(repr, row)) for row in s.execute(t.select())), key=repr)
                for t in Base.metadata.sorted_tables if t.name not in REQUEST_LOGS}
        root = Path(self.app.instance_path)
        state["files in the instance folder"] = sorted(
            (str(f.relative_to(root)), hashlib.sha256(f.read_bytes()).hexdigest()) for f in root.rglob("*") if f.is_file())
        return state


@pytest.fixture(scope="module")
def ctx(tmp_path_factory) -> Ctx:
    from portal.cli import init_database

    tmp = tmp_path_factory.mktemp("authz")
    app = create_app({"DATABASE_URL": f"sqlite:///{tmp / 'portal.db'}", "TESTING": True, "PORTAL_CLI": True,
                      "SECRET_KEY": "authz-matrix"})
    app.instance_path = str(tmp / "instance")
    with app.app_context():
        init_database(app)
    yield Ctx(app)
    app.extensions["portal.db"].engine.dispose()


# --- the matrix --------------------------------------------------------------------------------


Values = Callable[[Ctx], dict[str, Any]]


def _none(_ctx: Ctx) -> dict[str, Any]:
    return {}


@dataclass(frozen=True)
class Route:
    endpoint: str
    kind: str
    # URL values of real objects. MEMBER_SCOPED / API_MEMBER: an object of member A (alice).
    values: Values = _none
    # MEMBER_SCOPED: the same URL with an id that exists nowhere (the answer must be the same).
    missing: dict[str, Any] = field(default_factory=dict)
    # A well-formed request body, so that a refusal is about who asks, not what is sent (a
    # callable for a fresh one per request: uploads).
    form: dict[str, Any] | Callable[[], dict[str, Any]] = field(default_factory=dict)
    # The permitted caller's answer: 200 for a GET, 303 for a POST unless given.
    ok: int | None = None
    # The permitted caller's body, when the refused body would change shared state (roles...).
    ok_form: dict[str, Any] | None = None
    # MEMBER_OWN: the kind of object the page lists ("item", "notification"), by data-* marker.
    lists: str | None = None


def _alice(_ctx: Ctx) -> dict[str, Any]:
    return {"member": "alice"}


def _alice_key(_ctx: Ctx) -> dict[str, Any]:
    return {"key": "alice"}


def _creator(_ctx: Ctx) -> dict[str, Any]:
    return {"key": "creator"}


STAFF_FORMS = {
    "grant": {"benefit": "fanxing_priority", "program": "creator", "quantity": "1", "reason": "matrix"},
    "override": {"program": "creator", "level": "LV4", "reason": "matrix"},
    "lift": {"program": "creator", "reason": "matrix"},
    "blacklist": {"program": "creator", "action": "on", "reason": "matrix"},
    "dispatch": {"day": TODAY.isoformat(), "count": "1", "reason": "matrix"},
    "segments": {"business_type": "brand", "reason": "matrix"},
}

MATRIX: dict[str, Route] = {
    # -- public pages and the public API document
    "GET /login": Route("auth.login", PUBLIC, ok=200),
    "POST /login": Route("auth.login", PUBLIC, form={"username": "bob", "password": PASSWORD}, ok=302),
    "POST /locale/<code>": Route("set_locale", PUBLIC, values=lambda c: {"code": "en"}, ok=303),
    "GET /healthz": Route("health.healthz", PUBLIC, ok=200),
    "GET /api/v1/openapi.json": Route("api.openapi", API_PUBLIC, ok=200),
    # -- the logged-in account's own pages (whoever is logged in sees only their own)
    "GET /": Route("member.overview", MEMBER_OWN),
    "GET /history": Route("member.history", MEMBER_OWN),
    "GET /benefits": Route("member.benefits", MEMBER_OWN, lists="item"),
    "GET /notifications": Route("member.notifications", MEMBER_OWN, lists="notification"),
    "POST /notifications/read": Route("member.mark_read", MEMBER_OWN),
    "GET /account/password": Route("auth.change_password", MEMBER_OWN),
    # A wrong current password: the form is processed (400), nobody's password changes.
    "POST /account/password": Route("auth.change_password", MEMBER_OWN, ok=400, form={
        "current": "not-the-password", "new": "another-pass-2", "confirm": "another-pass-2"}),
    "POST /logout": Route("auth.logout", MEMBER_OWN, ok=302),
    # -- one member's objects, by id
    "GET /programs/<key>": Route("member.program", MEMBER_SCOPED, values=_creator, missing={"key": "no-such-program"}),
    "POST /benefits/<int:item_id>/claim": Route(
        "member.claim", MEMBER_SCOPED, values=lambda c: {"item_id": c.item("alice", "claim")},
        missing={"item_id": MISSING_ID}),
    "POST /benefits/<int:item_id>/review": Route(
        "member.submit_review", MEMBER_SCOPED, values=lambda c: {"item_id": c.item("alice", "review")},
        missing={"item_id": MISSING_ID}, form={"text": "our best campaign"}),
    "POST /notifications/<int:notification_id>/read": Route(
        "member.mark_read", MEMBER_SCOPED, values=lambda c: {"notification_id": c.notification("alice")},
        missing={"notification_id": MISSING_ID}),
    # Evidence files (music takes them; alice is enrolled, bob is not): upload into a program
    # one is enrolled in, download and delete one's own files only.
    "POST /programs/<key>/evidence": Route(
        "member.upload_evidence", MEMBER_SCOPED, values=lambda c: {"key": "music"}, missing={"key": "no-such-program"},
        form=lambda: {"file": (io.BytesIO(PDF), "proof.pdf")}),
    "GET /programs/<key>/evidence/<int:file_id>": Route(
        "member.evidence_file", MEMBER_SCOPED, values=lambda c: {"key": "music", "file_id": c.evidence("alice")},
        missing={"key": "music", "file_id": MISSING_ID}),
    "POST /programs/<key>/evidence/<int:file_id>/delete": Route(
        "member.delete_evidence", MEMBER_SCOPED, values=lambda c: {"key": "music", "file_id": c.evidence("alice")},
        missing={"key": "music", "file_id": MISSING_ID}),
    # -- the staff console (staff and admin)
    "GET /staff/": Route("staff.home", STAFF),
    "GET /staff/members": Route("staff.members", STAFF),
    "GET /staff/members.csv": Route("staff.members_csv", STAFF),
    "GET /staff/members/<key>": Route("staff.member", STAFF, values=_alice_key),
    "GET /staff/members/<key>/evidence/<int:file_id>": Route(
        "staff.member_evidence", STAFF, values=lambda c: {"key": "alice", "file_id": c.evidence("alice")}),
    **{f"POST /staff/members/<key>/{action}": Route(f"staff.{action}", STAFF, values=_alice_key, form=form)
       for action, form in STAFF_FORMS.items()},
    "GET /staff/reviews": Route("staff.reviews", STAFF),
    "POST /staff/reviews/<int:item_id>": Route(
        "staff.review", STAFF, values=lambda c: {"item_id": c.item("alice", "review", "pending_review")},
        form={"decision": "approve", "note": "matrix"}, ok_form={"decision": "neither", "note": "matrix"}),
    "GET /staff/programs": Route("staff.programs", STAFF),
    "GET /staff/programs/<key>": Route("staff.program", STAFF, values=_creator),
    "GET /staff/programs/<key>/versions/<int:version>": Route(
        "staff.program_version", STAFF, values=lambda c: {"key": "creator", "version": 1}),
    "POST /staff/programs/<key>/simulate": Route(
        "staff.simulate", STAFF, values=_creator, form={"mode": "scale", "percent": "-20"}, ok=200),
    "GET /staff/audit": Route("staff.audit", STAFF),
    "GET /staff/audit.csv": Route("staff.audit_csv", STAFF),
    "GET /staff/security": Route("staff.security_events", STAFF),
    # -- admin only (staff get 403). The admin's request is one the service then declines (303
    # with a message: nothing to change), so shared state (roles, tokens, versions) stays put.
    "POST /staff/programs/<key>/publish": Route(
        "staff.publish", ADMIN, values=_creator, form={"mode": "scale", "percent": "-20", "reason": "matrix"},
        ok_form={"mode": "scale", "percent": "-20"}),  # no reason
    "GET /staff/admin/tokens": Route("staff.tokens", ADMIN),
    # (Creating a token is harmless to the other cases: the admin's does succeed and shows it.)
    "POST /staff/admin/tokens": Route("staff.token_create", ADMIN, form={
        "name": "matrix-evil", "role": "staff", "reason": "matrix"}, ok=200,
        ok_form={"name": "matrix-by-admin", "role": "staff"}),
    "POST /staff/admin/tokens/revoke": Route("staff.token_revoke", ADMIN, form={"name": "crm", "reason": "matrix"},
                                             ok_form={"name": "old-crm", "reason": "matrix"}),
    "GET /staff/admin/staff": Route("staff.staff_roles", ADMIN),
    "POST /staff/admin/staff": Route("staff.set_role", ADMIN, form={"member": "bob", "role": "admin", "reason": "matrix"},
                                     ok_form={"member": "bob", "role": "member", "reason": "matrix"}),
    # -- the JSON API
    "GET /api/v1/members/<member>/standing": Route("api.standing", API_MEMBER, values=_alice),
    "GET /api/v1/members/<member>/history": Route("api.history", API_MEMBER, values=_alice),
    "GET /api/v1/members/<member>/benefits": Route("api.benefits", API_MEMBER, values=_alice),
    "POST /api/v1/members/<member>/benefits/<int:item_id>/claim": Route(
        "api.claim", API_MEMBER, values=lambda c: {"member": "alice", "item_id": c.item("alice", "claim")}),
    "POST /api/v1/metrics": Route("api.metrics", API_STAFF, form={
        "rows": [{"member": "alice", "metric": "plays", "date": TODAY.isoformat(), "value": 1}]}),
    "POST /api/v1/members/<member>/grants": Route("api.grant", API_STAFF, values=_alice, form={
        "benefit": "fanxing_priority", "program": "creator", "reason": "matrix"}),
    "POST /api/v1/members/<member>/override": Route("api.override", API_STAFF, values=_alice, form={
        "program": "creator", "level": "LV4", "reason": "matrix"}),
}

# Known authorization bugs: case id -> (the exact failure, reason). The case is xfail(strict) on
# that failure only (any other failure of the case still fails), and a fix turns it into an
# XPASS that fails until the entry goes.
KNOWN_BUGS: dict[str, tuple[type[BaseException], str]] = {}


def _key(method: str, rule) -> str:
    return f"{method} {rule.rule}"


@cache
def _url_map_keys() -> dict[str, str]:
    """Case id -> endpoint for every rule of a freshly built app (collection time; never
    connects to its database)."""
    app = create_app({"DATABASE_URL": "sqlite://", "TESTING": True, "PORTAL_CLI": True, "SECRET_KEY": "collect"})
    return {_key(m, r): r.endpoint for r in app.url_map.iter_rules() if r.endpoint != "static"
            for m in sorted(r.methods - SKIPPED_METHODS)}


def _cases() -> list:
    keys = sorted(set(_url_map_keys()) | set(MATRIX))
    out = []
    for key in keys:
        marks = []
        if key in KNOWN_BUGS:
            raises, reason = KNOWN_BUGS[key]
            marks.append(pytest.mark.xfail(strict=True, raises=raises, reason=reason))
        out.append(pytest.param(key, id=key, marks=marks))
    return out


# --- requests ----------------------------------------------------------------------------------


def _rules(ctx: Ctx) -> dict[str, Any]:
    return {_key(m, r): r for r in ctx.app.url_map.iter_rules() if r.endpoint != "static"
            for m in r.methods - SKIPPED_METHODS}


def _url(rule, values: dict[str, Any]) -> str:
    unknown = set(rule.arguments) - set(values)
    assert not unknown, f"{rule.rule}: the matrix gives no value for {sorted(unknown)}"
    _domain, path = rule.build({a: values[a] for a in rule.arguments})
    return path


def _send(ctx: Ctx, client, method: str, url: str, form: dict[str, Any] | None = None, *, token: str | None = None,
          api: bool = False):
    """One request. Pages: a POST carries the session's valid CSRF token. API: JSON and an
    optional bearer token."""
    form = form() if callable(form) else form
    if api:
        headers = {"Authorization": f"Bearer {token}"} if token else {}
        if method == "GET":
            return client.get(url, headers=headers)
        return client.open(url, method=method, json=form or {}, headers=headers)
    if method == "GET":
        return client.get(url)
    return client.open(url, method=method, data={**(form or {}), "csrf_token": ctx.csrf(client)})


def _where(response) -> str:
    body = response.get_data(as_text=True)
    return f"{response.status_code} {response.headers.get('Location', '')} {body[:200]!r}"


def _assert_login_redirect(response, what: str) -> None:
    location = response.headers.get("Location", "")
    assert response.status_code == 302 and location.split("?")[0].endswith("/login"), (
        f"{what}: anonymous should be sent to the login page, got {_where(response)}")


def _assert_json_error(response, status: int, what: str) -> None:
    assert response.status_code == status, f"{what}: expected {status}, got {_where(response)}"
    body = response.get_json(silent=True)
    assert isinstance(body, dict) and set(body) == {"error", "details"}, f"{what}: not a JSON error: {_where(response)}"


def _assert_ok(response, route: Route, method: str, what: str) -> None:
    expected = route.ok or (200 if method == "GET" else 303)
    assert response.status_code == expected, f"{what}: the permitted caller expected {expected}, got {_where(response)}"
    if response.status_code in (301, 302, 303) and route.endpoint != "auth.logout":
        location = response.headers.get("Location", "")
        assert not location.split("?")[0].endswith("/login"), f"{what}: sent to the login page: {_where(response)}"
    assert "Traceback" not in response.get_data(as_text=True)


# --- the checks, by class ----------------------------------------------------------------------


def _refused(ctx: Ctx, client, method: str, url: str, route: Route, status: int, what: str, **kw) -> None:
    """``client``'s request is refused with ``status`` and changes nothing."""
    before = ctx.snapshot()
    response = _send(ctx, client, method, url, route.form, **kw)
    assert response.status_code == status, f"{what}: expected {status}, got {_where(response)}"
    assert "Traceback" not in response.get_data(as_text=True)
    assert ctx.snapshot() == before, f"{what}: a refused request changed the database"


def _anonymous_page(ctx: Ctx, method: str, url: str, route: Route) -> None:
    before = ctx.snapshot()
    client = ctx.anonymous()
    _assert_login_redirect(_send(ctx, client, method, url, route.form), f"anonymous {method} {url}")
    assert ctx.snapshot() == before, f"anonymous {method} {url} changed the database"


def check_public(ctx: Ctx, method: str, url: str, route: Route) -> None:
    response = _send(ctx, ctx.anonymous(), method, url, route.form)
    _assert_ok(response, route, method, f"anonymous {method} {url}")


def check_member_own(ctx: Ctx, method: str, url: str, route: Route) -> None:
    _anonymous_page(ctx, method, url, route)
    # Logout ends the session it is sent with: a client of its own, not the shared one.
    alice = ctx.login("alice") if route.endpoint == "auth.logout" else ctx.clients["alice"]
    response = _send(ctx, alice, method, url, route.form)
    _assert_ok(response, route, method, f"alice {method} {url}")
    if route.endpoint == "auth.logout":
        _assert_login_redirect(alice.get("/"), "after logout")
    if method == "GET":
        # Same URL, whoever asks: each sees only their own objects. Alice's fresh ones are listed
        # on her page (where the page lists such things) and on nobody else's.
        fresh = {"item": ctx.item("alice"), "notification": ctx.notification("alice")}
        for who in ("alice", "bob"):
            body = _send(ctx, ctx.clients[who], method, url).get_data(as_text=True)
            shown = {(kind, int(n)) for kind, n in MARKER.findall(body)}
            foreign = shown - ctx.owned(who)
            assert not foreign, f"{who}'s {url} shows other members' objects: {sorted(foreign)}"
            assert f"Name-{'bob' if who == 'alice' else 'alice'}-7f3a" not in body, f"{who}'s {url} names the other member"
            if route.lists:
                listed = (route.lists, fresh[route.lists]) in shown
                assert listed == (who == "alice"), f"{who}'s {url}: alice's new {route.lists} listed: {listed}"


def check_member_scoped(ctx: Ctx, method: str, url: str, route: Route, rule) -> None:
    _anonymous_page(ctx, method, url, route)
    bob, alice = ctx.clients["bob"], ctx.clients["alice"]
    # Bob asks for alice's object: refused, nothing changes ...
    before = ctx.snapshot()
    foreign = _send(ctx, bob, method, url, route.form)
    assert "Traceback" not in foreign.get_data(as_text=True)
    assert ctx.snapshot() == before, f"bob's {method} {url} (alice's object) changed the database"
    # ... with the answer an id that exists nowhere gets (no probing for other members' ids) ...
    missing = _send(ctx, bob, method, _url(rule, route.missing), route.form)
    assert ctx.snapshot() == before
    assert foreign.status_code == missing.status_code, (
        f"bob {method} {url}: alice's object answers {foreign.status_code}, a missing one {missing.status_code}")
    # ... while alice's own request is served (and, for a POST, does change something).
    mine = _send(ctx, alice, method, url, route.form)
    _assert_ok(mine, route, method, f"alice {method} {url}")
    if method != "GET":
        assert ctx.snapshot() != before, f"alice's own {method} {url} changed nothing: the refusal above proves little"
    if foreign.status_code != 404:
        raise ForeignObjectNot404(f"bob {method} {url} (alice's object): expected 404, got {_where(foreign)}")


def check_staff(ctx: Ctx, method: str, url: str, route: Route, admin_only: bool) -> None:
    _anonymous_page(ctx, method, url, route)
    _refused(ctx, ctx.clients["alice"], method, url, route, 403, f"member {method} {url}")
    if admin_only:
        _refused(ctx, ctx.clients["sam"], method, url, route, 403, f"staff {method} {url}")
    permitted = ["ada"] if admin_only else ["sam", "ada"]
    for who in permitted:
        form = route.ok_form if route.ok_form is not None else ({} if method != "GET" else None)
        response = _send(ctx, ctx.clients[who], method, url, form)
        _assert_ok(response, route, method, f"{who} {method} {url}")


def _api_unauthenticated(ctx: Ctx, method: str, url: str, route: Route) -> None:
    before = ctx.snapshot()
    for what, client, token in (("no token", ctx.anonymous(), None),
                                ("a session cookie and no token", ctx.clients["alice"], None),
                                ("a garbage token", ctx.anonymous(), "pt_not-a-real-token"),
                                ("a revoked token", ctx.anonymous(), ctx.tokens["revoked"])):
        response = _send(ctx, client, method, url, route.form, token=token, api=True)
        _assert_json_error(response, 401, f"{method} {url} with {what}")
    assert ctx.snapshot() == before, f"{method} {url}: an unauthenticated request changed the database"


def check_api_member(ctx: Ctx, method: str, url: str, route: Route, rule, values: dict[str, Any]) -> None:
    _api_unauthenticated(ctx, method, url, route)
    before = ctx.snapshot()
    response = _send(ctx, ctx.anonymous(), method, url, route.form, token=ctx.tokens["bob"], api=True)
    assert response.status_code in (403, 404), f"bob's token on alice's {url}: got {_where(response)}"
    _assert_json_error(response, response.status_code, f"bob's token on alice's {url}")
    if "item_id" in rule.arguments:  # bob's own member path, alice's object id
        mixed = {**values, "member": "bob"}
        response = _send(ctx, ctx.anonymous(), method, _url(rule, mixed), token=ctx.tokens["bob"], api=True)
        _assert_json_error(response, 404, f"bob's token on his own path with alice's item {mixed['item_id']}")
    assert ctx.snapshot() == before, f"{method} {url}: bob's token changed alice's data"
    for token in ("alice", "staff"):
        if method != "GET" and token == "staff":  # a fresh object: alice's request used the first
            url = _url(rule, route.values(ctx))
        response = _send(ctx, ctx.anonymous(), method, url, route.form, token=ctx.tokens[token], api=True)
        assert response.status_code == 200, f"{token} token on alice's {url}: got {_where(response)}"
    if method != "GET":
        assert ctx.snapshot() != before, f"{method} {url}: the permitted token changed nothing"


def check_api_staff(ctx: Ctx, method: str, url: str, route: Route) -> None:
    _api_unauthenticated(ctx, method, url, route)
    before = ctx.snapshot()
    for who in ("alice", "bob"):  # alice's token on her own member, too
        response = _send(ctx, ctx.anonymous(), method, url, route.form, token=ctx.tokens[who], api=True)
        _assert_json_error(response, 403, f"{who}'s member token on staff-only {method} {url}")
    assert ctx.snapshot() == before, f"{method} {url}: a member token changed the database"
    # A staff token gets past authorization: an empty body is then the only complaint.
    response = _send(ctx, ctx.anonymous(), method, url, {}, token=ctx.tokens["staff"], api=True)
    _assert_json_error(response, 422, f"staff token, empty body, {method} {url}")


def check_api_public(ctx: Ctx, method: str, url: str, route: Route) -> None:
    response = _send(ctx, ctx.anonymous(), method, url, route.form, api=True)
    assert response.status_code == (route.ok or 200), f"anonymous {method} {url}: got {_where(response)}"


# --- the test ----------------------------------------------------------------------------------


@pytest.mark.parametrize("key", _cases())
def test_route_authorization(ctx: Ctx, key: str) -> None:
    rules = _rules(ctx)
    if key not in MATRIX:
        rule = rules.get(key)
        endpoint = rule.endpoint if rule is not None else _url_map_keys().get(key)
        pytest.fail(f"new route without authorization coverage: add it to the matrix: endpoint {endpoint!r} ({key})")
    route = MATRIX[key]
    rule = rules.get(key)
    assert rule is not None, f"the matrix names a route the app no longer has: endpoint {route.endpoint!r} ({key})"
    assert rule.endpoint == route.endpoint, f"{key}: the app's endpoint is {rule.endpoint!r}, the matrix says {route.endpoint!r}"
    is_api = rule.rule.startswith("/api/")
    assert is_api == (route.kind not in PAGE_CLASSES), f"{key}: class {route.kind} does not fit the URL"
    if route.kind == MEMBER_OWN:
        assert not rule.arguments, f"{key}: a route with an id is MEMBER_SCOPED (whose object?), not MEMBER_OWN"
    if route.kind in (MEMBER_SCOPED, API_MEMBER):
        assert rule.arguments, f"{key}: nothing in the URL names whose object it is: MEMBER_OWN?"
    method = key.split(" ", 1)[0]
    values = route.values(ctx)
    url = _url(rule, values)
    if route.kind == PUBLIC:
        check_public(ctx, method, url, route)
    elif route.kind == MEMBER_OWN:
        check_member_own(ctx, method, url, route)
    elif route.kind == MEMBER_SCOPED:
        check_member_scoped(ctx, method, url, route, rule)
    elif route.kind in (STAFF, ADMIN):
        check_staff(ctx, method, url, route, admin_only=route.kind == ADMIN)
    elif route.kind == API_PUBLIC:
        check_api_public(ctx, method, url, route)
    elif route.kind == API_MEMBER:
        check_api_member(ctx, method, url, route, rule, values)
    elif route.kind == API_STAFF:
        check_api_staff(ctx, method, url, route)
    else:  # pragma: no cover - a typo in the matrix
        pytest.fail(f"{key}: unknown class {route.kind!r}")


def test_the_matrix_has_every_class_of_caller_covered() -> None:
    """A guard on the matrix itself: every class is used, and every member-scoped page route
    says what a missing id looks like."""
    kinds = {r.kind for r in MATRIX.values()}
    assert kinds == {PUBLIC, MEMBER_OWN, MEMBER_SCOPED, STAFF, ADMIN, API_PUBLIC, API_MEMBER, API_STAFF}
    for key, route in MATRIX.items():
        if route.kind == MEMBER_SCOPED:
            assert route.missing, f"{key}: give the id of an object that does not exist"
