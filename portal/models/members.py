from __future__ import annotations

import datetime as dt

from sqlalchemy import Date, DateTime, ForeignKey, Index, String
from sqlalchemy.ext.compiler import compiles
from sqlalchemy.orm import Mapped, mapped_column
from sqlalchemy.sql.functions import FunctionElement

from .base import Base

ROLES = ("member", "staff", "admin")


class StoredTime(FunctionElement):
    """The database's clock when the row is written, to the millisecond or better (engine/run.py
    compares it with a run's mark). Not PostgreSQL's now(): that is the transaction's start,
    which a long import would put before a mark taken while it was still writing."""

    type = DateTime(timezone=True)
    inherit_cache = True


@compiles(StoredTime)
def _stored_time(element, compiler, **kw) -> str:
    return "(strftime('%Y-%m-%d %H:%M:%f', 'now'))"


@compiles(StoredTime, "postgresql")
def _stored_time_pg(element, compiler, **kw) -> str:
    return "clock_timestamp()"
# Segment attributes (seed 002): staff set, filter and export by them; no level logic.
SEGMENTS = ("business_type", "industry", "scale")


class Member(Base):
    __tablename__ = "members"

    id: Mapped[int] = mapped_column(primary_key=True)
    key: Mapped[str] = mapped_column(String(64), unique=True)
    name: Mapped[str] = mapped_column(String(200), default="")
    email: Mapped[str | None] = mapped_column(String(254), unique=True)
    role: Mapped[str] = mapped_column(String(16), default="member")
    password_hash: Mapped[str | None] = mapped_column(String(255))
    business_type: Mapped[str | None] = mapped_column(String(64))
    industry: Mapped[str | None] = mapped_column(String(64))
    scale: Mapped[str | None] = mapped_column(String(32))
    locale: Mapped[str | None] = mapped_column(String(16))
    created_at: Mapped[dt.datetime] = mapped_column(DateTime(timezone=True))

    __table_args__ = (
        Index("ix_members_segments", "business_type", "industry", "scale"),
        # Staff search by prefix (services/staff.py): SQLite serves ranges from plain indexes;
        # PostgreSQL's LIKE 'x%' needs text_pattern_ops indexes (its collations are not bytewise).
        Index("ix_members_name", "name", postgresql_ops={"name": "text_pattern_ops"}),
        Index("ix_members_key_prefix", "key", postgresql_ops={"key": "text_pattern_ops"}).ddl_if(dialect="postgresql"),
        Index("ix_members_email_prefix", "email", postgresql_ops={"email": "text_pattern_ops"}).ddl_if(
            dialect="postgresql"),
    )


class Enrolment(Base):
    __tablename__ = "enrolments"

    member_id: Mapped[int] = mapped_column(ForeignKey("members.id", ondelete="CASCADE"), primary_key=True)
    program_key: Mapped[str] = mapped_column(ForeignKey("programs.key"), primary_key=True)
    enrolled_on: Mapped[dt.date] = mapped_column(Date)
    # When the row was stored, by the database's clock: a same-day re-run looks at enrolments
    # stored since the earlier run read its data. NULL: stored before migration 0003.
    added_at: Mapped[dt.datetime | None] = mapped_column(DateTime(timezone=True), server_default=StoredTime())

    __table_args__ = (
        Index("ix_enrolments_program_member", "program_key", "member_id"),
        # Not (program_key, added_at): the planner would take it for program scans too and lose
        # ix_enrolments_program_member's member order (a sort of every row of the scan).
        Index("ix_enrolments_added", "added_at"),
    )
