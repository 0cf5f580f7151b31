"""SQLAlchemy 2.x models, one module per area. Import from here."""

from .audit import AuditEntry
from .base import Base
from .members import ROLES, SEGMENTS, Enrolment, Member
from .metrics import MetricRow
from .programs import Program, ProgramVersion
from .standings import EvaluationRun, LevelChange, Standing

__all__ = [
    "AuditEntry",
    "Base",
    "Enrolment",
    "EvaluationRun",
    "LevelChange",
    "Member",
    "MetricRow",
    "Program",
    "ProgramVersion",
    "ROLES",
    "SEGMENTS",
    "Standing",
]
