from __future__ import annotations

import datetime as dt
from typing import Any

from sqlalchemy import (
    JSON,
    BigInteger,
    Boolean,
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


class Standing(Base):
    """The current state of a member in a program; pages read this, never evaluate.

    A run writes a standing only when it changes (``as_of``: the date of that run), so a daily
    run of a million members writes the few thousand that moved, not every row."""

    __tablename__ = "standings"

    member_id: Mapped[int] = mapped_column(ForeignKey("members.id", ondelete="CASCADE"), primary_key=True)
    program_key: Mapped[str] = mapped_column(ForeignKey("programs.key"), primary_key=True)
    level: Mapped[str | None] = mapped_column(String(32))
    sub_class: Mapped[str | None] = mapped_column(String(32))
    category: Mapped[str | None] = mapped_column(String(32))
    score: Mapped[float | None] = mapped_column(Double)
    status: Mapped[str] = mapped_column(String(16), default="active")  # active | blacklisted
    as_of: Mapped[dt.date] = mapped_column(Date)
    level_since: Mapped[dt.date | None] = mapped_column(Date)
    promoted_on: Mapped[dt.date | None] = mapped_column(Date)  # start of the protection period
    reward_met: Mapped[bool | None] = mapped_column(Boolean)
    # Every value of the program as of ``as_of`` - kept only for programs with population ranks
    # (a rank cannot be recomputed for one member); NULL elsewhere: the values of those are
    # recomputed for one member from its metric rows when shown (services/explain.py).
    values: Mapped[dict[str, Any] | None] = mapped_column(JSON)
    # The standing before its last change (the run of ``as_of``): what churn warnings compare
    # with, and the state a re-run of that as-of date decides from (so it repeats the first run).
    prev_level: Mapped[str | None] = mapped_column(String(32))
    prev_sub_class: Mapped[str | None] = mapped_column(String(32))
    prev_status: Mapped[str | None] = mapped_column(String(16))
    prev_level_since: Mapped[dt.date | None] = mapped_column(Date)
    prev_promoted_on: Mapped[dt.date | None] = mapped_column(Date)
    prev_as_of: Mapped[dt.date | None] = mapped_column(Date)
    prev_score: Mapped[float | None] = mapped_column(Double)
    prev_values: Mapped[dict[str, Any] | None] = mapped_column(JSON)
    program_version: Mapped[int] = mapped_column(Integer)
    # A level set by staff: the scheduler does not move it until lock_until (null: until lifted).
    locked_level: Mapped[str | None] = mapped_column(String(32))
    lock_until: Mapped[dt.date | None] = mapped_column(Date)
    locked_by: Mapped[str | None] = mapped_column(String(64))
    lock_reason: Mapped[str | None] = mapped_column(Text)
    # After staff lift a blacklisting, the same signals do not blacklist again until this date.
    blacklist_exempt_until: Mapped[dt.date | None] = mapped_column(Date)

    __table_args__ = (
        Index("ix_standings_program_level", "program_key", "level", "sub_class"),
        # Staff filter a program by level in member order: walked in order, stops at a page.
        Index("ix_standings_program_level_member", "program_key", "level", "member_id"),
        Index("ix_standings_program_status", "program_key", "status"),
    )


class LevelChange(Base):
    """A change of level, sub-class or status, with the failed requirements as reasons."""

    __tablename__ = "level_changes"

    id: Mapped[int] = mapped_column(BigId, primary_key=True, autoincrement=True)
    member_id: Mapped[int] = mapped_column(ForeignKey("members.id", ondelete="CASCADE"))
    program_key: Mapped[str] = mapped_column(ForeignKey("programs.key"))
    on: Mapped[dt.date] = mapped_column(Date)
    from_level: Mapped[str | None] = mapped_column(String(32))
    to_level: Mapped[str | None] = mapped_column(String(32))
    from_sub_class: Mapped[str | None] = mapped_column(String(32))
    to_sub_class: Mapped[str | None] = mapped_column(String(32))
    from_status: Mapped[str | None] = mapped_column(String(16))
    to_status: Mapped[str | None] = mapped_column(String(16))
    direction: Mapped[str] = mapped_column(String(16))  # up | down | same
    cause: Mapped[str] = mapped_column(String(16))  # evaluation | blacklist | override | lift
    reasons: Mapped[list[dict[str, Any]]] = mapped_column(JSON, default=list)
    program_version: Mapped[int] = mapped_column(Integer)
    run_id: Mapped[int | None] = mapped_column(ForeignKey("evaluation_runs.id"))
    created_at: Mapped[dt.datetime] = mapped_column(DateTime(timezone=True))

    __table_args__ = (
        # One net change per member, program, date and cause: a re-run of the same as-of date
        # updates it instead of recording a second one.
        UniqueConstraint("member_id", "program_key", "on", "cause", name="uq_level_changes_once"),
        Index("ix_level_changes_program_on", "program_key", "on"),
    )


class EvaluationRun(Base):
    __tablename__ = "evaluation_runs"

    id: Mapped[int] = mapped_column(primary_key=True)
    program_key: Mapped[str] = mapped_column(ForeignKey("programs.key"))
    program_version: Mapped[int] = mapped_column(Integer)
    as_of: Mapped[dt.date] = mapped_column(Date)
    started_at: Mapped[dt.datetime] = mapped_column(DateTime(timezone=True))
    finished_at: Mapped[dt.datetime | None] = mapped_column(DateTime(timezone=True))
    status: Mapped[str] = mapped_column(String(16), default="running")  # running | done | failed
    evaluated: Mapped[int] = mapped_column(Integer, default=0)
    upgraded: Mapped[int] = mapped_column(Integer, default=0)
    downgraded: Mapped[int] = mapped_column(Integer, default=0)
    unchanged: Mapped[int] = mapped_column(Integer, default=0)
    blacklisted: Mapped[int] = mapped_column(Integer, default=0)
    duration_ms: Mapped[int | None] = mapped_column(Integer)
    error: Mapped[str | None] = mapped_column(Text)
    # Every metric row up to this id was committed when the run read its data (None: unknown);
    # a same-day re-run re-examines only members with newer rows (engine/run.py).
    metric_mark: Mapped[int | None] = mapped_column(BigInteger)
    # metric_edits.edits when the run read its data: a later value means rows were changed or
    # deleted since, and a same-day re-run must be full.
    metric_edits: Mapped[int | None] = mapped_column(BigInteger)
    # The database's clock when the mark was read: enrolments stored after it are new to the run.
    marked_at: Mapped[dt.datetime | None] = mapped_column(DateTime(timezone=True))

    __table_args__ = (Index("ix_evaluation_runs_program_as_of", "program_key", "as_of"),)
