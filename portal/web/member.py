from __future__ import annotations

from flask import Blueprint, render_template
from flask_login import current_user, login_required

from ..engine.definition import text_of
from ..extensions import db
from ..services import programs as programs_service
from ..services.standings import member_standings

bp = Blueprint("member", __name__)


@bp.get("/")
@login_required
def overview():
    session = db.session
    standings = member_standings(session, current_user.key)
    programs = {s["program"]: programs_service.definition(session, s["program"])[0] for s in standings}
    return render_template("member/overview.html", standings=standings, programs=programs, text_of=text_of)
