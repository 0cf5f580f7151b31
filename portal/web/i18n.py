"""Locale helpers for templates: labels of states and kinds, numbers the Chinese way."""

from __future__ import annotations

import math
from collections.abc import Callable
from functools import lru_cache
from typing import Any

from babel import Locale
from flask import Flask, g, redirect, request, session, url_for
from flask_babel import format_date, format_decimal, get_locale, get_translations
from flask_babel import gettext as _
from flask_babel import lazy_gettext as _l
from jinja2 import pass_context
from jinja2.runtime import Context
from markupsafe import Markup

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


@lru_cache(maxsize=16)
def parsed_locale(code: str) -> Locale:
    """``Locale.parse`` once per code and process: for zh_CN it resolves likely subtags and
    asks the file system, a quarter of a millisecond that flask_babel would pay on every
    request (it passes a Locale it is given through unchanged)."""
    return Locale.parse(code)


def _app_globals() -> Any:
    """The app context's ``g`` itself, or None outside one: one resolution of the proxy,
    where ``if g:`` and then ``g.get(...)`` made two. A page asks dozens of times."""
    try:
        return g._get_current_object()
    except RuntimeError:
        return None


def locale() -> str:
    """The catalogue key of the request's locale: ``zh_CN`` or ``en`` (Babel says zh_Hans_CN).
    Kept on ``g``: a page asks for it dozens of times (every number, label and text)."""
    app_g = _app_globals()
    if app_g is None:
        return _locale_key(get_locale())
    cached = getattr(app_g, "portal_locale", None)
    if cached is None:
        cached = app_g.portal_locale = _locale_key(get_locale())
    return cached


def _locale_key(current: Locale | None) -> str:
    return "zh_CN" if current is None or current.language == "zh" else "en"


def translations(app_g: Any = None):
    """flask_babel's translations of the request, looked up once per request: Jinja's ``_``
    otherwise resolves the domain, the locale and the catalogue cache on every string.
    ``app_g``: the request's ``g`` where the caller has it (a template's context does)."""
    if app_g is None:
        app_g = _app_globals()
        if app_g is None:
            return get_translations()
    cached = getattr(app_g, "portal_translations", None)
    if cached is None:
        cached = app_g.portal_translations = get_translations()
    return cached


def _newstyle(context: Context, text: str, variables: dict) -> str:
    """What Jinja's newstyle gettext does with a translation: Markup when autoescaping, and
    always a %-format (so %% is a percent sign; without a % the text is unchanged)."""
    # bandit B704: the text is the catalogue's translation of a template literal, as in Jinja's
    # own newstyle gettext; the variables are escaped by Markup's % formatting.
    rv = Markup(text) if context.eval_ctx.autoescape else text  # nosec B704
    return rv % variables if "%" in rv else rv


_CACHE_SIZE = 4096  # template literals and windows number a few hundred; a bound all the same


def _per_catalogue(name: str, key: str, make: Callable[[Any], str], app_g: Any = None) -> str:
    """``make(catalogue)`` once per catalogue and ``key``: kept on the request's catalogue
    object, so it lives exactly as long as that catalogue (per app and locale) and one
    language never gets another's text."""
    catalogue = translations(app_g)
    cache = catalogue.__dict__.setdefault(name, {})
    text = cache.get(key)
    if text is None:
        text = make(catalogue)
        if len(cache) < _CACHE_SIZE:
            cache[key] = text
    return text


# A template's context holds the request's ``g`` itself (Flask's default context processor
# puts the object there, not the proxy): the strings below read the catalogue through it.
@pass_context
def _jinja_gettext(context: Context, string: str, /, **variables) -> str:
    if variables or not context.eval_ctx.autoescape:
        return _newstyle(context, translations(context.get("g")).ugettext(string), variables)
    # A page shows dozens of fixed strings: each one's Markup is made once.
    return _per_catalogue("portal_markup", string, lambda c: _newstyle(context, c.ugettext(string), variables),
                          context.get("g"))


@pass_context
def _jinja_ngettext(context: Context, singular: str, plural: str, n: int, /, **variables) -> str:
    variables.setdefault("num", n)
    return _newstyle(context, translations(context.get("g")).ungettext(singular, plural, n), variables)


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
    if not math.isfinite(v):
        return format_decimal(v)
    # Both catalogues (en, zh_CN) write decimals as Babel's "#,##0.###": comma groups of three,
    # a point, "-" - Python's own formatting gives the same text for a fraction of the cost
    # (tests/functional/test_i18n_numbers.py compares them).
    if v.is_integer():
        return f"{int(v):,}"
    return f"{round(v, 2):,.2f}".rstrip("0").rstrip(".")


def window_label(window: str | None) -> str:
    if not window:
        return ""
    # A program page labels a window per requirement row: each label is made once.
    return _per_catalogue("portal_windows", window, lambda _c: _window_text(window))


def _window_text(window: str) -> str:
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
    # Jinja's _ / gettext / ngettext as flask_babel installs them (newstyle), but through
    # translations() and without a second context.call: a page has dozens of strings.
    app.jinja_env.install_gettext_callables(
        gettext=lambda s: translations().ugettext(s),
        ngettext=lambda s, p, n: translations().ungettext(s, p, n),
        newstyle=True,
        pgettext=lambda c, s: translations().upgettext(c, s),
        npgettext=lambda c, s, p, n: translations().unpgettext(c, s, p, n),
    )
    # ``_`` straight to our gettext: Jinja's alias would add a lookup and a second context.call.
    app.jinja_env.globals.update(_=_jinja_gettext, gettext=_jinja_gettext, ngettext=_jinja_ngettext)
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
