"""JSON API under /api/v1: bearer tokens, JSON errors ``{"error", "details"}``, never a trace."""

from __future__ import annotations

import datetime as dt
from functools import wraps
from typing import Any

from flask import Blueprint, g, jsonify, request
from sqlalchemy import select
from werkzeug.exceptions import HTTPException

from ..extensions import csrf, db
from ..models import BenefitItem, LevelChange
from ..services import NotFound, ServiceError, imports, staff
from ..services import benefits as benefits_service
from ..services import tokens as tokens_service
from ..services.standings import change_json, member_by_key, member_standings
from .openapi import document
from .security import note, note_if_not_owner

bp = Blueprint("api", __name__, url_prefix="/api/v1")
csrf.exempt(bp)  # token-authenticated, no cookies


class ApiError(Exception):
    def __init__(self, status: int, error: str, details: Any = None):
        self.status, self.error, self.details = status, error, details


def error(status: int, message: str, details: Any = None):
    return jsonify({"error": message, "details": details}), status


@bp.errorhandler(ApiError)
def _api_error(exc: ApiError):
    return error(exc.status, exc.error, exc.details)


@bp.errorhandler(ServiceError)
def _service_error(exc: ServiceError):
    db.session.rollback()
    return error(exc.status, exc.message, exc.details)


@bp.errorhandler(HTTPException)
def _http_error(exc: HTTPException):
    return error(exc.code or 500, exc.description or exc.name)


@bp.errorhandler(Exception)
def _unexpected(exc: Exception):  # pragma: no cover - the last line of defence
    db.session.rollback()
    return error(500, "internal error")


def auth(role: str | None = None):
    """Require a valid token; ``role='staff'`` requires a staff token."""

    def wrap(fn):
        @wraps(fn)
        def inner(*args, **kwargs):
            principal = tokens_service.authenticate(db.session, request.headers.get("Authorization"))
            if principal is None:
                raise ApiError(401, "a valid bearer token is required",
                               {"header": "Authorization: Bearer <token>"})
            g.principal = principal  # before the role check, so a refusal names the token
            if role == "staff" and principal.role != "staff":
                raise ApiError(403, "this needs a staff token")
            return fn(*args, **kwargs)

        return inner

    return wrap


def _member_for(key: str):
    """The member, if this token may see it: a member token sees only its own member (404 for
    others, the same answer as an unknown member)."""
    try:
        member = member_by_key(db.session, key)
    except NotFound:
        raise ApiError(404, f"unknown member '{key}'") from None
    if g.principal.role == "member" and g.principal.member_id != member.id:
        note("not_owner", detail=f"member {key[:64]}")
        raise ApiError(404, f"unknown member '{key}'")
    return member


def _json_body() -> dict[str, Any]:
    body = request.get_json(silent=True)
    if not isinstance(body, dict):
        raise ApiError(400, "the body must be a JSON object", {"content_type": "application/json"})
    return body


def _today() -> dt.date:
    return dt.date.today()


@bp.get("/openapi.json")
def openapi():
    return jsonify(document())


@bp.get("/members/<member>/standing")
@auth()
def standing(member: str):
    m = _member_for(member)
    program = request.args.get("program")
    result = member_standings(db.session, m.key, program)
    return jsonify(result[0] if program else result)


@bp.get("/members/<member>/history")
@auth()
def history(member: str):
    m = _member_for(member)
    rows = db.session.scalars(select(LevelChange).where(LevelChange.member_id == m.id)
                              .order_by(LevelChange.on.desc(), LevelChange.id.desc()).limit(500))
    return jsonify([{"program": c.program_key, **change_json(c)} for c in rows])


@bp.get("/members/<member>/benefits")
@auth()
def benefits(member: str):
    m = _member_for(member)
    rows = db.session.scalars(select(BenefitItem).where(BenefitItem.member_id == m.id)
                              .order_by(BenefitItem.due_on.desc(), BenefitItem.id.desc()).limit(1000))
    return jsonify([{"program": i.program_key, **benefits_service.item_json(i)} for i in rows])


@bp.post("/members/<member>/benefits/<int:item_id>/claim")
@auth()
def claim(member: str, item_id: int):
    m = _member_for(member)
    try:
        item = benefits_service.claim(db.session, m.id, item_id, _today())
    except NotFound:
        db.session.rollback()
        note_if_not_owner(BenefitItem, item_id, m.id)
        raise
    db.session.commit()
    return jsonify({"program": item.program_key, **benefits_service.item_json(item)})


@bp.post("/metrics")
@auth("staff")
def metrics():
    body = _json_body()
    if "rows" not in body:
        raise ApiError(422, "the body needs 'rows': a list of metric rows", {"rows": "missing"})
    extra = sorted(set(body) - {"rows"})
    if extra:
        raise ApiError(422, "unknown field " + ", ".join(extra), {"unknown": extra})
    try:
        result = imports.import_metrics_json(db.session, body["rows"])
    except imports.ImportRejected as exc:
        db.session.rollback()
        raise ApiError(422, exc.message, exc.details) from None
    db.session.commit()
    return jsonify({"new": result.new, "duplicates": result.duplicates})


def _field(body: dict[str, Any], name: str, kind: type, required: bool = True):
    value = body.get(name)
    if value is None:
        if required:
            raise ApiError(422, f"'{name}' is required", {name: "missing"})
        return None
    if kind is float and isinstance(value, int | float) and not isinstance(value, bool):
        return float(value)
    if not isinstance(value, kind) or isinstance(value, bool):
        raise ApiError(422, f"'{name}' must be a {kind.__name__}", {name: "wrong type"})
    return value


@bp.post("/members/<member>/grants")
@auth("staff")
def grant(member: str):
    body = _json_body()
    m = _member_for(member)
    item = benefits_service.grant(
        db.session, m.key, _field(body, "benefit", str), _field(body, "program", str), _field(body, "reason", str),
        g.principal.actor, _today(), quantity=_field(body, "quantity", int, False) or 1,
        amount=_field(body, "amount", float, False))
    db.session.commit()
    return jsonify({"program": item.program_key, **benefits_service.item_json(item)}), 201


@bp.post("/members/<member>/override")
@auth("staff")
def override(member: str):
    body = _json_body()
    m = _member_for(member)
    until = _field(body, "until", str, False)
    try:
        until_date = dt.date.fromisoformat(until) if until else None
    except ValueError:
        raise ApiError(422, "'until' must be a date YYYY-MM-DD", {"until": until}) from None
    program = _field(body, "program", str)
    if body.get("lift"):
        staff.lift_lock(db.session, g.principal.actor, m.key, program, _field(body, "reason", str))
    else:
        level = body.get("level")
        if level is not None and not isinstance(level, str):
            raise ApiError(422, "'level' must be a level key or null", {"level": "wrong type"})
        staff.override_level(db.session, g.principal.actor, m.key, program, level, _field(body, "reason", str),
                             _today(), until_date)
    db.session.commit()
    return jsonify(member_standings(db.session, m.key, program)[0])
