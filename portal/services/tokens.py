"""API bearer tokens: created once (the plain token is shown once), stored hashed, revocable,
scoped (a member token reads and acts only for its member)."""

from __future__ import annotations

import datetime as dt
import hashlib
import hmac
import re
import secrets
from dataclasses import dataclass

from sqlalchemy import select
from sqlalchemy.orm import Session

from ..models import ApiToken
from . import NotFound, ServiceError
from .standings import member_by_key

NAME_RE = re.compile(r"^[A-Za-z0-9_.\-]{1,64}$")


@dataclass(frozen=True)
class Principal:
    name: str
    role: str  # staff | member
    member_id: int | None

    @property
    def actor(self) -> str:
        return f"token:{self.name}"


def _digest(token: str) -> str:
    return hashlib.sha256(token.encode("utf-8")).hexdigest()


def create(session: Session, name: str, role: str, member_key: str | None = None,
           now: dt.datetime | None = None) -> str:
    if not NAME_RE.match(name or ""):
        raise ServiceError("a token name is 1-64 letters, digits, '_', '.' or '-'")
    if role not in ("staff", "member"):
        raise ServiceError("role must be staff or member")
    if role == "member" and not member_key:
        raise ServiceError("a member token needs --member KEY")
    if role == "staff" and member_key:
        raise ServiceError("a staff token is not tied to a member")
    if session.scalar(select(ApiToken.id).where(ApiToken.name == name)) is not None:
        raise ServiceError(f"a token named '{name}' exists already", status=409)
    member_id = member_by_key(session, member_key).id if member_key else None
    token = "pt_" + secrets.token_urlsafe(32)
    session.add(ApiToken(name=name, role=role, member_id=member_id, token_hash=_digest(token), prefix=token[:10],
                         created_at=now or dt.datetime.now(dt.UTC)))
    session.flush()
    return token


def revoke(session: Session, name: str, now: dt.datetime | None = None) -> None:
    row = session.scalar(select(ApiToken).where(ApiToken.name == name))
    if row is None:
        raise NotFound(f"no token named '{name}'")
    row.revoked_at = row.revoked_at or now or dt.datetime.now(dt.UTC)


def authenticate(session: Session, header: str | None) -> Principal | None:
    """The principal of an ``Authorization: Bearer ...`` header, or None."""
    if not header or not header.startswith("Bearer "):
        return None
    token = header[len("Bearer "):].strip()
    if not token.startswith("pt_") or len(token) > 100:
        return None
    digest = _digest(token)
    row = session.scalar(select(ApiToken).where(ApiToken.token_hash == digest))
    if row is None or row.revoked_at is not None or not hmac.compare_digest(row.token_hash, digest):
        return None
    return Principal(row.name, row.role, row.member_id)


def listing(session: Session) -> list[ApiToken]:
    return list(session.scalars(select(ApiToken).order_by(ApiToken.name)))
