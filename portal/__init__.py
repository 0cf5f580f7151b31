"""Portal: a creator and member self-service level portal."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from flask import Flask

PACKAGE_DIR = Path(__file__).resolve().parent


def resource_dir(name: str) -> Path:
    """templates/, static/ and migrations/ live at the repository top in a checkout and inside
    the package in a wheel (hatchling force-include)."""
    inside = PACKAGE_DIR / name
    return inside if inside.is_dir() else PACKAGE_DIR.parent / name


def create_app(config: dict[str, Any] | None = None, *, web: bool = True) -> Flask:
    """The app; web=False leaves out the site (register_web), for commands that do not serve it."""
    from . import config as config_module

    app = Flask(
        __name__,
        template_folder=str(resource_dir("templates")),
        static_folder=str(resource_dir("static")),
        instance_relative_config=True,
    )
    app.config.update(config_module.defaults(app.instance_path))
    app.config.update(config_module.from_environment())
    app.config.update(config or {})
    if not app.config.get("PORTAL_CLI"):
        config_module.check_secret(app.config)
    Path(app.instance_path).mkdir(parents=True, exist_ok=True)
    if not app.config.get("SECRET_KEY"):
        app.config["SECRET_KEY"] = _instance_secret(app)
        app.config["SECRET_KEY_GENERATED"] = True  # `portal run` still insists on a real one
    app.config["SESSION_COOKIE_SECURE"] = not (app.debug or app.config.get("DEMO") or app.config.get("TESTING"))
    app.config["REMEMBER_COOKIE_SECURE"] = app.config["SESSION_COOKIE_SECURE"]
    from .database import db

    db.init_app(app)
    if web:
        register_web(app)
    register_commands(app)
    return app


def register_web(app: Flask) -> None:
    """Everything that serves the site: extensions, security hooks, error pages, blueprints.
    The command line's other commands skip it: its imports are a fifth of their start-up."""
    app.jinja_env.add_extension("jinja2.ext.do")
    register_extensions(app)
    register_security_headers(app)
    from .web import security

    security.register(app)
    register_blueprints(app)


def _instance_secret(app: Flask) -> str:
    """Demo/debug/CLI only: a random key kept in the instance folder so sessions survive restarts."""
    import secrets

    path = Path(app.instance_path) / "secret_key"
    path.parent.mkdir(parents=True, exist_ok=True)
    if not path.exists():
        path.write_text(secrets.token_hex(32))
        path.chmod(0o600)
    return path.read_text().strip()


def register_extensions(app: Flask) -> None:
    from .extensions import babel, csrf, db, limiter, login_manager

    csrf.init_app(app)
    app.config.setdefault("RATELIMIT_STORAGE_URI", app.config["RATELIMIT_STORAGE"])
    # The limiter object is shared by every app in the process: say "enabled" explicitly, or
    # an earlier app's RATELIMIT_ENABLED=False (tests) would carry over.
    app.config.setdefault("RATELIMIT_ENABLED", True)
    limiter.init_app(app)
    from .web.catalogs import compile_catalogs

    app.config["BABEL_TRANSLATION_DIRECTORIES"] = str(compile_catalogs(Path(app.instance_path) / "translations"))
    babel.init_app(app, locale_selector=_select_locale)
    login_manager.init_app(app)
    login_manager.login_view = "auth.login"
    login_manager.session_protection = "strong"

    from flask_babel import get_locale

    app.jinja_env.globals["get_locale"] = get_locale

    from .web import i18n

    i18n.init_app(app)

    @app.context_processor
    def _unread() -> dict:
        from flask import g
        from flask_login import current_user

        if getattr(current_user, "is_authenticated", False):
            unread = g.get("unread")  # the login check counted them (web/auth.py load_user)
            if unread is None:
                from .services.member_pages import unread_count

                unread = unread_count(db.session, current_user.id)
            return {"unread": unread}
        return {"unread": 0}


def _select_locale():
    from flask import current_app, session
    from flask_login import current_user

    from .web.i18n import parsed_locale

    langs = current_app.config["LANGUAGES"]
    chosen = session.get("locale")
    if chosen in langs:
        return parsed_locale(chosen)
    if getattr(current_user, "is_authenticated", False) and current_user.locale in langs:
        return parsed_locale(current_user.locale)
    return parsed_locale(current_app.config["BABEL_DEFAULT_LOCALE"])  # zh_CN unless the user chose otherwise


CSP = ("default-src 'self'; script-src 'self'; style-src 'self'; style-src-attr 'unsafe-inline'; img-src 'self' data:; "
       "object-src 'none'; base-uri 'none'; frame-ancestors 'none'; form-action 'self'")


def register_security_headers(app: Flask) -> None:
    @app.after_request
    def _headers(response):
        h = response.headers
        h.setdefault("Content-Security-Policy", CSP)
        h.setdefault("X-Content-Type-Options", "nosniff")
        h.setdefault("Referrer-Policy", "same-origin")
        h.setdefault("X-Frame-Options", "DENY")
        if app.config["SESSION_COOKIE_SECURE"]:
            h.setdefault("Strict-Transport-Security", "max-age=31536000; includeSubDomains")
        return response

    @app.errorhandler(404)
    @app.errorhandler(405)
    def _not_found(exc):
        from flask import jsonify, render_template, request
        from flask_babel import gettext as _

        if request.path.startswith("/api/"):
            response = jsonify({"error": exc.name.lower(), "details": exc.description})
        else:
            response = app.make_response(render_template(
                "error.html", title=_("Not found") if exc.code == 404 else exc.name,
                message=_("There is nothing here.") if exc.code == 404 else exc.description))
        response.status_code = exc.code
        if getattr(exc, "valid_methods", None):
            response.headers["Allow"] = ", ".join(exc.valid_methods)  # RFC 9110 for a 405
        return response

    @app.before_request
    def _declared_too_large():
        # Werkzeug enforces MAX_CONTENT_LENGTH only when a view reads the body; refuse a declared
        # oversized body up front so every route answers the same 413.
        from flask import abort, request

        limit = app.config.get("MAX_CONTENT_LENGTH")
        if limit and request.content_length is not None and request.content_length > limit:
            abort(413)

    @app.errorhandler(413)
    def _too_large(exc):
        from flask import jsonify, render_template, request
        from flask_babel import gettext as _

        limit = app.config.get("MAX_CONTENT_LENGTH") or 0
        if request.path.startswith("/api/"):
            return jsonify({"error": "request too large", "details": {"max_bytes": limit}}), 413
        return render_template("error.html", title=_("Too large"),
                               message=_("The request is larger than %(mib)s MiB.", mib=round(limit / 1048576, 2))), 413

    @app.errorhandler(429)
    def _too_many(exc):
        from flask import jsonify, render_template, request
        from flask_babel import gettext as _

        if request.path.startswith("/api/"):
            return jsonify({"error": "too many requests", "details": str(exc.description)}), 429
        return render_template("error.html", title=_("Too many attempts"),
                               message=_("Too many attempts. Please wait a few minutes and try again.")), 429


def register_blueprints(app: Flask) -> None:
    from .web import api, auth, health, member, staff

    app.register_blueprint(health.bp)
    app.register_blueprint(api.bp)
    app.register_blueprint(staff.bp)
    app.register_blueprint(auth.bp)
    app.register_blueprint(member.bp)


def register_commands(app: Flask) -> None:
    from .cli import register

    register(app)
