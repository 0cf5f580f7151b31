"""The staff console under /staff/ (role staff or admin): dashboard, member search and
export, a member's file with the staff actions, the review queue, programs with what-if
simulations, and the audit log. Views are thin: queries live in services/dashboards.py and
services/simulation.py, actions in the existing services (each audited, a reason required).
"""

from __future__ import annotations

import csv
import datetime as dt
import io
from collections.abc import Callable, Iterable, Iterator
from html import escape as html_escape
from typing import Any
from urllib.parse import quote

from flask import (
    Blueprint,
    Response,
    abort,
    current_app,
    flash,
    g,
    redirect,
    render_template,
    request,
    stream_with_context,
    url_for,
)
from flask_babel import gettext as _
from flask_login import current_user, login_required
from flask_wtf import FlaskForm
from markupsafe import Markup
from sqlalchemy import select
from wtforms import DateField, FloatField, IntegerField, StringField, TextAreaField
from wtforms.validators import NumberRange, Optional

from ..extensions import db
from ..models import SEGMENTS, Member
from ..services import NotFound, ServiceError, dashboards, evidence, security_log, simulation
from ..services import benefits as benefits_service
from ..services import programs as programs_service
from ..services import staff as staff_service
from ..services import tokens as tokens_service
from ..services.standings import enrolled_programs
from .i18n import num
from .member import send_evidence

bp = Blueprint("staff", __name__, url_prefix="/staff")
PAGE = 50
AUDIT_PAGE = 100


@bp.before_request
@login_required
def _staff_only():
    if current_user.role not in ("staff", "admin"):
        abort(403)


_PATH_SAFE = "!$&'()*+,/:;=@"  # what werkzeug's converters leave unquoted in a path segment


@bp.app_template_global()
def member_url(key: str) -> str:
    """``url_for('staff.member', key=key)``, the route built once per request: list pages link
    every row to its member's file, and ``url_for`` per row was a seventh of a page of 50."""
    base = g.get("_member_url_base")
    if base is None:
        base = g._member_url_base = url_for("staff.member", key="~")[:-1]
    return base + quote(str(key), safe=_PATH_SAFE)


def _cell(value: Any) -> str:
    return "" if value is None else html_escape(str(value))


@bp.app_template_global()
def member_rows(rows: list, with_program: bool) -> Markup:
    """The member list's rows (services/staff.py RESULT_COLUMNS), rendered in one pass: as a
    Jinja loop each of a page's 600 cells made its own escaped Markup, a third of the page."""
    out = []
    for id_, key, name, email, role, business_type, industry, scale, level, sub_class, status, score in rows:
        k = _cell(key)
        out.append(f'<tr data-member="{k}" data-id="{int(id_)}"><td><a href="{_cell(member_url(key))}">{k}</a></td>'
                   f"<td>{_cell(name)}</td><td>{_cell(email)}</td><td>{_cell(role)}</td><td>{_cell(business_type)}</td>"
                   f"<td>{_cell(industry)}</td><td>{_cell(scale)}</td>")
        if with_program:
            out.append(f"<td>{_cell(level or '-')}</td><td>{_cell(sub_class)}</td><td>{_cell(status)}</td>"
                       f'<td class="num">{_cell(num(score)) if score is not None else ""}</td>')
        out.append("</tr>\n")
    return Markup("".join(out))  # noqa: S704  # nosec B704 - every cell escaped above


# -- forms (CSRF via FlaskForm; the services validate the values) ------------------------------


class ReasonForm(FlaskForm):
    reason = TextAreaField("reason")


class GrantForm(ReasonForm):
    benefit = StringField("benefit")
    program = StringField("program")
    quantity = IntegerField("quantity", default=1, validators=[Optional(), NumberRange(min=1, max=100_000)])
    amount = FloatField("amount", validators=[Optional(), NumberRange(min=0)])


