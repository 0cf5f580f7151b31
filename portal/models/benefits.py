from __future__ import annotations

import datetime as dt

from sqlalchemy import (
    JSON,
    Date,
    DateTime,
    Double,
    ForeignKey,
    Index,
    Integer,
    String,
    Text,
    UniqueConstraint,
)
from sqlalchemy.orm import Mapped, mapped_column

from .base import Base, BigId

BENEFIT_STATES = ("available", "pending_review", "issued", "claimed", "rejected", "expired", "revoked")
OPEN_STATES = ("available", "pending_review")  # not yet the member's: revoked when the level goes


class BenefitItem(Base):
    """One benefit a member holds or held: the ledger. Rows are never deleted."""

    __tablename__ = "benefit_items"

    id: Mapped[int] = mapped_column(BigId, primary_key=True, autoincrement=True)
    member_id: Mapped[int] = mapped_column(ForeignKey("members.id", ondelete="CASCADE"))
    program_key: Mapped[str] = mapped_column(ForeignKey("programs.key"))
    level: Mapped[str | None] = mapped_column(String(32))  # null for a staff grant
    tenure: Mapped[dt.date | None] = mapped_column(Date)  # level_since of the tenure it belongs to
    benefit_key: Mapped[str] = mapped_column(String(64))
    tier: Mapped[str] = mapped_column(String(16))  # basic | reward | grant
    mode: Mapped[str] = mapped_column(String(16))  # auto | claim | review
    state: Mapped[str] = mapped_column(String(16))
    quantity: Mapped[int] = mapped_column(Integer, default=1)
    amount: Mapped[float | None] = mapped_column(Double)  # money (a rebate, a card's worth)
    value: Mapped[float | None] = mapped_column(Double)  # stated worth of the benefit
    due_on: Mapped[dt.date] = mapped_column(Date)
    issued_on: Mapped[dt.date | None] = mapped_column(Date)
    claimed_on: Mapped[dt.date | None] = mapped_column(Date)
    expires_on: Mapped[dt.date | None] = mapped_column(Date)
    closed_on: Mapped[dt.date | None] = mapped_column(Date)  # revoked / expired / rejected on
    # Idempotency: the same benefit of the same member, program and period exists once.
    period: Mapped[str] = mapped_column(String(64))
    change_id: Mapped[int | None] = mapped_column(ForeignKey("level_changes.id", ondelete="SET NULL"))
    granted_by: Mapped[str | None] = mapped_column(String(64))
    reason: Mapped[str | None] = mapped_column(Text)
    request_text: Mapped[str | None] = mapped_column(Text)  # the member's review submission
    reviewed_by: Mapped[str | None] = mapped_column(String(64))
    review_note: Mapped[str | None] = mapped_column(Text)
    created_at: Mapped[dt.datetime] = mapped_column(DateTime(timezone=True))

    __table_args__ = (
        UniqueConstraint("member_id", "program_key", "benefit_key", "tier", "period", name="uq_benefit_items_once"),
        Index("ix_benefit_items_member_program", "member_id", "program_key", "state"),
        Index("ix_benefit_items_state_expires", "state", "expires_on"),
    )


class Notification(Base):
    __tablename__ = "notifications"

    id: Mapped[int] = mapped_column(BigId, primary_key=True, autoincrement=True)
    member_id: Mapped[int] = mapped_column(ForeignKey("members.id", ondelete="CASCADE"))
    program_key: Mapped[str | None] = mapped_column(String(32))
    kind: Mapped[str] = mapped_column(String(32))
    on: Mapped[dt.date] = mapped_column(Date)
    payload: Mapped[dict] = mapped_column(JSON, default=dict)
    dedup_key: Mapped[str] = mapped_column(String(160))
    read_at: Mapped[dt.datetime | None] = mapped_column(DateTime(timezone=True))
    created_at: Mapped[dt.datetime] = mapped_column(DateTime(timezone=True))

    __table_args__ = (
        UniqueConstraint("member_id", "dedup_key", name="uq_notifications_once"),
        Index("ix_notifications_member_read", "member_id", "read_at"),
    )


class JobRun(Base):
    """One run of a scheduled job for one as-of date; the unique key makes it run once."""

    __tablename__ = "job_runs"

    id: Mapped[int] = mapped_column(primary_key=True)
    job: Mapped[str] = mapped_column(String(64))
    as_of: Mapped[dt.date] = mapped_column(Date)
    status: Mapped[str] = mapped_column(String(16))  # running | done | failed
    holder: Mapped[str] = mapped_column(String(128))
    started_at: Mapped[dt.datetime] = mapped_column(DateTime(timezone=True))
    heartbeat_at: Mapped[dt.datetime] = mapped_column(DateTime(timezone=True))
    finished_at: Mapped[dt.datetime | None] = mapped_column(DateTime(timezone=True))
    attempts: Mapped[int] = mapped_column(Integer, default=1)
    counts: Mapped[dict | None] = mapped_column(JSON)
    error: Mapped[str | None] = mapped_column(Text)

    __table_args__ = (UniqueConstraint("job", "as_of", name="uq_job_runs_once"),)


class SchedulerLease(Base):
    """SQLite's stand-in for PostgreSQL's advisory lock: one named lease with an expiry."""

    __tablename__ = "scheduler_lease"

    name: Mapped[str] = mapped_column(String(32), primary_key=True)
    holder: Mapped[str] = mapped_column(String(128))
    expires_at: Mapped[dt.datetime] = mapped_column(DateTime(timezone=True))
