"""What the staff console shows, as queries over stored rows: the dashboard (level
distribution, evaluation runs, the ledger, job runs, churn warnings), one member's file, the
review queue with deadlines, program overviews and the audit log. Functions take a Session
and never write; no Flask here."""

from __future__ import annotations

import datetime as dt
from collections import defaultdict
from collections.abc import Iterator
from dataclasses import dataclass, field
from typing import Any

from sqlalchemy import Select, func, select
from sqlalchemy.orm import Session

from ..engine import rules
from ..engine.definition import Program, Requirement, text_of
from ..engine.lint import Finding, lint
from ..models import (
    AuditEntry,
    BenefitItem,
    EvaluationRun,
    JobRun,
    LevelChange,
    Member,
    Notification,
    ProgramVersion,
    Standing,
)
from ..models import Program as ProgramRow
from . import ServiceError, explain
from . import programs as programs_service
from .staff import SearchFilter, search
from .standings import enrolled_programs, member_by_key

NOT_RATED = "-"  # the level filter and distribution key of members with no level yet

# -- dashboard --------------------------------------------------------------------------------


@dataclass
class LevelCount:
    level: str | None
    count: int
    share: float  # 0..100 of the program's evaluated members


@dataclass
class Distribution:
    program: Program
    version: int
    total: int
    blacklisted: int
    levels: list[LevelCount]  # highest first, then "not yet rated"


def level_distribution(session: Session) -> list[Distribution]:
    """Members per level of each program (one query over standings)."""
    counts: dict[str, dict[str | None, int]] = defaultdict(dict)
    blacklisted: dict[str, int] = defaultdict(int)
    for key, level, status, n in session.execute(
        select(Standing.program_key, Standing.level, Standing.status, func.count())
        .group_by(Standing.program_key, Standing.level, Standing.status)
    ):
        counts[key][level] = counts[key].get(level, 0) + n
        if status == "blacklisted":
            blacklisted[key] += n
    out = []
    for key, (program, version) in programs_service.all_current(session).items():
        by_level = counts.get(key, {})
        total = sum(by_level.values())
        keys: list[str | None] = list(reversed(program.level_keys)) + [None]
        keys += [k for k in by_level if k not in keys]  # a level a newer version dropped
        levels = [LevelCount(k, by_level.get(k, 0), round(100 * by_level.get(k, 0) / total, 1) if total else 0.0)
                  for k in keys]
        out.append(Distribution(program, version, total, blacklisted.get(key, 0), levels))
    return out


@dataclass
class RunRow:
    id: int
    program_key: str
    program_version: int
    as_of: dt.date
    started_at: dt.datetime
    status: str
    evaluated: int
    upgraded: int
    downgraded: int
    blacklisted: int
    duration_ms: int | None


def evaluation_runs(session: Session, per_program: int = 24) -> dict[str, list[RunRow]]:
    """The latest runs of each program, oldest first (for a chart over time)."""
    out: dict[str, list[RunRow]] = {}
    for key in programs_service.keys(session):
        runs = session.scalars(select(EvaluationRun).where(EvaluationRun.program_key == key)
                               .order_by(EvaluationRun.id.desc()).limit(per_program)).all()
        out[key] = [RunRow(r.id, r.program_key, r.program_version, r.as_of, r.started_at, r.status, r.evaluated or 0,
                           r.upgraded or 0, r.downgraded or 0, r.blacklisted or 0, r.duration_ms)
                    for r in reversed(runs)]
    return out


def runs_chart(runs: list[RunRow], width: int = 480, height: int = 110) -> str:
    """Upgrades (up) and downgrades (down) per run as an inline SVG, no script."""
    if not runs:
        return ""
    top = max([max(r.upgraded, r.downgraded) for r in runs] + [1])
    mid = height / 2
    slot = width / len(runs)
    bar = max(2.0, min(24.0, slot - 4))
    parts = [f'<svg viewBox="0 0 {width} {height}" width="100%" height="{height}" role="img" class="runs" preserveAspectRatio="xMinYMid meet" '
             f'aria-label="upgrades and downgrades per evaluation run">']
    for i, r in enumerate(runs):
        x = i * slot + (slot - bar) / 2
        up = r.upgraded / top * (mid - 4)
        down = r.downgraded / top * (mid - 4)
        title = f"{r.as_of.isoformat()}: +{r.upgraded} / -{r.downgraded}"
        parts.append(f'<g><title>{title}</title>'
                     f'<rect class="up" x="{x:.1f}" y="{mid - up:.1f}" width="{bar:.1f}" height="{up:.1f}"/>'
                     f'<rect class="down" x="{x:.1f}" y="{mid:.1f}" width="{bar:.1f}" height="{down:.1f}"/></g>')
    parts.append(f'<line class="axis" x1="0" x2="{width}" y1="{mid}" y2="{mid}"/></svg>')
    return "".join(parts)