class OverrideForm(ReasonForm):
    program = StringField("program")
    level = StringField("level")  # "-": not yet rated
    until = DateField("until", validators=[Optional()])


class ProgramForm(ReasonForm):
    """Lift a lock; blacklist or lift (``action`` on / off)."""

    program = StringField("program")
    action = StringField("action")  # on | off (not a HiddenField: hidden_tag() would repeat it)


class DispatchForm(ReasonForm):
    day = DateField("day", validators=[Optional()])
    count = IntegerField("count", default=1, validators=[Optional()])


class SegmentsForm(ReasonForm):
    business_type = StringField("business_type")
    industry = StringField("industry")
    scale = StringField("scale")


class ReviewForm(FlaskForm):
    decision = StringField("decision")  # approve | reject
    note = TextAreaField("note")


class SimulationForm(FlaskForm):
    mode = StringField("mode", default="scale")
    percent = FloatField("percent", default=-20, validators=[Optional()])
    path = StringField("path")
    value = FloatField("value", validators=[Optional()])
    as_of = DateField("as_of", validators=[Optional()])


class PublishForm(SimulationForm):
    reason = TextAreaField("reason")


def _valid(form: FlaskForm) -> bool:
    """A missing or bad CSRF token is a 400; other field errors are flashed."""
    if form.validate_on_submit():
        return True
    if "csrf_token" in form.errors or request.method != "POST":
        abort(400)
    for name, errors in form.errors.items():
        flash(f"{name}: {'; '.join(str(e) for e in errors)}", "error")
    return False


def _run(action: Callable[[], Any], success: str) -> bool:
    """Service -> commit -> flash; a refusal is flashed (no stack trace) and rolled back."""
    try:
        action()
        db.session.commit()
    except ServiceError as exc:
        db.session.rollback()
        flash(exc.message, "error")
        return False
    flash(success, "success")
    return True


def _today() -> dt.date:
    return dt.date.today()


def _me() -> Member:
    me = db.session.get(Member, current_user.id)
    if me is None:
        abort(403)
    return me


# -- dashboard --------------------------------------------------------------------------------


@bp.get("/")
def home():
    s = db.session
    runs = dashboards.evaluation_runs(s)
    try:
        churn = dashboards.churn_warnings(s, "scorecard")
    except NotFound:
        churn = []
    return render_template(
        "staff/home.html", distribution=dashboards.level_distribution(s), runs=runs,
        # bandit B704: SVG of numbers
        charts={k: Markup(dashboards.runs_chart(v)) for k, v in runs.items()},  # nosec B704
        benefits=dashboards.benefit_counts(s), jobs=dashboards.job_runs(s), churn=churn,
        pending=len(dashboards.review_queue(s, dt.datetime.now())))


# -- members ----------------------------------------------------------------------------------


def _filter() -> staff_service.SearchFilter:
    args = request.args
    return staff_service.SearchFilter(**{k: (args.get(k) or "").strip() or None for k in (
        "program", "level", "sub_class", "status", "business_type", "industry", "scale", "text")})


def _keyset_page(rows: list[Any], size: int, endpoint: str, query: dict[str, str], param: str,
                 key: Callable[[Any], int]) -> tuple[list[Any], str | None]:
    """A page of ``size`` rows out of ``size + 1`` fetched, and the URL of the next page (the
    same query, ``param`` = the last row's key) when there was one more row."""
    page = rows[:size]
    next_url = url_for(endpoint, **query, **{param: key(page[-1])}) if len(rows) > size and page else None
    return page, next_url


def _int_arg(name: str) -> int | None:
    value = request.args.get(name, "")
    return int(value) if value.isdigit() else None


@bp.get("/members")
def members():
    f = _filter()
    after = _int_arg("after")
    query = {k: v for k, v in vars(f).items() if v}
    rows, next_url = _keyset_page(staff_service.search(db.session, f, after=after, limit=PAGE + 1), PAGE,
                                  "staff.members", query, "after", lambda r: r.id)
    return render_template("staff/members.html", f=f, rows=rows, next_url=next_url, after=after,
                           programs=dashboards.current_programs(db.session), query=query, segments=SEGMENTS)


