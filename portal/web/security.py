"""Security events from the web tier: views *note* what happened (a login, a refusal) and one
``after_request`` hook writes it, so each request records at most one event and a refusal
never carries half-done work with it (the request's session is rolled back first).

Refusals are also noticed without a view's help: every 401 and 403 answer, every 429 on the
login form, a CSRF failure and an anonymous visit to a page that needs a login."""

from __future__ import annotations

from typing import Any

from flask import Flask, current_app, g, render_template, request
from flask_babel import gettext as _
from flask_login import current_user, user_unauthorized
from flask_wtf.csrf import CSRFError
from sqlalchemy import select

from ..extensions import db
from ..services import security_log


def note(kind: str, *, account: str | None = None, member_id: int | None = None, detail: str | None = None) -> None:
    """Remember one event for this request (the first one noted wins)."""
    if "security_event" not in g:
        g.security_event = {"kind": kind, "account": account, "member_id": member_id, "detail": detail}


def note_if_not_owner(model: Any, object_id: int, member_id: int) -> None:
    """A 404 for an object id: note a refusal when the object exists but is someone else's."""
    owner = db.session.scalar(select(model.member_id).where(model.id == object_id))
    if owner is not None and owner != member_id:
        note("not_owner", detail=f"{model.__tablename__}#{object_id}")


def _by_status(status: int) -> str | None:
    if status == 401:
        return "unauthenticated"
    if status == 403:
        return "forbidden"
    if status == 429 and request.endpoint == "auth.login":
        return "login_limited"
    return None


def _account() -> tuple[str | None, int | None]:
    principal = g.get("principal")
    if principal is not None:
        return principal.actor, principal.member_id
    if getattr(current_user, "is_authenticated", False):
        return current_user.key, current_user.id
    return None, None


def _write(response):
    event = g.pop("security_event", None)
    if event is None:
        kind = _by_status(response.status_code)
        if kind is None:
            return response
        event = {"kind": kind, "account": None, "member_id": None, "detail": None}
    account, member_id = _account()
    session = db.session
    try:
        session.rollback()
        security_log.record(
            session, event["kind"], method=request.method, route=request.path, status=response.status_code,
            account=event["account"] or account, member_id=event["member_id"] or member_id,
            address=request.remote_addr, detail=event["detail"] or request.endpoint)
        session.commit()
    except Exception:  # logging must never turn an answer into a 500; the app log keeps it
        session.rollback()
        current_app.logger.exception("could not record a security event")
    return response


def register(app: Flask) -> None:
    app.after_request(_write)

    @user_unauthorized.connect_via(app)
    def _anonymous(_sender, **_extra):
        note("unauthenticated")

    @app.errorhandler(CSRFError)
    def _csrf(exc: CSRFError):
        note("csrf_failed", detail=exc.description)
        return render_template("error.html", title=_("Form expired"),
                               message=_("The form was too old or not sent from this site (%(why)s). Go back, reload the page and try again.",
                                         why=exc.description)), 400