def benefit_counts(session: Session) -> dict[str, dict[str, int]]:
    """Ledger items by program and state (issued, claimed, pending review, ...)."""
    out: dict[str, dict[str, int]] = defaultdict(dict)
    for key, state, n in session.execute(select(BenefitItem.program_key, BenefitItem.state, func.count())
                                         .group_by(BenefitItem.program_key, BenefitItem.state)):
        out[key][state] = n
    return dict(out)


@dataclass
class JobRow:
    job: str
    as_of: dt.date
    status: str
    started_at: dt.datetime
    finished_at: dt.datetime | None
    seconds: float | None
    attempts: int
    error: str | None


def job_runs(session: Session, limit: int = 30) -> list[JobRow]:
    out = []
    for r in session.scalars(select(JobRun).order_by(JobRun.started_at.desc(), JobRun.id.desc()).limit(limit)):
        seconds = None
        if r.finished_at is not None and r.started_at is not None:
            seconds = round((_aware(r.finished_at) - _aware(r.started_at)).total_seconds(), 2)
        out.append(JobRow(r.job, r.as_of, r.status, r.started_at, r.finished_at, seconds, r.attempts, r.error))
    return out


def _aware(t: dt.datetime) -> dt.datetime:
    return t if t.tzinfo is not None else t.replace(tzinfo=dt.UTC)  # SQLite returns naive UTC


@dataclass
class ChurnRow:
    member_key: str
    name: str
    program_key: str
    as_of: dt.date
    prev_as_of: dt.date | None
    score: float | None
    prev_score: float | None
    level: str | None
    prev_level: str | None
    score_drop: float | None
    tier_fell: bool
    dropped: list[tuple[str, float, float]]  # (value, before, now) of every value that fell


def churn_warnings(session: Session, program_key: str = "scorecard", min_drop: float = 10) -> list[ChurnRow]:
    """Members whose score fell by ``min_drop`` or more at the latest evaluation, or whose tier
    fell, with the values that dropped; the biggest drop first. (A standing is written when it
    changes: one the latest evaluation did not write has not fallen since.)"""
    program, _ = programs_service.definition(session, program_key)
    latest = explain.evaluated(session, program_key).as_of
    rows = session.execute(
        select(Standing, Member.key, Member.name).join(Member, Member.id == Standing.member_id)
        .where(Standing.program_key == program_key, Standing.prev_as_of.is_not(None))
        .where(Standing.as_of == latest if latest is not None else True)
        .where(((Standing.prev_score - Standing.score) >= min_drop)
               | (Standing.prev_level.is_not(None) & ((Standing.level.is_(None)) | (Standing.level != Standing.prev_level))))
    ).all()
    out = []
    for st, key, name in rows:
        tier_fell = st.prev_level is not None and program.rank(st.prev_level) > program.rank(st.level)
        drop = None
        if st.prev_score is not None and st.score is not None:
            drop = round(st.prev_score - st.score, 2)
        if not tier_fell and (drop is None or drop < min_drop):
            continue
        out.append(ChurnRow(key, name, program_key, st.as_of, st.prev_as_of, st.score, st.prev_score, st.level,
                            st.prev_level, drop, tier_fell, dropped_values(st.prev_values, st.values)))
    out.sort(key=lambda r: (-(r.score_drop or 0), r.member_key))
    return out


def dropped_values(before: dict[str, Any] | None, now: dict[str, Any] | None) -> list[tuple[str, float, float]]:
    out = []
    for key, old in (before or {}).items():
        new = (now or {}).get(key)
        if isinstance(old, int | float) and isinstance(new, int | float) and new < old:
            out.append((key, old, new))
    return out


# -- one member -------------------------------------------------------------------------------


@dataclass
class StandingView:
    program: Program
    standing: Standing | None
    levels: list[tuple[str, list[dict[str, Any]]]]  # every level's requirement rows, lowest first
    reward_rows: list[dict[str, Any]]
    as_of: dt.date | None = None  # the program's latest evaluation


@dataclass
class MemberFile:
    member: Member
    programs: list[str]
    standings: list[StandingView]
    changes: list[LevelChange]
    items: list[BenefitItem]
    notifications: list[Notification]
    audit: list[AuditEntry]


