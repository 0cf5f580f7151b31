"""What the member pages show, assembled from stored standings, changes, items and
notifications - never an evaluation. Each function issues a fixed number of queries."""

from __future__ import annotations

import datetime as dt
import math
from dataclasses import dataclass, field
from functools import lru_cache
from typing import Any

from sqlalchemy import and_, bindparam, func, literal_column, select, union_all, update
from sqlalchemy.orm import Session

from ..engine import rules
from ..engine.definition import AggregateSpec, Program
from ..engine.windows import bounds
from ..models import BenefitItem, Enrolment, LevelChange, Member, MetricRow, Notification, Standing
from ..models import Program as ProgramRow
from . import NotFound, explain
from . import programs as programs_service


@dataclass
class ProgramCard:
    program: Program
    standing: Standing | None
    requirements: list[dict[str, Any]]
    next_level: str | None
    tasks_left: int
    warning: dict[str, Any] | None = None  # the newest open downgrade warning's payload
    values: dict[str, Any] = field(default_factory=dict)  # what the requirements are explained with
    as_of: dt.date | None = None  # the program's latest evaluation (None: not evaluated yet)

    @property
    def key(self) -> str:
        return self.program.key


# The statements every member page runs, built once: building a statement costs about as
# much Python as running it, and these run on every request.
# The newest downgrade warning of the card's program whose date ("by") has not passed (none:
# open): a column of the card's row, not a statement of its own (a round trip a page, round 17).
_OPEN_WARNING = (select(Notification.payload)
                 .where(Notification.member_id == Enrolment.member_id,
                        Notification.program_key == Enrolment.program_key,
                        Notification.kind == "downgrade_warning",
                        func.coalesce(Notification.payload["by"].as_string(), "9999-12-31") >= bindparam("today"))
                 .order_by(Notification.on.desc(), Notification.id.desc())
                 .limit(1).correlate(Enrolment).scalar_subquery())
_CARD_ROWS = (select(Enrolment.program_key, ProgramRow.current_version, *explain.LATEST, Standing, _OPEN_WARNING)
              .join(ProgramRow, ProgramRow.key == Enrolment.program_key)
              .outerjoin(Standing, and_(Standing.member_id == Enrolment.member_id,
                                        Standing.program_key == Enrolment.program_key))
              .where(Enrolment.member_id == bindparam("member_id"))
              .order_by(Enrolment.program_key))
_CARD_ROW = _CARD_ROWS.where(Enrolment.program_key == bindparam("program_key"))
_UNREAD = select(func.count()).select_from(Notification).where(Notification.member_id == bindparam("member_id"),
                                                               Notification.read_at.is_(None))


def cards(session: Session, member: Member, today: dt.date, key: str | None = None) -> list[ProgramCard]:
    """One card per enrolled program (or only program ``key``): 1 query - each enrolment with
    its program's current version, latest evaluation, standing and open downgrade warning -
    plus the values of each evaluated program (explain.values_of: 1-3 index-range
    statements); the definitions come from the parsed cache."""
    params = {"member_id": member.id, "today": today.isoformat()}
    if key is None:
        rows = session.execute(_CARD_ROWS, params).all()
    else:
        rows = session.execute(_CARD_ROW, {**params, "program_key": key}).all()
    out = []
    for program_key, version, evaluated_as_of, mark, run_id, evaluated_at, st, warning in rows:
        program, _ = programs_service.definition(session, program_key, version)
        latest = explain.Evaluated(evaluated_as_of, mark, run_id, evaluated_at)
        values = explain.values_of(session, program, member.id, st, latest)
        reqs = rules.requirements(program, st.level, values) if st else []
        nxt = rules.next_level(program, st.level if st else None)
        left = sum(1 for r in reqs if r["level"] == nxt and not r["met"])
        out.append(ProgramCard(program, st, reqs, nxt, left, warning,
                               values, explain.as_of(st, latest)))
    return out


def program_card(session: Session, member: Member, key: str, today: dt.date) -> ProgramCard:
    found = cards(session, member, today, key)
    if not found:
        raise NotFound(f"you are not enrolled in program '{key}'")
    return found[0]


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


@dataclass
class _Chart:
    row: dict[str, Any]
    spec: AggregateSpec
    monthly: bool
    start: dt.date


