"""The member's self-service pages: overview, program, history, benefits, notifications."""

from __future__ import annotations

import datetime as dt
from pathlib import Path

from flask import (
    Blueprint,
    abort,
    current_app,
    flash,
    redirect,
    render_template,
    request,
    send_file,
    url_for,
)
from flask_babel import gettext as _
from flask_login import current_user, login_required
from flask_wtf import FlaskForm
from flask_wtf.file import FileField
from markupsafe import Markup
from wtforms import TextAreaField
from wtforms.validators import DataRequired, Length

from ..extensions import db
from ..models import BenefitItem, EvidenceFile, Member, Notification
from ..services import NotFound, ServiceError, evidence
from ..services import benefits as benefits_service
from ..services import member_pages as pages
from ..services import programs as programs_service
from .security import note_if_not_owner

bp = Blueprint("member", __name__)


class ReviewForm(FlaskForm):
    text = TextAreaField("text", validators=[DataRequired(), Length(max=4000)])


class EmptyForm(FlaskForm):
    """CSRF only (claim, mark read)."""


def _programs(keys) -> dict:
    """Parsed (cached) definitions of the given program keys."""
    return {k: programs_service.definition(db.session, k)[0] for k in set(keys) if k}


def _me() -> Member:
    member = db.session.get(Member, current_user.id)
    if member is None:
        abort(404)
    return member


@bp.get("/")
@login_required
def overview():
    me = _me()
    return render_template("member/overview.html", cards=pages.cards(db.session, me, dt.date.today()))