def member_file(session: Session, member_key: str, limit: int = 200) -> MemberFile:
    """Everything the console shows about one member (raises NotFound)."""
    member = member_by_key(session, member_key)
    keys = enrolled_programs(session, member)
    stored = {s.program_key: s for s in session.scalars(select(Standing).where(Standing.member_id == member.id))}
    views = []
    for key in keys:
        program, _ = programs_service.definition(session, key)
        st, latest = stored.get(key), explain.evaluated(session, key)
        env = explain.values_of(session, program, member.id, st, latest)
        # Not evaluated yet: no values to measure the levels against.
        levels = [(lv.key, rules.level_rows(program, lv.key, env)) for lv in program.levels] if st is not None else []
        level = program.level(st.level) if st is not None else None
        reward = rules.rows(program, level.key, level.reward_tasks, env) if level is not None else []
        views.append(StandingView(program, st, levels, reward, explain.as_of(st, latest)))
    changes = session.scalars(select(LevelChange).where(LevelChange.member_id == member.id)
                              .order_by(LevelChange.on.desc(), LevelChange.id.desc()).limit(limit)).all()
    items = session.scalars(select(BenefitItem).where(BenefitItem.member_id == member.id)
                            .order_by(BenefitItem.due_on.desc(), BenefitItem.id.desc()).limit(limit * 2)).all()
    notes = session.scalars(select(Notification).where(Notification.member_id == member.id)
                            .order_by(Notification.id.desc()).limit(limit)).all()
    audit = session.scalars(select(AuditEntry).where(AuditEntry.member_id == member.id)
                            .order_by(AuditEntry.id.desc()).limit(limit)).all()
    return MemberFile(member, keys, views, list(changes), list(items), list(notes), list(audit))


_CURRENT_VERSIONS = select(ProgramRow.key, ProgramRow.current_version).order_by(ProgramRow.key)


def current_programs(session: Session) -> dict[str, tuple[Program, int]]:
    """Every program's current definition, by key (what programs.all_current gives) in one
    query: the parsed definitions come from the cache."""
    return {key: programs_service.definition(session, key, version)
            for key, version in session.execute(_CURRENT_VERSIONS).all()}


def search_rows(session: Session, f: SearchFilter, batch: int = 1000) -> Iterator[Any]:
    """Every member matching the filter, in id order, fetched in keyset batches (for exports)."""
    after = None
    while True:
        rows = search(session, f, after=after, limit=batch)
        yield from rows
        if len(rows) < batch:
            return
        after = rows[-1].id


# -- the review queue -------------------------------------------------------------------------


@dataclass
class ReviewRow:
    item: BenefitItem
    member_key: str
    member_name: str
    sub_class: str | None
    review_hours: int | None
    deadline: dt.datetime | None  # naive, in the same clock as ``now``
    overdue: bool


def review_queue(session: Session, now: dt.datetime, limit: int = 500) -> list[ReviewRow]:
    """Items waiting for staff (pending_review), the oldest submission first. A program whose
    levels give ``review_hours`` (music) gets a deadline: the hours for the member's sub-class
    (the level's default sub-class otherwise), counted from the submission day's start."""
    rows = session.execute(
        select(BenefitItem, Member.key, Member.name, Standing.level, Standing.sub_class)
        .join(Member, Member.id == BenefitItem.member_id)
        .outerjoin(Standing, (Standing.member_id == BenefitItem.member_id)
                   & (Standing.program_key == BenefitItem.program_key))
        .where(BenefitItem.state == "pending_review")
        .order_by(BenefitItem.claimed_on.asc(), BenefitItem.id.asc())
        .limit(limit)
    ).all()
    out = []
    for item, key, name, level_now, sub_now in rows:
        program, _ = programs_service.definition(session, item.program_key)
        level = program.level(item.level) or program.level(level_now)
        hours = deadline = None
        sub = None
        if level is not None and level.review_hours:
            sub = sub_now if level_now == level.key and sub_now else level.default_sub_class
            hours = level.review_hours.get(sub or "")
            if hours is None and len(set(level.review_hours.values())) == 1:
                hours = next(iter(level.review_hours.values()))
        if hours is not None:
            start = item.claimed_on or item.due_on
            deadline = dt.datetime.combine(start, dt.time.min) + dt.timedelta(hours=hours)
        out.append(ReviewRow(item, key, name, sub, hours, deadline, deadline is not None and now > deadline))
    return out


# -- programs ---------------------------------------------------------------------------------


@dataclass
class RequirementRow:
    level: str
    kind: str  # requires | reward_tasks | band
    key: str
    value: str
    op: str
    required: float | None
    window: str | None
    group: str | None = None  # "any" / "all" group it belongs to
    when: str | None = None


