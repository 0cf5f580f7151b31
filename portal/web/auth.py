from __future__ import annotations

from dataclasses import dataclass

from flask import Blueprint, flash, g, redirect, render_template, request, url_for
from flask_babel import gettext as _
from flask_login import current_user, login_required, login_user, logout_user
from flask_wtf import FlaskForm
from sqlalchemy import or_, select
from wtforms import BooleanField, PasswordField, StringField
from wtforms.validators import DataRequired, EqualTo, Length

from ..extensions import db, limiter, login_manager
from ..models import Member
from ..services import login_sessions
from ..services.passwords import hash_password, needs_rehash, verify
from .security import note

bp = Blueprint("auth", __name__)


@dataclass
class User:
    """The logged-in account as Flask-Login sees it."""

    id: int
    key: str
    name: str
    role: str
    locale: str | None
    token: str  # the server-side login session (services/login_sessions.py)

    is_authenticated = True
    is_active = True
    is_anonymous = False

    def get_id(self) -> str:
        # Flask-Login keeps this in the session and the remember cookie: the member and the
        # login session, so ending the session on the server ends both cookies' power.
        return f"{self.id}:{self.token}"

    @property
    def is_staff(self) -> bool:
        return self.role in ("staff", "admin")

    @classmethod
    def of(cls, m: Member, token: str) -> User:
        return cls(m.id, m.key, m.name, m.role, m.locale, token)


@login_manager.user_loader
def load_user(user_id: str) -> User | None:
    member_id, _sep, token = user_id.partition(":")
    if not member_id.isdigit() or not token:
        return None  # malformed, or a cookie from before login sessions existed
    found = login_sessions.member_and_unread(db.session, int(member_id), token)
    if found is None:
        note("session_ended", member_id=None, detail=f"member #{member_id}")
        return None
    member, g.unread = found  # the header's count, read with the session check
    g.member = member  # the session's identity map holds it weakly: keep it for the views
    return User.of(member, token)


class LoginForm(FlaskForm):
    username = StringField("username", validators=[DataRequired(), Length(max=254)])
    password = PasswordField("password", validators=[DataRequired(), Length(max=1024)])
    remember = BooleanField("remember")


def _login_account() -> str:
    return "account:" + (request.form.get("username") or "").strip().lower()[:254]


def _failed(response) -> bool:
    return response.status_code == 401


@bp.route("/login", methods=["GET", "POST"])
# Per address: 20 tries a minute. Per account: 10 *failed* tries in 15 minutes, checked before
# the password is hashed - so 100 failed logins against one account cost at most 10 hashes.
@limiter.limit("20 per minute", methods=["POST"])
@limiter.limit("10 per 15 minutes", methods=["POST"], key_func=_login_account, deduct_when=_failed)
def login():
    form = LoginForm()
    if form.validate_on_submit():
        name = form.username.data.strip()
        session = db.session
        member = session.scalar(select(Member).where(or_(Member.key == name, Member.email == name.lower())))
        # Same message whether the account exists or not.
        if member is None or not verify(member.password_hash, form.password.data):
            note("login_failed", account=name.lower()[:254])
            flash(_("Wrong username or password."), "error")
            return render_template("auth/login.html", form=form), 401
        if needs_rehash(member.password_hash):
            member.password_hash = hash_password(form.password.data)
        token = login_sessions.start(session, member.id, request.remote_addr)
        session.commit()
        login_user(User.of(member, token), remember=bool(form.remember.data))
        note("login_succeeded", account=member.key, member_id=member.id)
        return redirect(url_for("member.overview"))
    status = 400 if request.method == "POST" else 200
    return render_template("auth/login.html", form=form), status


@bp.post("/logout")
@login_required
def logout():
    login_sessions.end(db.session, current_user.token)
    db.session.commit()
    note("logout", account=current_user.key, member_id=current_user.id)
    logout_user()
    return redirect(url_for("auth.login"))


class PasswordForm(FlaskForm):
    current = PasswordField("current", validators=[DataRequired(), Length(max=1024)])
    new = PasswordField("new", validators=[DataRequired(), Length(min=8, max=1024)])
    confirm = PasswordField("confirm", validators=[DataRequired(), EqualTo("new")])


@bp.route("/account/password", methods=["GET", "POST"])
@login_required
def change_password():
    form = PasswordForm()
    if request.method == "POST":
        if "csrf_token" in (form.errors or {}) or not form.validate_on_submit():
            if form.csrf_token.errors:
                return render_template("auth/password.html", form=form), 400
            flash(_("Check the form: the new password needs at least 8 characters and must be typed the same twice."), "error")
            return render_template("auth/password.html", form=form), 400
        member = db.session.get(Member, current_user.id)
        if member is None or not verify(member.password_hash, form.current.data):
            note("password_change_failed")
            flash(_("Your current password is not right."), "error")
            return render_template("auth/password.html", form=form), 400
        member.password_hash = hash_password(form.new.data)
        login_sessions.end_others(db.session, member.id, keep=current_user.token)
        db.session.commit()
        note("password_changed")
        flash(_("Password changed."), "success")
        return redirect(url_for("member.overview"), 303)
    return render_template("auth/password.html", form=form)
