"""The security event log (OWASP ASVS 5.0, 16.3): every authentication attempt, success or
failure, and every refused authorization, with time, account, address and route. Append-only;
never a password, token or session id."""

from __future__ import annotations

import datetime as dt
from dataclasses import dataclass

from sqlalchemy import select
from sqlalchemy.orm import Session

from ..models import SecurityEvent

# kind -> what it means (the staff page shows these names; docs/security.md lists them)
KINDS = {
    "login_succeeded": "a password login succeeded",
    "login_failed": "a password login failed (unknown account or wrong password)",
    "login_limited": "a login was refused by the rate limiter (429)",
    "logout": "a session was ended by its owner",
    # bandit B105: a label
    "password_changed": "a password was changed (the account's other sessions ended)",  # nosec B105
    # bandit B105: a label
    "password_change_failed": "a password change failed (wrong current password)",  # nosec B105
    "session_ended": "a request came with a session that had ended (logged out elsewhere)",
    "unauthenticated": "a request needing a login or token came without a valid one (401)",
    "forbidden": "a request was refused for its role (403)",
    "not_owner": "a member asked for another member's object (answered 404)",
    "csrf_failed": "a form came without a valid CSRF token (400)",
}


def _clip(value: str | None, size: int) -> str | None:
    return value[:size] if value else value


def record(session: Session, kind: str, *, method: str, route: str, status: int, account: str | None = None,
           member_id: int | None = None, address: str | None = None, detail: str | None = None,
           now: dt.datetime | None = None) -> None:
    if kind not in KINDS:
        raise ValueError(f"unknown security event kind {kind!r}")
    session.add(SecurityEvent(at=now or dt.datetime.now(dt.UTC), kind=kind, account=_clip(account, 254),
                              member_id=member_id, address=_clip(address, 64), method=method[:8],
                              route=_clip(route, 255) or "", status=status, detail=_clip(detail, 255)))
    session.flush()


@dataclass(frozen=True)
class EventFilter:
    kind: str | None = None
    account: str | None = None
    address: str | None = None
    since: dt.datetime | None = None


def events(session: Session, flt: EventFilter, *, before_id: int | None = None, limit: int = 100) -> list[SecurityEvent]:
    """Newest first, keyset-paginated by id."""
    q = select(SecurityEvent).order_by(SecurityEvent.id.desc()).limit(limit)
    if flt.kind:
        q = q.where(SecurityEvent.kind == flt.kind)
    if flt.account:
        q = q.where(SecurityEvent.account == flt.account)
    if flt.address:
        q = q.where(SecurityEvent.address == flt.address)
    if flt.since:
        q = q.where(SecurityEvent.at >= flt.since)
    if before_id:
        q = q.where(SecurityEvent.id < before_id)
    return list(session.scalars(q))
