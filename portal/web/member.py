"""The member's self-service pages: overview, program, history, benefits, notifications."""

from __future__ import annotations

import datetime as dt

from flask import Blueprint, abort, flash, redirect, render_template, request, url_for
from flask_babel import gettext as _
from flask_login import current_user, login_required
from flask_wtf import FlaskForm
from markupsafe import Markup
from wtforms import TextAreaField
from wtforms.validators import DataRequired, Length

from ..extensions import db
from ..models import Member
from ..services import NotFound, ServiceError
from ..services import benefits as benefits_service
from ..services import member_pages as pages
from ..services import programs as programs_service

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
    if card.standing is not None:
        for row in card.requirements:
            if not row["met"]:
                t = pages.trend(db.session, me, card.program, row, card.standing.as_of)
                if t:
                    charts[(row["level"], row["key"])] = (t, Markup(pages.svg_chart(t["points"], t["threshold"])))
                if len(charts) >= 4:  # a few charts: the unmet tasks that matter most
                    break
    reward_rows = []
    if card.standing is not None and card.standing.level:
        from ..engine.rules import rows

        level = card.program.level(card.standing.level)
        reward_rows = rows(card.program, level.key, level.reward_tasks, card.standing.values) if level else []
    return render_template("member/program.html", card=card, charts=charts, hint=pages.hint, reward_rows=reward_rows)


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
    pages.mark_read(db.session, current_user.id, notification_id, dt.datetime.now(dt.UTC))
    db.session.commit()
    return redirect(request.referrer if _same_site(request.referrer) else url_for("member.notifications"), 303)


def _same_site(url: str | None) -> bool:
    return bool(url) and url.startswith(request.host_url)


def _state_label(state: str | None) -> str:
    from .i18n import state_label

    return state_label(state)