def _csv_safe(value: Any) -> Any:
    """No spreadsheet formulas from user data."""
    if isinstance(value, str) and value[:1] in ("=", "+", "-", "@", "\t", "\r"):
        return "'" + value
    return "" if value is None else value


def _csv_stream(header: list[str], rows: Callable[[Any], Iterable[list[Any]]], name: str) -> Response:
    db.session.commit()  # end the request's transaction: the export reads in its own

    def generate() -> Iterator[str]:
        buf = io.StringIO()
        writer = csv.writer(buf)
        writer.writerow(header)
        with db.read_factory() as s:
            for i, row in enumerate(rows(s)):
                writer.writerow([_csv_safe(v) for v in row])
                if i % 500 == 499:
                    yield buf.getvalue()
                    buf.seek(0)
                    buf.truncate()
        yield buf.getvalue()

    return Response(stream_with_context(generate()), mimetype="text/csv",
                    headers={"Content-Disposition": f'attachment; filename="{name}"'})


@bp.get("/members.csv")
def members_csv():
    f = _filter()
    header = ["member", "name", "email", "role", *SEGMENTS]
    if f.program:
        header += ["program", "level", "sub_class", "status", "score"]

    def rows(s) -> Iterator[list[Any]]:
        for r in dashboards.search_rows(s, f):
            out = [r.key, r.name, r.email, r.role, r.business_type, r.industry, r.scale]
            if f.program:
                out += [f.program, r.level, r.sub_class, r.status, r.score]
            yield out

    return _csv_stream(header, rows, "members.csv")


@bp.get("/members/<key>")
def member(key: str):
    try:
        file = dashboards.member_file(db.session, key)
    except NotFound:
        abort(404)
    return render_template(
        "staff/member.html", m=file, programs=dashboards.current_programs(db.session),
        grant_form=GrantForm(), override_form=OverrideForm(), program_form=ProgramForm(),
        dispatch_form=DispatchForm(day=_today()), segments_form=SegmentsForm(obj=file.member),
        grant_limit=_grant_limit(), today=_today(), segments=SEGMENTS,
        evidence_files=evidence.listing(db.session, file.member.id))


@bp.get("/members/<key>/evidence/<int:file_id>")
def member_evidence(key: str, file_id: int):
    """A member's evidence file, for staff reviewing a grade."""
    m = _member_or_404(key)
    try:
        row = evidence.owned(db.session, m.id, file_id)
    except NotFound:
        abort(404)
    return send_evidence(row)


def _member_or_404(key: str) -> Member:
    m = db.session.scalar(select(Member).where(Member.key == key))
    if m is None:
        abort(404)
    return m


def _back(key: str, anchor: str | None = None):
    return redirect(url_for("staff.member", key=key, _anchor=anchor), 303)


def _grant_limit() -> float:
    cfg = current_app.config
    return float(cfg.get("PORTAL_GRANT_LIMIT", cfg.get("GRANT_LIMIT", 1000)))


@bp.post("/members/<key>/grant")
def grant(key: str):
    m = _member_or_404(key)
    form = GrantForm()
    if _valid(form):
        amount, limit = form.amount.data, _grant_limit()
        program = (form.program.data or "").strip()
        if program not in enrolled_programs(db.session, m):  # the ledger shows a member's own programs
            flash(_("Refused: %(member)s is not enrolled in program '%(program)s'.", member=m.key, program=program),
                  "error")
        elif amount is not None and amount > limit and current_user.role != "admin":
            flash(_("Refused: a grant above %(limit)s needs an admin (this one is %(amount)s).",
                    limit=f"{limit:,.2f}", amount=f"{amount:,.2f}"), "error")
        else:
            _run(lambda: benefits_service.grant(
                db.session, m.key, (form.benefit.data or "").strip(), program,
                form.reason.data, current_user.key, _today(), quantity=form.quantity.data or 1, amount=amount),
                _("Granted %(benefit)s.", benefit=form.benefit.data))
    return _back(m.key, "benefits")