@dataclass
class ProgramOverview:
    program: Program
    version: int
    versions: list[ProgramVersion]
    findings: list[Finding]
    requirements: list[RequirementRow]
    benefits: list[tuple[str, list[Any]]]  # (level, benefit specs incl. inherited)
    members: dict[str | None, int] = field(default_factory=dict)


def program_overview(session: Session, key: str) -> ProgramOverview:
    program, version = programs_service.definition(session, key)
    versions = session.scalars(select(ProgramVersion).where(ProgramVersion.program_key == key)
                               .order_by(ProgramVersion.version.desc())).all()
    reqs: list[RequirementRow] = []
    for lv in program.levels:
        if lv.band is not None:
            band = lv.band
            if band.min is not None:
                reqs.append(RequirementRow(lv.key, "band", program.band_of or "", program.band_of or "", band.min_op,
                                           band.min, rules.window_of(program, program.band_of or "")))
            if band.max is not None:
                reqs.append(RequirementRow(lv.key, "band", program.band_of or "", program.band_of or "", band.max_op,
                                           band.max, rules.window_of(program, program.band_of or "")))
        for kind, items in (("requires", lv.requires), ("reward_tasks", lv.reward_tasks)):
            reqs += _requirement_rows(program, lv.key, kind, items, None)
    members = dict(session.execute(select(Standing.level, func.count()).where(Standing.program_key == key)
                                   .group_by(Standing.level)).all())
    return ProgramOverview(program, version, list(versions), lint(program), reqs,
                           [(lv.key, program.benefits_of(lv.key)) for lv in program.levels], members)


def _requirement_rows(program: Program, level: str, kind: str, reqs: list[Requirement],
                      group: str | None) -> list[RequirementRow]:
    out = []
    for r in reqs:
        if r.children:
            mode = "any" if r.any is not None else "all"
            out += _requirement_rows(program, level, kind, r.children, f"{r.key} ({mode})")
            continue
        when = f"{r.when.value} {r.when.op} {rules.number(r.when.required)}" if r.when else None
        out.append(RequirementRow(level, kind, r.key, r.value_key, r.op or "", r.required,
                                  rules.window_of(program, r.value_key), group, when))
    return out


def version_source(session: Session, key: str, version: int) -> ProgramVersion:
    pv = session.scalar(select(ProgramVersion).where(ProgramVersion.program_key == key,
                                                     ProgramVersion.version == version))
    if pv is None:
        raise ServiceError(f"program '{key}' has no version {version}", status=404)
    return pv


def program_name(program: Program, locale: str = "en") -> str:
    return text_of(program.name, locale)


# -- the audit log ----------------------------------------------------------------------------


@dataclass
class AuditFilter:
    actor: str | None = None
    member: str | None = None  # member key
    action: str | None = None  # exact, or a prefix ending with '.' ("benefit.")
    since: dt.date | None = None
    until: dt.date | None = None  # inclusive


def audit_query(f: AuditFilter) -> Select:
    """Audit entries matching the filter, newest first (keyset pagination: ``before`` an id)."""
    stmt = (select(AuditEntry, Member.key).outerjoin(Member, Member.id == AuditEntry.member_id)
            .order_by(AuditEntry.id.desc()))
    if f.actor:
        stmt = stmt.where(AuditEntry.actor == f.actor.strip())
    if f.member:
        stmt = stmt.where(Member.key == f.member.strip())
    if f.action:
        action = f.action.strip()
        stmt = stmt.where(AuditEntry.action.startswith(action, autoescape=True) if action.endswith(".")
                          else AuditEntry.action == action)
    if f.since:
        stmt = stmt.where(AuditEntry.at >= dt.datetime.combine(f.since, dt.time.min, dt.UTC))
    if f.until:
        stmt = stmt.where(AuditEntry.at < dt.datetime.combine(f.until + dt.timedelta(days=1), dt.time.min, dt.UTC))
    return stmt


def audit_page(session: Session, f: AuditFilter, before: int | None = None, limit: int = 100) -> list[Any]:
    stmt = audit_query(f)
    if before is not None:
        stmt = stmt.where(AuditEntry.id < before)
    return list(session.execute(stmt.limit(limit)).all())


def audit_rows(session: Session, f: AuditFilter, batch: int = 1000) -> Iterator[Any]:
    before = None
    while True:
        rows = audit_page(session, f, before, batch)
        yield from rows
        if len(rows) < batch:
            return
        before = rows[-1][0].id


def audit_actions(session: Session) -> list[str]:
    return list(session.scalars(select(AuditEntry.action).distinct().order_by(AuditEntry.action)))
