from __future__ import annotations

import datetime as dt

from sqlalchemy import (
    DDL,
    BigInteger,
    Date,
    Double,
    ForeignKey,
    Index,
    Integer,
    String,
    event,
    text,
)
from sqlalchemy.orm import Mapped, mapped_column

from .base import Base, BigId

# The rows the event index holds, and the conflict target that names it:
# INSERT ... ON CONFLICT {EVENT_CONFLICT} DO NOTHING skips a stored or repeated event.
EVENT_ROWS = "event_id IS NOT NULL"
EVENT_CONFLICT = f"(member_id, metric, event_id) WHERE {EVENT_ROWS}"


class MetricRow(Base):
    """One event or gauge reading. Several rows on one date are separate events."""

    __tablename__ = "metric_rows"

    id: Mapped[int] = mapped_column(BigId, primary_key=True, autoincrement=True)
    member_id: Mapped[int] = mapped_column(ForeignKey("members.id", ondelete="CASCADE"))
    metric: Mapped[str] = mapped_column(String(64))
    date: Mapped[dt.date] = mapped_column(Date)
    value: Mapped[float] = mapped_column(Double)
    kind: Mapped[str | None] = mapped_column(String(64))
    event_id: Mapped[str | None] = mapped_column(String(128))

    __table_args__ = (
        # A re-imported event (same member, metric and id) is a duplicate; rows without an id
        # are never duplicates, so the index holds only rows with one (most readings have none:
        # an import maintains it for a third of its rows). Inserts name it by its predicate.
        Index("uq_metric_rows_event", "member_id", "metric", "event_id", unique=True,
              sqlite_where=text(EVENT_ROWS), postgresql_where=text(EVENT_ROWS)),
        # Every scan on SQLite and the member pages read a member's rows by this index.
        Index("ix_metric_rows_member_metric_date", "member_id", "metric", "date"),
        # PostgreSQL's planner may read a date-bounded window by (metric, date) instead. SQLite's
        # engine scans name the member index (engine/aggregates.py), so there it was never read
        # and only cost every import a fourth b-tree (docs/performance.md, round 9).
        Index("ix_metric_rows_metric_date_member", "metric", "date", "member_id").ddl_if(dialect="postgresql"),
    )


class MetricEdits(Base):
    """One row counting UPDATE and DELETE statements on metric_rows, kept by database triggers
    (so edits made outside portal count too). Inserts do not count: a same-day re-run finds
    new rows by id; edits to rows it already read make it run in full (engine/run.py)."""

    __tablename__ = "metric_edits"

    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    edits: Mapped[int] = mapped_column(BigInteger, default=0)


# The triggers, per dialect. Migration 0003 creates the same; these serve metadata.create_all.
BUMP = "INSERT INTO metric_edits (id, edits) VALUES (1, 1) ON CONFLICT (id) DO UPDATE SET edits = metric_edits.edits + 1"
SQLITE_TRIGGERS = [
    f"CREATE TRIGGER metric_rows_{op.lower()}d AFTER {op} ON metric_rows BEGIN {BUMP}; END"
    for op in ("UPDATE", "DELETE")
]
POSTGRESQL_TRIGGERS = [
    f"CREATE FUNCTION metric_rows_edited() RETURNS trigger LANGUAGE plpgsql AS $$ BEGIN {BUMP}; RETURN NULL; END $$",
    "CREATE TRIGGER metric_rows_edited AFTER UPDATE OR DELETE OR TRUNCATE ON metric_rows "
    "FOR EACH STATEMENT EXECUTE FUNCTION metric_rows_edited()",
]
for _sql in SQLITE_TRIGGERS:
    event.listen(MetricRow.__table__, "after_create", DDL(_sql).execute_if(dialect="sqlite"))
for _sql in POSTGRESQL_TRIGGERS:
    event.listen(MetricRow.__table__, "after_create", DDL(_sql).execute_if(dialect="postgresql"))
