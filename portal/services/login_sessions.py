"""Browser login sessions kept on the server, so that logging out or changing the password
really ends a session even if someone kept a copy of the (signed) cookie."""

from __future__ import annotations

import datetime as dt
import hashlib
import secrets

from sqlalchemy import bindparam, func, select, update
from sqlalchemy.orm import Session

from ..models import LoginSession, Member, Notification


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
# Every page's header shows the unread count: counted in the same statement, one round trip.
_UNREAD_OF_MEMBER = (select(func.count()).select_from(Notification)
                     .where(Notification.member_id == Member.id, Notification.read_at.is_(None))
                     .scalar_subquery())
_MEMBER_AND_UNREAD = _MEMBER_OF.add_columns(_UNREAD_OF_MEMBER)


def member_of(session: Session, member_id: int, token: str) -> Member | None:
    """The member if ``token`` is one of its sessions that has not ended (one query)."""
    return session.scalar(_MEMBER_OF, {"member_id": member_id, "token_hash": _digest(token)})


def member_and_unread(session: Session, member_id: int, token: str) -> tuple[Member, int] | None:
    """``member_of`` and the member's unread notifications, in one query."""
    row = session.execute(_MEMBER_AND_UNREAD, {"member_id": member_id, "token_hash": _digest(token)}).first()
    return None if row is None else (row[0], row[1] or 0)


def end(session: Session, token: str, now: dt.datetime | None = None) -> None:
    session.execute(update(LoginSession).where(LoginSession.token_hash == _digest(token), LoginSession.ended_at.is_(None))
                    .values(ended_at=now or dt.datetime.now(dt.UTC)))


def end_others(session: Session, member_id: int, keep: str | None, now: dt.datetime | None = None) -> int:
    """End every session of the member except ``keep``; returns how many ended."""
    stmt = update(LoginSession).where(LoginSession.member_id == member_id, LoginSession.ended_at.is_(None))
    if keep:
        stmt = stmt.where(LoginSession.token_hash != _digest(keep))
    return session.execute(stmt.values(ended_at=now or dt.datetime.now(dt.UTC))).rowcount or 0
