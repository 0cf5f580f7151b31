"""Security records: login sessions (so logout and a password change really end them) and
the security event log (OWASP ASVS 16.3: authentication attempts and refused authorizations)."""

from __future__ import annotations

import datetime as dt

from sqlalchemy import DateTime, ForeignKey, Index, Integer, String
from sqlalchemy.orm import Mapped, mapped_column

from .base import Base, BigId


class LoginSession(Base):
    """One browser login. The signed cookie carries the random id; only its SHA-256 is stored.
    A session is valid while ``ended_at`` is empty: logout ends it, a password change ends the
    account's other sessions."""

    __tablename__ = "login_sessions"

    id: Mapped[int] = mapped_column(BigId, primary_key=True, autoincrement=True)
    member_id: Mapped[int] = mapped_column(ForeignKey("members.id", ondelete="CASCADE"), index=True)
    token_hash: Mapped[str] = mapped_column(String(64), unique=True)
    created_at: Mapped[dt.datetime] = mapped_column(DateTime(timezone=True))
    address: Mapped[str | None] = mapped_column(String(64))
    ended_at: Mapped[dt.datetime | None] = mapped_column(DateTime(timezone=True))


class SecurityEvent(Base):
    """Append-only, like the audit log. Never holds a password or token."""

    __tablename__ = "security_events"

    id: Mapped[int] = mapped_column(BigId, primary_key=True, autoincrement=True)
    at: Mapped[dt.datetime] = mapped_column(DateTime(timezone=True), index=True)
    kind: Mapped[str] = mapped_column(String(32))
    account: Mapped[str | None] = mapped_column(String(254))  # the name typed, a member key or token:NAME
    member_id: Mapped[int | None] = mapped_column(ForeignKey("members.id", ondelete="SET NULL"))
    address: Mapped[str | None] = mapped_column(String(64))
    method: Mapped[str] = mapped_column(String(8))
    route: Mapped[str] = mapped_column(String(255))
    status: Mapped[int] = mapped_column(Integer)
    detail: Mapped[str | None] = mapped_column(String(255))

    __table_args__ = (
        Index("ix_security_events_kind_at", "kind", "at"),
        Index("ix_security_events_account_at", "account", "at"),
    )
