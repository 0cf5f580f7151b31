"""Configuration: defaults, overridden by PORTAL_* environment variables."""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any

ENV_PREFIX = "PORTAL_"
# Read from the environment as booleans ("false" must not be a truthy string). Switching the
# rate limiter off is for load tests on loopback only.
BOOLEAN_KEYS = frozenset({"DEMO", "RATELIMIT_ENABLED"})
INTEGER_KEYS = frozenset({"MAX_CONTENT_LENGTH"})


class ConfigError(RuntimeError):
    pass


def defaults(instance_path: str) -> dict[str, Any]:
    return {
        "DATABASE_URL": "sqlite:///" + str(Path(instance_path) / "portal.db"),
        # bandit B105: no key by default; check_secret() refuses to serve without one
        "SECRET_KEY": None,  # nosec B105
        "SCHEDULER": "off",
        "DEMO": False,
        "RATELIMIT_STORAGE": "memory://",
        "MAX_CONTENT_LENGTH": 16 * 1024 * 1024,
        "BABEL_DEFAULT_LOCALE": "zh_CN",
        "LANGUAGES": ["zh_CN", "en"],
        "SESSION_COOKIE_HTTPONLY": True,
        "SESSION_COOKIE_SAMESITE": "Lax",
        "REMEMBER_COOKIE_HTTPONLY": True,
        "REMEMBER_COOKIE_SAMESITE": "Lax",
        "WTF_CSRF_TIME_LIMIT": None,
    }


def from_environment(environ: dict[str, str] | None = None) -> dict[str, Any]:
    environ = dict(os.environ if environ is None else environ)
    out: dict[str, Any] = {}
    for name, value in environ.items():
        if name.startswith(ENV_PREFIX) and not name.startswith("PORTAL_TEST_"):
            key = name[len(ENV_PREFIX) :]
            out[key] = value
    for key in BOOLEAN_KEYS & out.keys():
        out[key] = out[key].lower() in ("1", "true", "yes", "on")
    for key in INTEGER_KEYS & out.keys():
        try:
            out[key] = int(out[key])
        except ValueError:
            raise ConfigError(f"PORTAL_{key} must be a whole number, not {out[key]!r}") from None
    return out


def check_secret(config: dict[str, Any]) -> None:
    """Outside debug, demo and tests a secret key must be configured."""
    if config.get("SECRET_KEY") and not config.get("SECRET_KEY_GENERATED"):
        return
    if config.get("DEBUG") or config.get("DEMO") or config.get("TESTING"):
        return
    raise ConfigError(
        "PORTAL_SECRET_KEY is not set. Set it to a long random value (for example the output of "
        "`python -c 'import secrets; print(secrets.token_hex(32))'`) before serving Portal."
    )
