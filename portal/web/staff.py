"""The staff console under /staff/ (role staff or admin)."""

from __future__ import annotations

from flask import Blueprint, abort
from flask_login import current_user, login_required

bp = Blueprint("staff", __name__, url_prefix="/staff")


@bp.before_request
@login_required
def _staff_only():
    if current_user.role not in ("staff", "admin"):
        abort(403)


@bp.get("/")
def home():
    return "staff console"