@bp.post("/members/<key>/override")
def override(key: str):
    m = _member_or_404(key)
    form = OverrideForm()
    if _valid(form):
        level = (form.level.data or "").strip()
        _run(lambda: staff_service.override_level(
            db.session, current_user.key, m.key, (form.program.data or "").strip(),
            None if level in ("", "-") else level, form.reason.data, _today(), form.until.data),
            _("Level set and locked."))
    return _back(m.key, "standings")


@bp.post("/members/<key>/lift")
def lift(key: str):
    m = _member_or_404(key)
    form = ProgramForm()
    if _valid(form):
        _run(lambda: staff_service.lift_lock(db.session, current_user.key, m.key, (form.program.data or "").strip(),
                                             form.reason.data), _("Lock lifted."))
    return _back(m.key, "standings")


@bp.post("/members/<key>/blacklist")
def blacklist(key: str):
    m = _member_or_404(key)
    form = ProgramForm()
    if _valid(form):
        on = form.action.data != "off"
        _run(lambda: staff_service.set_blacklist(db.session, current_user.key, m.key, (form.program.data or "").strip(),
                                                 on, form.reason.data, _today()),
             _("Blacklisted.") if on else _("Blacklisting lifted."))
    return _back(m.key, "standings")


@bp.post("/members/<key>/dispatch")
def dispatch(key: str):
    m = _member_or_404(key)
    form = DispatchForm()
    if _valid(form):
        _run(lambda: staff_service.record_dispatch(db.session, current_user.key, m.key, form.day.data or _today(),
                                                   form.reason.data, form.count.data or 1),
             _("Dispatch recorded."))
    return _back(m.key, "actions")


@bp.post("/members/<key>/segments")
def segments(key: str):
    m = _member_or_404(key)
    form = SegmentsForm()
    if _valid(form):
        values = {k: getattr(form, k).data for k in SEGMENTS}
        _run(lambda: staff_service.edit_segments(db.session, current_user.key, m.key, values, form.reason.data),
             _("Segments saved."))
    return _back(m.key, "actions")


# -- reviews ----------------------------------------------------------------------------------


@bp.get("/reviews")
def reviews():
    rows = dashboards.review_queue(db.session, dt.datetime.now())
    return render_template("staff/reviews.html", rows=rows, form=ReviewForm(), now=dt.datetime.now())


@bp.post("/reviews/<int:item_id>")
def review(item_id: int):
    form = ReviewForm()
    if _valid(form):
        approve = form.decision.data == "approve"
        if form.decision.data not in ("approve", "reject"):
            flash(_("Choose approve or reject."), "error")
        elif not (form.note.data or "").strip():
            flash(_("A reason is required (the member sees it)."), "error")
        else:
            me = _me()
            _run(lambda: benefits_service.review(db.session, me, item_id, approve, form.note.data, _today()),
                 _("Approved.") if approve else _("Rejected."))
    return redirect(url_for("staff.reviews"), 303)


# -- programs ---------------------------------------------------------------------------------


@bp.get("/programs")
def programs():
    out = [dashboards.program_overview(db.session, k) for k in programs_service.keys(db.session)]
    return render_template("staff/programs.html", programs=out)


def _overview(key: str) -> dashboards.ProgramOverview:
    try:
        return dashboards.program_overview(db.session, key)
    except NotFound:
        abort(404)


@bp.get("/programs/<key>")
def program(key: str):
    ov = _overview(key)
    form = SimulationForm(as_of=simulation.default_as_of(db.session, key))
    return render_template("staff/program.html", ov=ov, form=form, result=None, publish_form=None,
                           thresholds=simulation.thresholds(ov.program))


