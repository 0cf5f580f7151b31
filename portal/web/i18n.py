"""Locale helpers for templates: labels of states and kinds, numbers the Chinese way."""

from __future__ import annotations

from flask import Flask, redirect, request, session, url_for
from flask_babel import format_date, format_decimal, get_locale
from flask_babel import gettext as _
from flask_babel import lazy_gettext as _l

from ..engine.definition import text_of

STATES = {
    "available": _l("Available"),
    "pending_review": _l("Pending review"),
    "issued": _l("Issued"),
    "claimed": _l("Claimed"),
    "rejected": _l("Rejected"),
    "expired": _l("Expired"),
    "revoked": _l("Revoked"),
}
MODES = {"auto": _l("Issued automatically"), "claim": _l("Claim"), "review": _l("Reviewed by staff")}
KINDS = {
    "level_up": _l("Level up"),
    "level_down": _l("Downgrade"),
    "benefit_issued": _l("Benefit issued"),
    "benefit_available": _l("Benefit available to claim"),
    "benefit_expiring": _l("Benefit about to expire"),
    "downgrade_warning": _l("Warning before downgrade"),
    "blacklisted": _l("Blacklisted"),
    "review_result": _l("Review result"),
}
WINDOWS = {"latest": _l("latest"), "all": _l("all time")}


def state_label(state: str | None) -> str:
    return str(STATES.get(state or "", state or ""))


def locale() -> str:
    """The catalogue key of the request's locale: ``zh_CN`` or ``en`` (Babel says zh_Hans_CN)."""
    current = get_locale()
    return "zh_CN" if current is None or current.language == "zh" else "en"


def num(value) -> str:
    """10,000 in English; 1万 / 1.5亿 in Chinese where that is how people write it."""
    if value is None:
        return "-"
    v = float(value)
    if locale().startswith("zh"):
        for size, unit in ((1e8, "亿"), (1e4, "万")):
            if round(abs(v) / size, 2) >= 1:  # after rounding: 99,999,999 is 1亿, not 10000万
                text = f"{v / size:.2f}".rstrip("0").rstrip(".")
                return text + unit
    if v.is_integer():
        return format_decimal(int(v))
    return format_decimal(round(v, 2))


def window_label(window: str | None) -> str:
    if not window:
        return ""
    if window in WINDOWS:
        return str(WINDOWS[window])
    n, unit = int(window[:-1]), window[-1]
    return _("last %(n)s days", n=n) if unit == "d" else _("last %(n)s months", n=n)


def label(program, key: str | None) -> str:
    if not key:
        return ""
    try:
        spec = program.value_spec(key)
    except KeyError:
        return key
    return text_of(spec.label, locale()) or key


def level_name(program, key: str | None) -> str:
    if key is None:
        return _("Not yet rated")
    level = program.level(key)
    return text_of(level.name, locale()) if level and level.name else key


def benefit_label(program, key: str) -> str:
    for level in program.levels:
        for b in level.benefits:
            if b.key == key and b.label:
                return text_of(b.label, locale())
    return key


def init_app(app: Flask) -> None:
    app.jinja_env.globals.update(
        num=num, state_label=state_label, window_label=window_label, label=label, level_name=level_name,
        benefit_label=benefit_label, text_of=lambda v: text_of(v, locale()), MODES=MODES, KINDS=KINDS,
        format_date=format_date, locale=locale, timedelta=__import__("datetime").timedelta,
    )

    @app.post("/locale/<code>")
    def set_locale(code: str):
        from flask_wtf.csrf import validate_csrf
        from wtforms.validators import ValidationError

        try:
            validate_csrf(request.form.get("csrf_token"))
        except ValidationError:
            return ("CSRF token missing or invalid", 400)
        if code in app.config["LANGUAGES"]:
            session["locale"] = code
            from flask_login import current_user

            if current_user.is_authenticated:
                from ..extensions import db
                from ..models import Member

                member = db.session.get(Member, current_user.id)
                if member is not None:
                    member.locale = code
                    db.session.commit()
        target = request.referrer if request.referrer and request.referrer.startswith(request.host_url) else None
        return redirect(target or url_for("member.overview"), 303)
