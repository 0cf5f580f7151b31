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

    __table_args__ = (Index("ix_members_segments", "business_type", "industry", "scale"),
                      Index("ix_members_name", "name"))  # staff search by name prefix


class Enrolment(Base):
    __tablename__ = "enrolments"

    member_id: Mapped[int] = mapped_column(ForeignKey("members.id", ondelete="CASCADE"), primary_key=True)
    program_key: Mapped[str] = mapped_column(ForeignKey("programs.key"), primary_key=True)
    enrolled_on: Mapped[dt.date] = mapped_column(Date)

    __table_args__ = (Index("ix_enrolments_program_member", "program_key", "member_id"),)
