"""SQLAlchemy 2.x models, one module per area. Import from here."""

from .audit import AuditEntry
from .base import Base
from .benefits import BENEFIT_STATES, OPEN_STATES, BenefitItem, JobRun, Notification, SchedulerLease
from .evidence import EvidenceFile
from .members import ROLES, SEGMENTS, Enrolment, Member
from .metrics import MetricEdits, MetricRow
from .programs import Program, ProgramVersion
from .security import LoginSession, SecurityEvent
from .standings import EvaluationRun, LevelChange, Standing
from .tokens import ApiToken
from .webhooks import WebhookDelivery, WebhookEndpoint

__all__ = [
    "ApiToken",
    "AuditEntry",
    "BENEFIT_STATES",
    "BenefitItem",
    "JobRun",
    "LoginSession",
    "Notification",
    "OPEN_STATES",
    "SchedulerLease",
    "SecurityEvent",
    "Base",
    "Enrolment",
    "EvidenceFile",
    "EvaluationRun",
    "LevelChange",
    "Member",
    "MetricEdits",
    "MetricRow",
    "Program",
    "ProgramVersion",
    "ROLES",
    "SEGMENTS",
    "Standing",
    "WebhookDelivery",
    "WebhookEndpoint",
]