def _chart(program: Program, row: dict[str, Any], as_of: dt.date, periods: int) -> _Chart | None:
    """What a requirement's chart reads, or None when it has no chart (not an aggregate)."""
    spec = program.value_spec(row.get("value") or row["key"])
    if not isinstance(spec, AggregateSpec) or spec.agg == "latest" and not spec.metric:
        return None
    monthly = spec.window.endswith("m")
    start = bounds(f"{periods}m", as_of)[0] if monthly else as_of - dt.timedelta(days=7 * periods - 1)
    return _Chart(row, spec, monthly, start)


def trends(session: Session, member: Member, program: Program, rows: list[dict[str, Any]], as_of: dt.date,
           limit: int = 4, periods: int = 8) -> dict[tuple[str, str], dict[str, Any]]:
    """The charts of the first ``limit`` unmet requirements that have one, keyed (level, key):
    each requirement's metric over recent periods (weeks for day windows, months for month
    windows) from the member's own rows, with the threshold for the line. One query for all
    of them: the rows of the widest chart, and for gauges the reading before their chart
    (which carries into it)."""
    charts: dict[tuple[str, str], _Chart] = {}
    for row in rows:
        if not row["met"] and (chart := _chart(program, row, as_of, periods)) is not None:
            charts[(row["level"], row["key"])] = chart
            if len(charts) >= limit:
                break
    if not charts:
        return {}
    plans = list(charts.values())
    metrics = tuple(sorted({m for c in plans for m in c.spec.metric}))
    gauges = tuple((i, tuple(c.spec.metric)) for i, c in enumerate(plans) if c.spec.agg == "latest")
    params = {"member_id": member.id, "start": min(c.start for c in plans), "as_of": as_of,
              **{f"start_{i}": plans[i].start for i, _ in gauges}}
    fetched = session.execute(_trend_statement(metrics, gauges), params).all()
    carried = {r.part: r.value for r in fetched if r.part >= 0}
    return {k: _points(c, [r for r in fetched if r.part < 0], carried.get(i) or 0.0, as_of, periods)
            for i, (k, c) in enumerate(charts.items())}


@lru_cache(maxsize=256)
def _trend_statement(metrics: tuple[str, ...], gauges: tuple[tuple[int, tuple[str, ...]], ...]):
    """The rows of the charts' metrics from ``start`` to ``as_of`` (part -1), and for each
    gauge chart i its last reading before ``start_i`` (part i), in one statement; built once
    per shape (which metrics, which gauges)."""
    columns = (MetricRow.metric, MetricRow.date, MetricRow.value, MetricRow.kind, MetricRow.id)
    parts = [select(literal_column("-1").label("part"), *columns)
             .where(MetricRow.member_id == bindparam("member_id"), MetricRow.metric.in_(metrics),
                    MetricRow.date >= bindparam("start"), MetricRow.date <= bindparam("as_of"))]
    for i, gauge_metrics in gauges:
        last = (select(literal_column(str(i)).label("part"), *columns)
                .where(MetricRow.member_id == bindparam("member_id"), MetricRow.metric.in_(gauge_metrics),
                       MetricRow.date < bindparam(f"start_{i}"))
                .order_by(MetricRow.date.desc(), MetricRow.id.desc()).limit(1).subquery())
        parts.append(select(last))
    both = union_all(*parts).subquery()
    return select(both).order_by(both.c.part, both.c.date, both.c.id)


def _points(c: _Chart, rows: list[Any], carried: float, as_of: dt.date, periods: int) -> dict[str, Any]:
    spec, monthly = c.spec, c.monthly
    buckets: list[list[float]] = [[] for _ in range(periods)]
    for r in rows:
        if r.metric not in spec.metric or r.date < c.start or spec.kinds and r.kind not in spec.kinds:
            continue
        if spec.exclude_kinds and r.kind in spec.exclude_kinds:
            continue
        if monthly:
            idx = periods - 1 - ((as_of.year - r.date.year) * 12 + as_of.month - r.date.month)
        else:
            idx = periods - 1 - (as_of - r.date).days // 7
        if 0 <= idx < periods:
            buckets[idx].append(r.value)
    agg = spec.agg
    points: list[float] = []
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
    threshold = float(c.row["required"])
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
    return session.scalar(_UNREAD, {"member_id": member_id}) or 0


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