@bp.get("/programs/<key>")
@login_required
def program(key: str):
    me = _me()
    try:
        card = pages.program_card(db.session, me, key, dt.date.today())
    except NotFound:
        abort(404)
    charts = {}
    if card.standing is not None:  # a few charts: the unmet tasks that matter most
        for k, t in pages.trends(db.session, me, card.program, card.requirements, card.as_of).items():
            # bandit B704: SVG of numbers we format
            charts[k] = (t, Markup(pages.svg_chart(t["points"], t["threshold"])))  # nosec B704
    reward_rows = []
    if card.standing is not None and card.standing.level:
        from ..engine.rules import rows

        level = card.program.level(card.standing.level)
        reward_rows = rows(card.program, level.key, level.reward_tasks, card.values) if level else []
    files, forms = None, {}
    if evidence.accepts(card.program):  # the forms only where the page shows them
        files, forms = evidence.listing(db.session, me.id, key), {"evidence_form": EvidenceForm(),
                                                                  "delete_form": EmptyForm()}
    return render_template("member/program.html", card=card, charts=charts, hint=pages.hint, reward_rows=reward_rows,
                           evidence_files=files, evidence_max_mib=evidence.MAX_BYTES // (1024 * 1024), **forms)


class EvidenceForm(FlaskForm):
    file = FileField("file")


def evidence_root() -> Path:
    """PORTAL_EVIDENCE_DIR, or evidence/ in the instance folder: never under static/."""
    configured = current_app.config.get("EVIDENCE_DIR")
    return Path(configured) if configured else Path(current_app.instance_path) / "evidence"


def _refuse(status: int, message: str):
    return render_template("error.html", title=_("Not accepted"), message=message), status


@bp.post("/programs/<key>/evidence")
@login_required
def upload_evidence(key: str):
    me = _me()
    form = EvidenceForm()
    if not form.validate_on_submit():
        abort(400)
    upload = form.file.data
    if upload is None or not getattr(upload, "filename", None):
        return _refuse(400, _("Choose a file to upload."))
    try:
        program, _version = programs_service.definition(db.session, key)
        # Read one byte past the limit: enough to refuse an oversized file without reading it all.
        data = upload.stream.read(evidence.MAX_BYTES + 1)
        row = evidence.store(db.session, evidence_root(), me.id, program, upload.filename, data)
        db.session.commit()
    except NotFound:
        db.session.rollback()
        abort(404)
    except ServiceError as exc:
        db.session.rollback()
        return _refuse(exc.status, _("The file was not accepted: %(why)s.", why=exc.message))
    flash(_("Uploaded: %(name)s", name=row.filename), "success")
    return redirect(url_for("member.program", key=key, _anchor="evidence"), 303)


@bp.get("/programs/<key>/evidence/<int:file_id>")
@login_required
def evidence_file(key: str, file_id: int):
    me = _me()
    try:
        row = evidence.owned(db.session, me.id, file_id, key)
    except NotFound:
        note_if_not_owner(EvidenceFile, file_id, me.id)
        abort(404)
    return send_evidence(row)


@bp.post("/programs/<key>/evidence/<int:file_id>/delete")
@login_required
def delete_evidence(key: str, file_id: int):
    me = _me()
    if not EmptyForm().validate_on_submit():
        abort(400)
    try:
        path = evidence.remove(db.session, evidence_root(), me.id, file_id, key)
        db.session.commit()
    except NotFound:
        db.session.rollback()
        note_if_not_owner(EvidenceFile, file_id, me.id)
        abort(404)
    path.unlink(missing_ok=True)
    flash(_("File deleted."), "success")
    return redirect(url_for("member.program", key=key, _anchor="evidence"), 303)


def send_evidence(row: EvidenceFile):
    """The file as a download: never rendered inline by the browser, never cached."""
    try:
        path = evidence.path_of(evidence_root(), row)
    except NotFound:
        abort(404)
    if not path.is_file():
        abort(404)
    response = send_file(path, mimetype=row.content_type, as_attachment=True, download_name=row.filename,
                         max_age=0, conditional=False)
    response.headers["Cache-Control"] = "private, no-store"
    response.headers["Content-Security-Policy"] = "default-src 'none'; sandbox"
    return response


@bp.get("/history")
@login_required
def history():
    me = _me()
    changes = pages.history(db.session, me)
    return render_template("member/history.html", changes=changes, programs=_programs(c.program_key for c in changes))


@bp.get("/benefits")
@login_required
def benefits():
    me = _me()
    items = pages.benefit_items(db.session, me)
    programs = _programs(i.program_key for i in items)
    return render_template("member/benefits.html", items=items, programs=programs, form=EmptyForm(),
                           review_form=ReviewForm())


@bp.post("/benefits/<int:item_id>/claim")
@login_required
def claim(item_id: int):
    me = _me()
    if not EmptyForm().validate_on_submit():
        abort(400)
    try:
        item = benefits_service.claim(db.session, me.id, item_id, dt.date.today())
        db.session.commit()
        from .i18n import benefit_label

        program = _programs([item.program_key])[item.program_key]
        flash(_("Claimed: %(name)s", name=benefit_label(program, item.benefit_key)), "success")
    except NotFound:
        db.session.rollback()
        note_if_not_owner(BenefitItem, item_id, me.id)
        abort(404)
    except ServiceError as exc:
        db.session.rollback()
        flash(_("This benefit can no longer be claimed (%(state)s).", state=_state_label((exc.details or {}).get("state"))), "error")
        return redirect(url_for("member.benefits")), 303
    return redirect(url_for("member.benefits", _anchor=f"item-{item_id}"), 303)


@bp.post("/benefits/<int:item_id>/review")
@login_required
def submit_review(item_id: int):
    me = _me()
    form = ReviewForm()
    if not form.validate_on_submit():
        if "csrf_token" in form.errors:
            abort(400)
        flash(_("Please describe your request (at most 4,000 characters)."), "error")
        return redirect(url_for("member.benefits", _anchor=f"item-{item_id}"), 303)
    try:
        benefits_service.submit_review(db.session, me.id, item_id, form.text.data, dt.date.today())
        db.session.commit()
        flash(_("Sent for review."), "success")
    except NotFound:
        db.session.rollback()
        note_if_not_owner(BenefitItem, item_id, me.id)
        abort(404)
    except ServiceError as exc:
        db.session.rollback()
        flash(exc.message, "error")
    return redirect(url_for("member.benefits", _anchor=f"item-{item_id}"), 303)


@bp.get("/notifications")
@login_required
def notifications():
    me = _me()
    items = pages.notifications(db.session, me)
    programs = _programs(n.program_key for n in items)
    return render_template("member/notifications.html", items=items, programs=programs, form=EmptyForm())


@bp.post("/notifications/read")
@bp.post("/notifications/<int:notification_id>/read")
@login_required
def mark_read(notification_id: int | None = None):
    if not EmptyForm().validate_on_submit():
        abort(400)
    try:
        pages.mark_read(db.session, current_user.id, notification_id, dt.datetime.now(dt.UTC))
    except NotFound:
        db.session.rollback()
        note_if_not_owner(Notification, notification_id, current_user.id)
        abort(404)
    db.session.commit()
    return redirect(request.referrer if _same_site(request.referrer) else url_for("member.notifications"), 303)


def _same_site(url: str | None) -> bool:
    return bool(url) and url.startswith(request.host_url)


def _state_label(state: str | None) -> str:
    from .i18n import state_label

    return state_label(state)
