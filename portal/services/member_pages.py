"""What the member pages show, assembled from stored standings, changes, items and
notifications - never an evaluation. Each function issues a fixed number of queries."""

from __future__ import annotations

import datetime as dt
import math
from dataclasses import dataclass, field
from typing import Any

from sqlalchemy import func, select, update
from sqlalchemy.orm import Session

from ..engine import rules
from ..engine.definition import AggregateSpec, Program
from ..engine.windows import bounds
from ..models import BenefitItem, Enrolment, LevelChange, Member, MetricRow, Notification, Standing
from . import NotFound
from . import programs as programs_service


@dataclass
class ProgramCard:
    program: Program
    standing: Standing | None
    requirements: list[dict[str, Any]]
    next_level: str | None
    tasks_left: int
    warnings: list[Notification] = field(default_factory=list)

    @property
    def key(self) -> str:
        return self.program.key


def enrolled(session: Session, member: Member) -> list[str]:
    return list(session.scalars(select(Enrolment.program_key).where(Enrolment.member_id == member.id)
                                .order_by(Enrolment.program_key)))


def cards(session: Session, member: Member, today: dt.date) -> list[ProgramCard]:
    """One card per enrolled program (2 queries + cached definitions)."""
    keys = enrolled(session, member)
    stored = {s.program_key: s for s in session.scalars(select(Standing).where(Standing.member_id == member.id))}
    warnings = open_warnings(session, member, today)
    out = []
    for key in keys:
        program, _ = programs_service.definition(session, key)
        st = stored.get(key)
        reqs = rules.requirements(program, st.level, st.values) if st else []
        nxt = rules.next_level(program, st.level if st else None)
        left = sum(1 for r in reqs if r["level"] == nxt and not r["met"])
        out.append(ProgramCard(program, st, reqs, nxt, left, [w for w in warnings if w.program_key == key]))
    return out


def open_warnings(session: Session, member: Member, today: dt.date) -> list[Notification]:
    """Downgrade warnings whose date has not passed, newest first."""
    rows = session.scalars(select(Notification).where(Notification.member_id == member.id,
                                                      Notification.kind == "downgrade_warning")
                           .order_by(Notification.on.desc(), Notification.id.desc()).limit(20))
    return [n for n in rows if n.payload.get("by", "9999-12-31") >= today.isoformat()]


def program_card(session: Session, member: Member, key: str, today: dt.date) -> ProgramCard:
    for card in cards(session, member, today):
        if card.key == key:
            return card
    raise NotFound(f"you are not enrolled in program '{key}'")


def hint(program: Program, row: dict[str, Any], locale: str) -> dict[str, Any]:
    """How far an unmet requirement is: progress (0-100) and what is missing."""
    actual, required, op = float(row["actual"] or 0), float(row["required"] or 0), row["op"]
    spec = program.value_spec(row.get("value") or row["key"])
    agg = spec.agg if isinstance(spec, AggregateSpec) else "derived"
    if row["met"]:
        return {"progress": 100, "missing": None, "agg": agg}
    if op in (">=", ">") and required > 0:
        missing = required - actual + (1 if op == ">" and float(required).is_integer() else 0)
        if op == ">" and not float(required).is_integer():
            missing = required - actual
        progress = max(0, min(99, math.floor(actual / required * 100)))
        return {"progress": progress, "missing": rules.number(round(missing, 2)), "agg": agg}
    if op == "=":
        return {"progress": 0, "missing": rules.number(required), "agg": agg}
    return {"progress": 0, "missing": None, "agg": agg}


