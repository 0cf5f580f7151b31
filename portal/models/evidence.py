from __future__ import annotations

import datetime as dt

from sqlalchemy import DateTime, ForeignKey, Index, Integer, String
from sqlalchemy.orm import Mapped, mapped_column

from .base import Base


class EvidenceFile(Base):
    """A file a member uploaded as evidence for a grade (the music program's data proofs).
    The bytes live under the instance folder (never static/), named by ``stored_name``."""

    __tablename__ = "evidence_files"

    id: Mapped[int] = mapped_column(primary_key=True)
    member_id: Mapped[int] = mapped_column(ForeignKey("members.id", ondelete="CASCADE"))
    program_key: Mapped[str] = mapped_column(ForeignKey("programs.key"))
    filename: Mapped[str] = mapped_column(String(200))  # the uploader's name, cleaned, for display
    stored_name: Mapped[str] = mapped_column(String(80), unique=True)
    content_type: Mapped[str] = mapped_column(String(64))
    size: Mapped[int] = mapped_column(Integer)
    sha256: Mapped[str] = mapped_column(String(64))
    uploaded_at: Mapped[dt.datetime] = mapped_column(DateTime(timezone=True))

    __table_args__ = (Index("ix_evidence_files_member_program", "member_id", "program_key", "uploaded_at"),)
