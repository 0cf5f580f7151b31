from __future__ import annotations

import datetime as dt

from sqlalchemy import (
    BigInteger,
    Date,
    DateTime,
    ForeignKey,
    Integer,
    String,
    Text,
    UniqueConstraint,
)
from sqlalchemy.orm import Mapped, mapped_column

from .base import Base


class Program(Base):
    __tablename__ = "programs"

    key: Mapped[str] = mapped_column(String(32), primary_key=True)
    name: Mapped[str] = mapped_column(String(200))
    current_version: Mapped[int] = mapped_column(Integer)
    # The latest finished evaluation: its as-of date, and the metric mark it read up to (every
    # row with a larger id came later). Pages explain standings with the values as of these.
    # Deferred: read where needed (explicitly selected), not with every loaded program.
    evaluated_as_of: Mapped[dt.date | None] = mapped_column(Date, deferred=True)
    evaluated_mark: Mapped[int | None] = mapped_column(BigInteger, deferred=True)
    evaluated_run_id: Mapped[int | None] = mapped_column(Integer, deferred=True)
    evaluated_at: Mapped[dt.datetime | None] = mapped_column(DateTime(timezone=True), deferred=True)  # its end


class ProgramVersion(Base):
    """Every published definition is kept, so history can say which rules applied."""

    __tablename__ = "program_versions"

    id: Mapped[int] = mapped_column(primary_key=True)
    program_key: Mapped[str] = mapped_column(ForeignKey("programs.key"))
    version: Mapped[int] = mapped_column(Integer)
    source: Mapped[str] = mapped_column(Text)
    checksum: Mapped[str] = mapped_column(String(64))
    published_at: Mapped[dt.datetime] = mapped_column(DateTime(timezone=True))
    published_by: Mapped[str | None] = mapped_column(String(64))
    note: Mapped[str | None] = mapped_column(String(500))

    __table_args__ = (UniqueConstraint("program_key", "version", name="uq_program_versions_key_version"),)