@bp.get("/programs/<key>/versions/<int:version>")
def program_version(key: str, version: int):
    try:
        pv = dashboards.version_source(db.session, key, version)
    except ServiceError:
        abort(404)
    return render_template("staff/version.html", key=key, pv=pv)


def _change(form: SimulationForm) -> simulation.Change:
    mode = (form.mode.data or "scale").strip()
    if mode == "scale":
        return simulation.Change("scale", percent=form.percent.data)
    return simulation.Change(mode, path=(form.path.data or "").strip(), value=form.value.data)


@bp.post("/programs/<key>/simulate")
def simulate(key: str):
    ov = _overview(key)
    form = SimulationForm()
    if not _valid(form):
        return redirect(url_for("staff.program", key=key), 303)
    change = _change(form)
    try:
        result = simulation.simulate(db.session, key, change, form.as_of.data)
    except ServiceError as exc:
        db.session.rollback()
        flash(exc.message, "error")
        return redirect(url_for("staff.program", key=key), 303)
    db.session.rollback()  # a dry run: nothing to keep
    publish_form = None
    if current_user.role == "admin":
        publish_form = PublishForm(formdata=None, mode=form.mode.data, percent=form.percent.data,
                                   path=form.path.data, value=form.value.data)
    return render_template("staff/program.html", ov=ov, form=form, result=result, publish_form=publish_form,
                           thresholds=simulation.thresholds(ov.program))


@bp.post("/programs/<key>/publish")
def publish(key: str):
    if current_user.role != "admin":
        abort(403)
    _overview(key)
    form = PublishForm()
    if _valid(form):
        change = _change(form)
        holder: dict[str, Any] = {}

        def act() -> None:
            holder["r"] = simulation.publish(db.session, current_user.key, key, change, form.reason.data)

        if _run(act, _("Published.")):
            flash(_("Version %(v)s is now current (version %(old)s is kept).", v=holder["r"].version,
                    old=holder["r"].previous), "success")
    return redirect(url_for("staff.program", key=key), 303)


# -- the audit log ----------------------------------------------------------------------------


def _audit_filter() -> dashboards.AuditFilter:
    args = request.args

    def day(name: str) -> dt.date | None:
        try:
            return dt.date.fromisoformat(args.get(name, "").strip()) if args.get(name, "").strip() else None
        except ValueError:
            flash(_("%(field)s: not a date (YYYY-MM-DD)", field=name), "error")
            return None

    return dashboards.AuditFilter(actor=(args.get("actor") or "").strip() or None,
                                  member=(args.get("member") or "").strip() or None,
                                  action=(args.get("action") or "").strip() or None,
                                  since=day("since"), until=day("until"))


def _audit_query(f: dashboards.AuditFilter) -> dict[str, str]:
    return {k: (v.isoformat() if isinstance(v, dt.date) else v) for k, v in vars(f).items() if v}


@bp.get("/audit")
def audit():
    f = _audit_filter()
    before = _int_arg("before")
    query = _audit_query(f)
    rows, next_url = _keyset_page(dashboards.audit_page(db.session, f, before, AUDIT_PAGE + 1), AUDIT_PAGE,
                                  "staff.audit", query, "before", lambda r: r[0].id)
    return render_template("staff/audit.html", f=f, rows=rows, next_url=next_url, before=before, query=query,
                           actions=dashboards.audit_actions(db.session))


@bp.get("/audit.csv")
def audit_csv():
    f = _audit_filter()

    def rows(s) -> Iterator[list[Any]]:
        import json

        for entry, member_key in dashboards.audit_rows(s, f):
            yield [entry.id, entry.at.isoformat(), entry.actor, entry.action, member_key, entry.program_key,
                   entry.reason, json.dumps(entry.before, ensure_ascii=False) if entry.before is not None else "",
                   json.dumps(entry.after, ensure_ascii=False) if entry.after is not None else ""]

    return _csv_stream(["id", "at", "actor", "action", "member", "program", "reason", "before", "after"], rows,
                       "audit.csv")


