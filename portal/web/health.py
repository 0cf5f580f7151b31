from __future__ import annotations

from flask import Blueprint, jsonify
from sqlalchemy import text

from ..extensions import db

bp = Blueprint("health", __name__)


@bp.get("/healthz")
def healthz():
    try:
        with db.engine.connect() as conn:
            conn.execute(text("SELECT 1"))
    except Exception as exc:  # any driver error means "not healthy", never a stack trace
        return jsonify({"error": "database unavailable", "details": type(exc).__name__}), 503
    return jsonify({"status": "ok"})