def trend(session: Session, member: Member, program: Program, row: dict[str, Any], as_of: dt.date,
          periods: int = 8) -> dict[str, Any] | None:
    """A requirement's metric over recent periods (weeks for day windows, months for month
    windows) from the member's own rows - one query - with the threshold for the line."""
    value_key = row.get("value") or row["key"]
    spec = program.value_spec(value_key)
    if not isinstance(spec, AggregateSpec) or spec.agg == "latest" and not spec.metric:
        return None
    monthly = spec.window.endswith("m")
    step = 7 if not monthly else None
    start = bounds(f"{periods}m", as_of)[0] if monthly else as_of - dt.timedelta(days=step * periods - 1)
    cond = [MetricRow.member_id == member.id, MetricRow.metric.in_(spec.metric), MetricRow.date >= start,
            MetricRow.date <= as_of]
    if spec.kinds:
        cond.append(MetricRow.kind.in_(spec.kinds))
    rows = session.execute(select(MetricRow.date, MetricRow.value, MetricRow.kind).where(*cond)
                           .order_by(MetricRow.date, MetricRow.id)).all()
    carried = 0.0
    if spec.agg == "latest":  # a gauge: the reading before the chart carries into it
        carried = session.scalar(select(MetricRow.value).where(
            MetricRow.member_id == member.id, MetricRow.metric.in_(spec.metric), MetricRow.date < start)
            .order_by(MetricRow.date.desc(), MetricRow.id.desc()).limit(1)) or 0.0
    buckets: list[list[float]] = [[] for _ in range(periods)]
    for day, value, kind in rows:
        if spec.exclude_kinds and kind in spec.exclude_kinds:
            continue
        if monthly:
            idx = periods - 1 - ((as_of.year - day.year) * 12 + as_of.month - day.month)
        else:
            idx = periods - 1 - (as_of - day).days // step
        if 0 <= idx < periods:
            buckets[idx].append(value)
    agg = spec.agg
    points = []
    for b in buckets:
        if agg in ("count", "months_active"):
            points.append(float(len(b)))
        elif agg == "sum":
            points.append(float(sum(b)))
        elif agg == "avg":
            points.append(sum(b) / len(b) if b else 0.0)
        elif agg == "max":
            points.append(max(b) if b else 0.0)
        else:  # latest: the last reading of the period, else the one before
            points.append(b[-1] if b else (points[-1] if points else carried))
    unit = "month" if monthly else "week"
    threshold = float(row["required"])
    if agg in ("count", "sum") and not monthly and spec.window.endswith("d"):
        threshold = threshold * 7 / int(spec.window[:-1])  # the weekly pace that meets the window
    return {"points": points, "threshold": threshold, "unit": unit, "agg": agg}


def svg_chart(points: list[float], threshold: float, width: int = 320, height: int = 90) -> str:
    """A small bar chart with the threshold as a dashed line (inline SVG, no script)."""
    top = max(points + [threshold, 1.0]) * 1.15
    n = len(points)
    bar = width / max(n, 1)
    parts = [f'<svg viewBox="0 0 {width} {height}" width="100%" height="{height}" role="img" class="trend">']
    for i, v in enumerate(points):
        h = (v / top) * (height - 4)
        parts.append(f'<rect x="{i * bar + 2:.1f}" y="{height - h:.1f}" width="{bar - 4:.1f}" height="{h:.1f}" class="col"/>')
    y = height - (threshold / top) * (height - 4)
    parts.append(f'<line x1="0" x2="{width}" y1="{y:.1f}" y2="{y:.1f}" class="threshold"/>')
    parts.append("</svg>")
    return "".join(parts)


def history(session: Session, member: Member) -> list[LevelChange]:
    return list(session.scalars(select(LevelChange).where(LevelChange.member_id == member.id)
                                .order_by(LevelChange.on.desc(), LevelChange.id.desc()).limit(200)))


def benefit_items(session: Session, member: Member) -> list[BenefitItem]:
    return list(session.scalars(select(BenefitItem).where(BenefitItem.member_id == member.id)
                                .order_by(BenefitItem.due_on.desc(), BenefitItem.id.desc()).limit(500)))


def notifications(session: Session, member: Member, limit: int = 100) -> list[Notification]:
    return list(session.scalars(select(Notification).where(Notification.member_id == member.id)
                                .order_by(Notification.id.desc()).limit(limit)))


def unread_count(session: Session, member_id: int) -> int:
    return session.scalar(select(func.count()).select_from(Notification).where(
        Notification.member_id == member_id, Notification.read_at.is_(None))) or 0


def mark_read(session: Session, member_id: int, notification_id: int | None, now: dt.datetime) -> int:
    """Mark one (or, with None, all) of the member's notifications read. One that is not the
    member's (or does not exist) raises NotFound; one already read is fine."""
    stmt = update(Notification).where(Notification.member_id == member_id, Notification.read_at.is_(None))
    if notification_id is not None:
        stmt = stmt.where(Notification.id == notification_id)
    changed = session.execute(stmt.values(read_at=now)).rowcount or 0
    if notification_id is not None and not changed and session.scalar(
            select(Notification.id).where(Notification.id == notification_id, Notification.member_id == member_id)) is None:
        raise NotFound("no such notification")
    return changed
