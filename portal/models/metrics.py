from __future__ import annotations

import datetime as dt

from sqlalchemy import Date, Double, ForeignKey, Index, String, UniqueConstraint
from sqlalchemy.orm import Mapped, mapped_column

from .base import Base, BigId


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
        # A re-imported event (same member, metric and id) is a duplicate; rows without an
        # id are never duplicates (NULLs are distinct in both databases).
        UniqueConstraint("member_id", "metric", "event_id", name="uq_metric_rows_event"),
        # The evaluation scans by metric and date window, grouped by member.
        Index("ix_metric_rows_metric_date_member", "metric", "date", "member_id"),
        Index("ix_metric_rows_member_metric_date", "member_id", "metric", "date"),
    )