@bp.get("/security")
def security_events():
    """The security event log (logins, refusals); reading it is itself not an event."""
    args = request.args
    f = security_log.EventFilter(
        kind=args.get("kind", "").strip() or None, account=args.get("account", "").strip() or None,
        address=args.get("address", "").strip() or None)
    before = _int_arg("before")
    query = {k: v for k, v in vars(f).items() if v}
    rows, next_url = _keyset_page(security_log.events(db.session, f, before_id=before, limit=AUDIT_PAGE + 1),
                                  AUDIT_PAGE, "staff.security_events", query, "before", lambda r: r.id)
    return render_template("staff/security.html", f=f, rows=rows, next_url=next_url, before=before, query=query,
                           kinds=security_log.KINDS)


# -- admin: API tokens and staff roles (role admin; staff get 403) ---------------------------


class TokenForm(ReasonForm):
    name = StringField("name")
    role = StringField("role")  # staff | member
    member = StringField("member")


class RevokeForm(ReasonForm):
    name = StringField("name")


class RoleForm(ReasonForm):
    member = StringField("member")
    role = StringField("role")  # member | staff | admin


def _admin_only() -> None:
    if current_user.role != "admin":
        abort(403)


def _no_store(response: Response) -> Response:
    response.headers["Cache-Control"] = "no-store"
    return response


def _tokens_page(created: dict[str, Any] | None = None):
    rows = tokens_service.listing(db.session)
    keys = dict(db.session.execute(select(Member.id, Member.key).where(
        Member.id.in_({r.member_id for r in rows if r.member_id is not None}))).all())
    page = render_template("staff/tokens.html", rows=rows, member_keys=keys, form=TokenForm(formdata=None),
                           revoke_form=RevokeForm(formdata=None), created=created)
    return _no_store(Response(page))


@bp.get("/admin/tokens")
def tokens():
    _admin_only()
    return _tokens_page()


@bp.post("/admin/tokens")
def token_create():
    _admin_only()
    form = TokenForm()
    if not _valid(form):
        return redirect(url_for("staff.tokens"), 303)
    name = (form.name.data or "").strip()
    role = (form.role.data or "").strip()
    member_key = (form.member.data or "").strip() or None
    if role == "staff":
        member_key = None  # the member field is ignored for a staff token
    try:
        plain = staff_service.create_token(db.session, current_user.key, name, role, member_key, form.reason.data)
        db.session.commit()
    except ServiceError as exc:
        db.session.rollback()
        flash(exc.message, "error")
        return redirect(url_for("staff.tokens"), 303)
    flash(_("Token %(name)s created. Copy it now: it is shown only once.", name=name), "success")
    return _tokens_page(created={"name": name, "role": role, "member": member_key, "token": plain})


@bp.post("/admin/tokens/revoke")
def token_revoke():
    _admin_only()
    form = RevokeForm()
    if _valid(form):
        name = (form.name.data or "").strip()
        _run(lambda: staff_service.revoke_token(db.session, current_user.key, name, form.reason.data),
             _("Token %(name)s revoked.", name=name))
    return redirect(url_for("staff.tokens"), 303)


@bp.get("/admin/staff")
def staff_roles():
    _admin_only()
    rows = db.session.scalars(select(Member).where(Member.role.in_(("staff", "admin")))
                              .order_by(Member.role, Member.key)).all()
    return render_template("staff/staff.html", rows=rows, form=RoleForm(formdata=None), roles=staff_service.ROLES)


@bp.post("/admin/staff")
def set_role():
    _admin_only()
    form = RoleForm()
    if _valid(form):
        key, role = (form.member.data or "").strip(), (form.role.data or "").strip()
        _run(lambda: staff_service.set_role(db.session, current_user.key, key, role, form.reason.data),
             _("%(member)s is now %(role)s.", member=key, role=role))
    return redirect(url_for("staff.staff_roles"), 303)
