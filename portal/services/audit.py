"""The audit log: append-only. There is no update or delete path for it anywhere in the code."""

from __future__ import annotations

import datetime as dt
from typing import Any

from sqlalchemy.orm import Session

from ..models import AuditEntry


def record(session: Session, actor: str, action: str, *, member_id: int | None = None, program_key: str | None = None,
           reason: str | None = None, before: dict[str, Any] | None = None, after: dict[str, Any] | None = None,
           now: dt.datetime | None = None) -> AuditEntry:
    entry = AuditEntry(at=now or dt.datetime.now(dt.UTC), actor=actor, action=action, member_id=member_id,
                       program_key=program_key, reason=reason, before=before, after=after)
    session.add(entry)
    session.flush()
    return entry
