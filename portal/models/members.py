from __future__ import annotations

import datetime as dt

from sqlalchemy import Date, DateTime, ForeignKey, Index, String
from sqlalchemy.orm import Mapped, mapped_column

from .base import Base

ROLES = ("member", "staff", "admin")
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

    __table_args__ = (Index("ix_enrolments_program_member", "program_key", "member_id"),)
