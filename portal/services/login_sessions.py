"""Browser login sessions kept on the server, so that logging out or changing the password
really ends a session even if someone kept a copy of the (signed) cookie."""

from __future__ import annotations

import datetime as dt
import hashlib
import secrets

from sqlalchemy import bindparam, select, update
from sqlalchemy.orm import Session

from ..models import LoginSession, Member


def _digest(token: str) -> str:
    return hashlib.sha256(token.encode("ascii", "replace")).hexdigest()


def start(session: Session, member_id: int, address: str | None = None,
          now: dt.datetime | None = None) -> str:
    """A new session; returns the random token the cookie carries (shown nowhere else)."""
    token = secrets.token_urlsafe(32)
    session.add(LoginSession(member_id=member_id, token_hash=_digest(token), address=(address or "")[:64] or None,
                             created_at=now or dt.datetime.now(dt.UTC)))
    session.flush()
    return token


# Run on every request of a logged-in browser: built once (building costs as much as running).
_MEMBER_OF = (select(Member).join(LoginSession, LoginSession.member_id == Member.id)
              .where(Member.id == bindparam("member_id"), LoginSession.token_hash == bindparam("token_hash"),
                     LoginSession.ended_at.is_(None)))


def member_of(session: Session, member_id: int, token: str) -> Member | None:
    """The member if ``token`` is one of its sessions that has not ended (one query)."""
    return session.scalar(_MEMBER_OF, {"member_id": member_id, "token_hash": _digest(token)})


def end(session: Session, token: str, now: dt.datetime | None = None) -> None:
    session.execute(update(LoginSession).where(LoginSession.token_hash == _digest(token), LoginSession.ended_at.is_(None))
                    .values(ended_at=now or dt.datetime.now(dt.UTC)))


def end_others(session: Session, member_id: int, keep: str | None, now: dt.datetime | None = None) -> int:
    """End every session of the member except ``keep``; returns how many ended."""
    stmt = update(LoginSession).where(LoginSession.member_id == member_id, LoginSession.ended_at.is_(None))
    if keep:
        stmt = stmt.where(LoginSession.token_hash != _digest(keep))
    return session.execute(stmt.values(ended_at=now or dt.datetime.now(dt.UTC))).rowcount or 0
