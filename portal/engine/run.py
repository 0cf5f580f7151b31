"""One evaluation run of a program as of a date: aggregate -> decide -> write.

Reads go through their own connection in one snapshot (REPEATABLE READ on PostgreSQL, a read
transaction on SQLite), streaming every aggregate query in member order; writes go through
the caller's session in batches (the caller owns the transaction; ``on_batch`` lets it commit
between batches). So the run reads committed data. A re-run of the same as-of date is
idempotent: it compares with the stored standings and rewrites only what differs.
"""

from __future__ import annotations

import collections
import datetime as dt
import time
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

from sqlalchemy import (
    Column,
    Connection,
    Integer,
    MetaData,
    Select,
    Table,
    and_,
    bindparam,
    case,
    delete,
    func,
    insert,
    or_,
    select,
    text,
    union,
    update,
)
from sqlalchemy.orm import Session
from sqlalchemy.sql.elements import ColumnElement

from ..db import copy_insert, dialect_insert, is_sqlite
from ..models import (
    OPEN_STATES,
    AuditEntry,
    BenefitItem,
    Enrolment,
    EvaluationRun,
    LevelChange,
    Member,
    MetricEdits,
    MetricRow,
    Notification,
    Standing,
)
from ..models import Program as ProgramRow
from . import aggregates, ledger, notices, quiet
from .definition import Program
from .rules import all_met, downgrade_reasons, number, rows
from .scores import Calculator, KnownRank, RankCuts, RankTable, population_ranked
from .transitions import Held, blacklist_hits, decide, eligible, sub_class
from .windows import previous_period_end

ST = Standing.__table__
LC = LevelChange.__table__
BI = BenefitItem.__table__
NT = Notification.__table__
EN = Enrolment.__table__
MR = MetricRow.__table__
ME = MetricEdits.__table__
ER = EvaluationRun.__table__
PR = ProgramRow.__table__
BATCH = 50_000  # members per write batch: bounded memory, few statements (issue 7: 100k <= 1.1x 10k)
# Staff actions are audited; those from shortly before the previous run started are taken in
# too, in case their transaction committed after that run's snapshot.
AUDIT_MARGIN = dt.timedelta(minutes=5)
# A run that inserts this many rows into a table (a program's first ratings, a large
# enrolment) refreshes that table's planner statistics: until autovacuum comes by, PostgreSQL
# plans with the old row counts (an empty table's) and picked a scan of every issued perk for
# each member's ledger update (docs/performance.md, E9). Only when the rows are also this share
# of what the planner knows of the table, autovacuum's own analyze threshold: a daily run's 3%
# more items stays under it, and analysing four large tables cost that run about 1 s (round 14).
ANALYZE_AFTER = 10_000
ANALYZE_SHARE = 0.1
RUN_WORK_MEM = "256MB"  # PostgreSQL's work_mem for a run's read transaction
WRITTEN_TABLES = ("standings", "benefit_items", "level_changes", "notifications")
# Copied to prev_* when a standing moves to a later as-of date.
PREV_COLUMNS = ("level", "sub_class", "status", "level_since", "promoted_on", "as_of", "score", "values")


class HistoryError(ValueError):
    """An evaluation that would go back before dates already evaluated."""


@dataclass
class Summary:
    program: str
    as_of: dt.date
    version: int
    dry_run: bool = False
    evaluated: int = 0
    upgraded: int = 0
    downgraded: int = 0
    unchanged: int = 0
    blacklisted: int = 0
    benefits_issued: int = 0  # new ledger items (a dry run: items that would be due)
    run_id: int | None = None
    started_at: dt.datetime | None = None  # the run's clock: items and changes it wrote carry it
    duration_ms: int = 0
    changes: list[dict[str, Any]] = field(default_factory=list)  # the first CHANGE_LIST ones
    # An incremental re-run: how many members were looked at again (the others' standings are
    # those of the earlier run that day and count as evaluated and unchanged). None: a full run.
    reexamined: int | None = None
    # Members decided in Python; the others SQL showed would be left as they are (engine/quiet.py).
    decided: int = 0

    CHANGE_LIST = 1000

    def line(self) -> str:
        again = f" (a re-run: {self.reexamined} members with new data re-examined)" if self.reexamined is not None else ""
        return (
            f"{self.program} as of {self.as_of}: evaluated {self.evaluated}, upgraded {self.upgraded}, "
            f"downgraded {self.downgraded}, unchanged {self.unchanged}, blacklisted {self.blacklisted}, "
            f"benefits issued {self.benefits_issued}{again}"
        )


@dataclass
class Outcome:
    """The result for one member."""

    level: str | None
    sub_class: str | None
    category: str | None
    score: float | None
    status: str
    reward_met: bool | None
    level_since: dt.date | None
    promoted_on: dt.date | None
    values: dict[str, Any]
    direction: str
    reasons: list[dict[str, Any]]
    blacklist_reasons: list[dict[str, Any]]
    held_back_by: str | None
    candidate: str | None = None
    env: dict[str, float] = field(default_factory=dict, repr=False)


def decide_member(program: Program, held: Held, envs: list[dict[str, float]], as_of: dt.date) -> Outcome:
    """Everything the engine decides for one member, from its values (pure function)."""
    env = envs[0]
    candidate = eligible(program, env)
    earlier = [eligible(program, e) for e in envs[1:]]
    decision = decide(program, held, candidate, earlier, as_of)
    level = program.level(decision.level)
    band_value = env.get(program.band_of, 0.0) if program.band_of else 0.0
    sub = sub_class(level, band_value, held) if held.status != "blacklisted" else held.sub_class
    reasons = downgrade_reasons(program, held.level, decision.level, env) if decision.direction == "down" else []
    status = held.status
    hits: list[dict[str, Any]] = []
    if status != "blacklisted" and not held.blacklist_exempt:
        found = blacklist_hits(program, env)
        if found:
            status = "blacklisted"
            hits = rows(program, None, found, env)
    reward_met = None
    if level is not None and level.reward_tasks:
        reward_met = all_met(level.reward_tasks, env)
    return Outcome(
        level=decision.level,
        sub_class=sub,
        category=level.category if level else None,
        score=env[program.score] if program.score else None,
        status=status,
        reward_met=reward_met,
        level_since=decision.level_since,
        promoted_on=decision.promoted_on,
        values={k: number(v) for k, v in env.items()},
        direction=decision.direction,
        reasons=reasons,
        blacklist_reasons=hits,
        held_back_by=decision.held_back_by,
        candidate=candidate,
        env=env,
    )


def _periods(program: Program, as_of: dt.date) -> list[dt.date]:
    n = program.transitions.consecutive_periods
    return [previous_period_end(as_of, program.transitions.period, k) for k in range(n)]


def _driver(conn: Connection, program_key: str, members: Select | None = None,
            scratch: aggregates.Scratch | None = None, look=None, extra: Sequence[ColumnElement] = (),
            shared: quiet.Shared | None = None):
    """Every enrolled member (or ``members``) in member order with its stored standing; with
    ``scratch``, its aggregates too (after the standing, in ``scratch.columns`` order, then
    ``extra``: columns of the scratch's tables);
    with ``look``, only the members that condition selects (``shared``: the values it computes
    once per member)."""
    stmt = (
        select(
            EN.c.member_id,
            Member.__table__.c.key,
            ST.c.level,
            ST.c.sub_class,
            ST.c.status,
            ST.c.level_since,
            ST.c.promoted_on,
            ST.c.as_of,
            ST.c.prev_level,
            ST.c.prev_sub_class,
            ST.c.prev_status,
            ST.c.prev_level_since,
            ST.c.prev_promoted_on,
            ST.c.prev_as_of,
            ST.c.reward_met,
            ST.c.category,
            ST.c.score,
            ST.c["values"],
            ST.c.program_version,
            ST.c.locked_level,
            ST.c.lock_until,
            ST.c.blacklist_exempt_until,
        )
        .join(Member.__table__, Member.__table__.c.id == EN.c.member_id)
        .outerjoin(ST, and_(ST.c.member_id == EN.c.member_id, ST.c.program_key == EN.c.program_key))
        .where(EN.c.program_key == program_key)
        .where(EN.c.member_id.in_(members) if members is not None else True)
        .order_by(EN.c.member_id)
    )
    if scratch is not None:
        stmt = scratch.join(stmt.add_columns(*scratch.columns, *extra), EN.c.member_id)
    if look is not None:
        stmt = stmt.where(look)
        if shared is not None:
            stmt = shared.join(stmt)
    return conn.execute(stmt, execution_options=aggregates.STREAM)


DRIVER_COLUMNS = 22  # the standing's columns in _driver's rows, before the scratch columns

STORED_COLUMNS = quiet.Stored(
    member_id=ST.c.member_id, level=ST.c.level, sub_class=ST.c.sub_class, status=ST.c.status, score=ST.c.score,
    reward_met=ST.c.reward_met, as_of=ST.c.as_of, level_since=ST.c.level_since, promoted_on=ST.c.promoted_on,
    program_version=ST.c.program_version, locked_level=ST.c.locked_level,
    blacklist_exempt_until=ST.c.blacklist_exempt_until, values=ST.c["values"])


def _latest_date(session: Session, program_key: str) -> dt.date | None:
    """The latest date this program was evaluated as of: every run that wrote standings is
    recorded (done, or one that died after committing batches) - one index lookup."""
    return session.scalar(select(func.max(ER.c.as_of)).where(ER.c.program_key == program_key))


def _prior_run_date(session: Session, program_key: str, as_of: dt.date) -> dt.date | None:
    """The as-of date of the program's last finished run before ``as_of``."""
    return session.scalar(select(func.max(ER.c.as_of)).where(
        ER.c.program_key == program_key, ER.c.status == "done", ER.c.as_of < as_of))


def _last_evaluated(row, rerun: bool, prior: dt.date | None) -> dt.date | None:
    """When the member was last evaluated before this as-of date (None: never). A standing is
    written only when it changes, so its date may be older than the program's previous run,
    which looked at the member too."""
    before = row.prev_as_of if rerun else row.as_of
    if before is None:
        return None
    return max(before, prior) if prior is not None else before


def _read_connection(session: Session) -> Connection:
    engine = session.get_bind()
    if engine.dialect.name == "sqlite":
        conn = engine.connect().execution_options(sqlite_begin="DEFERRED")
    else:
        conn = engine.connect().execution_options(isolation_level="REPEATABLE READ")
    conn.begin()
    if engine.dialect.name == "postgresql":
        # The run's aggregates group a few hundred thousand members: with the stock 4MB they
        # sort on disk (docs/performance.md, E4). For this transaction only.
        conn.exec_driver_sql(f"SET LOCAL work_mem = '{RUN_WORK_MEM}'")
    return conn


def _held(row, as_of: dt.date) -> Held:
    """The state to decide from: the stored standing, or - when this as-of date was already
    evaluated - the standing from before it, so a re-run repeats the first run's decision."""
    locked = row.locked_level is not None and (row.lock_until is None or as_of <= row.lock_until)
    exempt = row.blacklist_exempt_until is not None and as_of <= row.blacklist_exempt_until
    if locked:
        return Held(row.locked_level, row.sub_class, row.status or "active", row.level_since, row.promoted_on,
                    locked=True, blacklist_exempt=exempt)
    if row.as_of is not None and row.as_of == as_of:
        return Held(row.prev_level, row.prev_sub_class, row.prev_status or "active", row.prev_level_since,
                    row.prev_promoted_on, blacklist_exempt=exempt)
    return Held(row.level, row.sub_class, row.status or "active", row.level_since, row.promoted_on,
                blacklist_exempt=exempt)


def _edits(conn: Connection) -> int:
    return conn.scalar(select(func.coalesce(func.max(ME.c.edits), 0)))


@dataclass(frozen=True)
class Mark:
    """What a run knew of the data when it began: every metric row up to ``id`` was committed,
    the metric_edits counter stood at ``edits``, and the database's clock read ``at``."""

    id: int
    edits: int
    at: dt.datetime


def _read_mark(conn: Connection, at: dt.datetime) -> Mark:
    return Mark(conn.scalar(select(func.coalesce(func.max(MR.c.id), 0))), _edits(conn), at)


def metric_mark(session: Session) -> Mark | None:
    """The mark for a run starting now; None when it cannot be known (on PostgreSQL, another
    transaction is writing metric rows or enrolments right now: ids and times are taken before
    commit, so a lower id or an earlier time could still appear). The next same-day run
    re-examines only members with rows above the mark or enrolments stored after it - unless
    rows were edited or deleted since (the counter moved): then it runs in full. Every read is an
    index lookup, whatever the number of rows."""
    engine = session.get_bind()
    if engine.dialect.name == "sqlite":
        # The caller's session holds the write lock (it began IMMEDIATE), so nothing is being
        # written now: every later row gets a larger id and a later time.
        with engine.connect().execution_options(sqlite_begin="DEFERRED") as conn:
            at = conn.scalar(text("SELECT strftime('%Y-%m-%d %H:%M:%f', 'now')"))
            return _read_mark(conn, dt.datetime.fromisoformat(at))
    with engine.connect().execution_options(isolation_level="REPEATABLE READ") as conn:
        mark = _read_mark(conn, conn.scalar(select(func.clock_timestamp())))
        # Checked after reading the mark: a writer holds this lock from before it takes an id or
        # a time until it commits, so none running now means none is still to come below it.
        busy = conn.scalar(text(
            "SELECT count(*) FROM pg_locks WHERE relation IN (CAST(:t AS regclass), CAST(:e AS regclass)) "
            "AND mode = 'RowExclusiveLock' AND pid <> pg_backend_pid()"), {"t": MR.name, "e": EN.name})
        conn.rollback()
    return None if busy else mark


def _previous_run(session: Session, program_key: str, as_of: dt.date, version: int):
    """The last finished run of this program, version and date with a metric mark, if no
    metric row has been edited or deleted since (a correction: then None, and the run is full)."""
    previous = session.execute(
        select(ER.c.id, ER.c.started_at, ER.c.metric_mark, ER.c.metric_edits, ER.c.marked_at)
        .where(ER.c.program_key == program_key, ER.c.as_of == as_of, ER.c.status == "done",
               ER.c.program_version == version, ER.c.metric_mark.is_not(None), ER.c.metric_edits.is_not(None),
               ER.c.marked_at.is_not(None))
        .order_by(ER.c.id.desc()).limit(1)
    ).first()
    if previous is None or _edits(session.connection()) != previous.metric_edits:
        return None
    return previous


def changed_members(program_key: str, previous) -> Select:
    """Who a same-day re-run must look at again: members with metric rows newer than the earlier
    run's mark, enrolments stored since that mark (a finished run left every member enrolled
    before it with a standing at this date, so these are the only ones without), and members a
    staff action touched since that run began. Each branch is an index range."""
    # A millisecond earlier: SQLite stores times to the millisecond, and one stored in the
    # mark's millisecond may have come after it.
    enrolled_since = previous.marked_at - dt.timedelta(milliseconds=1)
    return union(
        select(MR.c.member_id).where(MR.c.id > previous.metric_mark),
        select(EN.c.member_id).where(EN.c.program_key == program_key, EN.c.added_at >= enrolled_since),
        select(AuditEntry.__table__.c.member_id)
        .where(AuditEntry.__table__.c.at >= previous.started_at - AUDIT_MARGIN,
               AuditEntry.__table__.c.member_id.is_not(None)),
    )


# The members of an incremental re-run, computed once on the read connection (every scan of the
# run joins it; as a subquery each scan would compute it again). Dropped with the rollback.
_CHANGED = Table("changed_members", MetaData(), Column("member_id", Integer, primary_key=True),
                 prefixes=["TEMPORARY"])


def _collect_changed(conn: Connection, query: Select) -> Select:
    _CHANGED.create(conn)
    conn.execute(insert(_CHANGED).from_select(["member_id"], query))
    if conn.dialect.name == "postgresql":
        # Its size, for the planner: a few thousand members are looked up by the member index,
        # not found by a scan of every metric row.
        conn.execute(text(f"ANALYZE {_CHANGED.name}"))  # nosec B608 - a constant name
    return select(_CHANGED.c.member_id)


def _rank_tables(conn: Connection, program_key: str, scratch: aggregates.Scratch, calc: Calculator,
                 periods: list[dt.date]) -> dict[dt.date, dict[str, RankTable]]:
    """First pass for programs with rank buckets: every enrolled member's ranked values in
    each period (the scratch's first targets), read from the run's aggregates - only the
    columns and values the ranked values need."""
    keys = calc.source_aggregates
    n = len(keys)
    columns = [scratch.raw(t, k) for t in range(len(periods)) for k in keys]
    collected: list[list[list[float]]] = [[[] for _ in calc.rank_sources] for _ in periods]
    population = 0
    stmt = select(EN.c.member_id, *columns).where(EN.c.program_key == program_key)
    for row in conn.execute(scratch.join(stmt, EN.c.member_id), execution_options=aggregates.STREAM):
        population += 1
        values = [float(v) for v in row[1:]]
        for t, lists in enumerate(collected):
            for out, value in zip(lists, calc.source_values(values[t * n:(t + 1) * n]), strict=True):
                out.append(value)
    return {p: {k: RankTable(out, population) for k, out in zip(calc.rank_sources, lists, strict=True)}
            for p, lists in zip(periods, collected, strict=True)}


def _sql_ranks(scratch: aggregates.Scratch, calc: Calculator,
               periods: list[dt.date]) -> list[tuple[ColumnElement, ColumnElement]] | None:
    """The (rank, population) columns the sift ranked in SQL for every period and ranked value
    (in period, then ``calc.rank_sources`` order), or None if any is missing. SQL's RANK() is
    over the same values Python computes (quiet.py declines a value it cannot match exactly,
    e.g. a round() near a tie), so a decided member's rank need not be found in a table of
    everyone's values: that pass was 1.2 s of the scorecard's daily run at 1M
    (docs/performance.md, rounds 5 and 16)."""
    out = []
    for t in range(len(periods)):
        for key in calc.rank_sources:
            columns = scratch.ranked(t, key)
            if columns is None:
                return None
            out.append(columns)
    return out


def _known_ranks(row: Sequence[Any], calc: Calculator, periods: list[dt.date],
                 cuts: RankCuts) -> dict[dt.date, dict[str, KnownRank]]:
    """One member's ranks per period from its driver row's rank columns (``_sql_ranks`` order)."""
    keys, out, i = calc.rank_sources, {}, 0
    for p in periods:
        by_key = out[p] = {}
        for key in keys:
            by_key[key] = KnownRank(row[i], row[i + 1], cuts)
            i += 2
    return out


def evaluate(
    session: Session,
    program: Program,
    version: int,
    as_of: dt.date,
    *,
    dry_run: bool = False,
    on_batch: Callable[[], None] | None = None,
    now: dt.datetime | None = None,
    batch_size: int = BATCH,
    full: bool = False,
    skip_quiet: bool = True,
) -> Summary:
    """Evaluate every enrolled member of ``program`` as of ``as_of``.

    A re-run of a date already evaluated (same program version) is incremental unless ``full``:
    only ``changed_members`` are read and decided again; everyone else keeps the earlier run's
    result. Programs with population ranks always run in full (one member's data moves every
    rank).

    ``skip_quiet``: decide in Python only the members whose outcome SQL shows may change
    (engine/quiet.py); the others are left exactly as stored. False: decide everyone in
    Python (the reference the tests compare with)."""
    started = time.perf_counter()
    now = now or dt.datetime.now(dt.UTC)
    summary = Summary(program.key, as_of, version, dry_run, started_at=now)
    calc = Calculator(program)
    plan = aggregates.plan(program)
    periods = _periods(program, as_of)

    prior = _prior_run_date(session, program.key, as_of)
    if not dry_run:
        latest = _latest_date(session, program.key)
        if latest is not None and latest > as_of:
            raise HistoryError(
                f"'{program.key}' is already evaluated as of {latest}; evaluating {as_of} now would rewrite the "
                f"history after it. Use --dry-run to look at {as_of}, or rebuild the history date by date "
                f"on a fresh database."
            )
        previous = None if full or calc.rank_keys else _previous_run(session, program.key, as_of, version)
        mark = metric_mark(session)
        summary.run_id = session.execute(
            insert(EvaluationRun.__table__)
            .values(program_key=program.key, program_version=version, as_of=as_of, started_at=now, status="running",
                    metric_mark=mark and mark.id, metric_edits=mark and mark.edits, marked_at=mark and mark.at)
            .returning(EvaluationRun.__table__.c.id)
        ).scalar_one()
        existing_changes = _changes_on(session, program.key, as_of)
    else:
        previous = None
    writer = _Writer(session, program, version, as_of, summary.run_id, now, existing_changes if not dry_run else {}, on_batch)
    writer.batch_size = batch_size

    conn = _read_connection(session)
    try:
        members = _collect_changed(conn, changed_members(program.key, previous)) if previous is not None else None
        # One set of scans for every period and the forecast (a later date, today's data).
        targets: list[aggregates.Target] = [(p, None) for p in periods]
        forecast_on = as_of + dt.timedelta(days=program.transitions.warn_days)
        forecast = bool(program.transitions.warn_days and program.selection != "bands")
        if forecast:
            targets.append((forecast_on, as_of))
        scratch = aggregates.Scratch(conn, program.key, plan, targets, members)
        look = shared = None
        if skip_quiet:
            context = quiet.Context(program, version, as_of, prior, conn.dialect.name, len(targets) - 1 if forecast else None)
            ranked = None
            if members is None:  # a restricted run has not the population to rank
                ranked = lambda t, key, value: scratch.rank(t, key, value) if t < len(periods) else None  # noqa: E731
            # PostgreSQL computes the values the condition compares once per member (a LATERAL
            # subquery); SQLite has no LATERAL, and writes them out where they are compared.
            shared = quiet.Shared() if conn.dialect.name == "postgresql" else None
            look = quiet.compile_look(context, STORED_COLUMNS, scratch.raw, len(targets), ranked, shared)
        # Ranks of each period's population; the forecast has none (Calculator: 0). Where the
        # sift ranked the population in SQL, each decided member's rank comes with its row;
        # otherwise a pass over everyone's values ranks them in Python.
        known = _sql_ranks(scratch, calc, periods) if calc.rank_keys and members is None else None
        ranks = _rank_tables(conn, program.key, scratch, calc, periods) if calc.rank_keys and known is None else {}
        cuts = RankCuts()
        width = DRIVER_COLUMNS + len(scratch.columns)
        for row in _driver(conn, program.key, members, scratch, look, [c for pair in known or () for c in pair], shared):
            held = _held(row, as_of)
            rerun = row.as_of is not None and row.as_of == as_of
            stored = Held(row.level, row.sub_class, row.status or "active", row.level_since, row.promoted_on)
            values = scratch.envs(row[DRIVER_COLUMNS:width])
            if known is not None:
                ranks = _known_ranks(row[width:], calc, periods, cuts)
            envs = [calc.compute(v, ranks.get(p)) for v, p in zip(values, periods, strict=False)]
            outcome = decide_member(program, held, envs, as_of)
            _count(summary, program, stored, outcome, row.key)
            forecast_env = calc.compute(values[-1]) if forecast else None
            due = ledger.plan(program, held, outcome, as_of, _last_evaluated(row, rerun, prior), outcome.values,
                              None if rerun else row.reward_met, stored if rerun else None)
            notes = notices.level_notes(program, held, outcome, as_of)
            notes += notices.warnings(program, outcome, outcome.candidate, as_of, forecast_env)
            if dry_run:
                summary.benefits_issued += len(due.items)
            else:
                writer.add(row, held, outcome, due, notes)
        # The members left as they are (SQL showed nothing can change, or not changed since the
        # day's earlier run) count as evaluated and unchanged.
        enrolled = select(func.count()).select_from(EN).where(EN.c.program_key == program.key)
        if members is not None:
            summary.reexamined = conn.scalar(enrolled.where(EN.c.member_id.in_(members)))
        total = conn.scalar(enrolled)
        summary.decided = summary.evaluated
        summary.unchanged += total - summary.evaluated
        summary.evaluated = total
        if not dry_run:
            writer.flush()
            summary.benefits_issued = writer.issued
            expire_items(session, program.key, as_of, now)
            refresh_statistics(session, writer.written)
            session.execute(update(PR).where(PR.c.key == program.key).values(
                evaluated_as_of=as_of, evaluated_mark=mark and mark.id, evaluated_run_id=summary.run_id,
                evaluated_at=dt.datetime.now(dt.UTC)))
    finally:
        conn.rollback()
        conn.close()

    summary.duration_ms = int((time.perf_counter() - started) * 1000)
    if not dry_run:
        session.execute(
            update(EvaluationRun.__table__)
            .where(EvaluationRun.__table__.c.id == summary.run_id)
            .values(
                status="done",
                finished_at=dt.datetime.now(dt.UTC),
                evaluated=summary.evaluated,
                upgraded=summary.upgraded,
                downgraded=summary.downgraded,
                unchanged=summary.unchanged,
                blacklisted=summary.blacklisted,
                duration_ms=summary.duration_ms,
            )
        )
    return summary


# What a run stores of a standing; one that would store the same is left as it is.
STORED = ("level", "sub_class", "category", "score", "status", "level_since", "promoted_on", "reward_met", "values")


def _same_standing(stored, row: dict[str, Any]) -> bool:
    return stored.program_version == row["program_version"] and all(
        getattr(stored, k) == row[k] for k in STORED)


def _count(summary: Summary, program: Program, stored: Held, outcome: Outcome, member_key: str) -> None:
    """Counts compare with what is stored, so a same-day re-run reports no change."""
    summary.evaluated += 1
    before, after = program.rank(stored.level), program.rank(outcome.level)
    direction = "up" if after > before else "down" if after < before else "same"
    if direction == "up":
        summary.upgraded += 1
    elif direction == "down":
        summary.downgraded += 1
    else:
        summary.unchanged += 1
    if outcome.status == "blacklisted" and stored.status != "blacklisted":
        summary.blacklisted += 1
    changed = (outcome.level, outcome.sub_class, outcome.status) != (stored.level, stored.sub_class, stored.status)
    if changed and len(summary.changes) < Summary.CHANGE_LIST:
        summary.changes.append(
            {
                "member": member_key,
                "from": stored.level,
                "to": outcome.level,
                "from_sub_class": stored.sub_class,
                "to_sub_class": outcome.sub_class,
                "status": outcome.status,
                "direction": direction,
                "reasons": outcome.reasons or outcome.blacklist_reasons,
            }
        )


def _changes_on(session: Session, program_key: str, as_of: dt.date) -> dict[tuple[int, str], Any]:
    """Changes already recorded for this date (a re-run merges into them)."""
    result = session.execute(
        select(LC.c.id, LC.c.member_id, LC.c.cause, LC.c.from_level, LC.c.from_sub_class, LC.c.from_status).where(
            LC.c.program_key == program_key, LC.c.on == as_of
        )
    )
    return {(r.member_id, r.cause): r for r in result}


class _Writer:
    """Buffers standing and change writes, flushing them as executemany batches."""

    def __init__(self, session, program, version, as_of, run_id, now, existing, on_batch):
        self.session, self.program, self.version, self.as_of = session, program, version, as_of
        self.run_id, self.now, self.existing, self.on_batch = run_id, now, existing, on_batch
        self.new_standings: list[dict] = []
        self.standing_updates: list[dict] = []
        self.change_inserts: list[dict] = []
        self.change_updates: list[dict] = []
        self.change_deletes: list[int] = []
        self.items: list[dict] = []
        self.notes: list[dict] = []
        self.tenure_closes: list[dict] = []
        self.tenure_reopens: list[dict] = []
        self.revoke_alls: list[dict] = []
        self.pending = 0
        self.issued = 0
        self.written: collections.Counter[str] = collections.Counter()  # rows inserted, by table
        self.batch_size = BATCH
        self.keep_values = population_ranked(program)

    def add(self, stored, held: Held, o: Outcome, due: ledger.LedgerPlan, notes: list[dict]) -> None:
        """``stored``: the driver's row (the standing as stored, or no standing yet)."""
        member_id = stored.member_id
        row = {
            "m_id": member_id,
            "level": o.level,
            "sub_class": o.sub_class,
            "category": o.category,
            "score": o.score,
            "status": o.status,
            "as_of": self.as_of,
            "level_since": o.level_since,
            "promoted_on": o.promoted_on,
            "reward_met": o.reward_met,
            "values": o.values if self.keep_values else None,
            "program_version": self.version,
        }
        if stored.as_of is None:
            self.new_standings.append(row)
        elif not _same_standing(stored, row):
            self.standing_updates.append(row)
        level_changed = (o.level, o.sub_class) != (held.level, held.sub_class)
        self._change(member_id, "evaluation", level_changed, held, o, o.reasons)
        self._change(member_id, "blacklist", o.status != held.status, held, o, o.blacklist_reasons)
        base = {"member_id": member_id, "program_key": self.program.key}
        for item in due.items:
            self.items.append({**base, **item, "created_at": self.now})
            self.notes.append({**base, "kind": "benefit_issued" if item["state"] == "issued" else "benefit_available",
                               "on": self.as_of, "dedup_key": f"benefit:{self.program.key}:{item['benefit_key']}:{item['tier']}:{item['period']}"[:160],
                               "payload": {"benefit": item["benefit_key"], "level": item["level"], "quantity": item["quantity"],
                                           "amount": item["amount"]}, "created_at": self.now})
        for n in notes:
            self.notes.append({**base, **n, "program_key": self.program.key, "created_at": self.now})
        if due.close_tenure:
            self.tenure_closes.append({"m_id": member_id, "b_level": o.level or "", "b_tenure": o.level_since or dt.date(1900, 1, 1)})
        if due.reopen_tenure and o.level is not None:
            self.tenure_reopens.append({"m_id": member_id, "b_level": o.level, "b_tenure": o.level_since})
        if due.revoke_all:
            self.revoke_alls.append({"m_id": member_id})
        self.pending += 1
        if self.pending >= self.batch_size:
            self.flush()

    def _change(self, member_id: int, cause: str, changed: bool, held: Held, o: Outcome, reasons: list) -> None:
        prior = self.existing.get((member_id, cause))
        if not changed and prior is None:
            return
        start = (prior.from_level, prior.from_sub_class, prior.from_status) if prior else (held.level, held.sub_class, held.status)
        end = (o.level, o.sub_class, o.status)
        if prior is not None and start == end:
            self.change_deletes.append(prior.id)  # a re-run undid that day's change
            return
        if prior is None and not changed:
            return
        rank_from, rank_to = self.program.rank(start[0]), self.program.rank(end[0])
        values = {
            "from_level": start[0],
            "to_level": end[0],
            "from_sub_class": start[1],
            "to_sub_class": end[1],
            "from_status": start[2],
            "to_status": end[2],
            "direction": "up" if rank_to > rank_from else "down" if rank_to < rank_from else "same",
            "reasons": reasons,
            "program_version": self.version,
            "run_id": self.run_id,
        }
        if prior is not None:
            self.change_updates.append({"c_id": prior.id, **values})
        else:
            self.change_inserts.append(
                {"member_id": member_id, "program_key": self.program.key, "on": self.as_of, "cause": cause, "created_at": self.now, **values}
            )

    def flush(self) -> None:
        s = self.session
        if self.new_standings:
            self._insert(ST, [{**{k: v for k, v in r.items() if k != "m_id"}, "member_id": r["m_id"],
                               "program_key": self.program.key} for r in self.new_standings])
        if self.standing_updates:
            older = ST.c.as_of < self.as_of  # keep the previous *period* across same-day re-runs
            s.execute(
                update(ST)
                .where(ST.c.member_id == bindparam("m_id"), ST.c.program_key == self.program.key)
                .values(
                    **{f"prev_{c}": case((older, ST.c[c]), else_=ST.c[f"prev_{c}"]) for c in PREV_COLUMNS},
                    **{k: bindparam("b_" + k) for k in self.standing_updates[0] if k != "m_id"},
                ),
                [{("b_" + k if k != "m_id" else k): v for k, v in r.items()} for r in self.standing_updates],
                execution_options={"synchronize_session": False},
            )
        if self.change_inserts:
            self._insert(LC, self.change_inserts)
        if self.change_updates:
            s.execute(
                update(LC).where(LC.c.id == bindparam("c_id")).values(
                    **{k: bindparam("b_" + k) for k in self.change_updates[0] if k != "c_id"}
                ),
                [{("b_" + k if k != "c_id" else k): v for k, v in r.items()} for r in self.change_updates],
                execution_options={"synchronize_session": False},
            )
        if self.change_deletes:
            s.execute(delete(LC).where(LC.c.id.in_(self.change_deletes)))
        self._flush_ledger()
        self.new_standings, self.standing_updates = [], []
        self.change_inserts, self.change_updates, self.change_deletes = [], [], []
        self.items, self.notes, self.tenure_closes, self.revoke_alls = [], [], [], []
        self.tenure_reopens = []
        self.pending = 0
        if self.on_batch:
            self.on_batch()

    def _flush_ledger(self) -> None:
        s, key, day = self.session, self.program.key, self.as_of
        mine = (BI.c.member_id == bindparam("m_id")) & (BI.c.program_key == key) & (BI.c.tier != "grant")
        other_tenure = ~((BI.c.level == bindparam("b_level")) & (BI.c.tenure == bindparam("b_tenure")))
        open_ = or_(*(BI.c.state == st for st in OPEN_STATES))  # no IN: these run as executemany
        perk = ledger.level_perk(BI)
        if self.tenure_closes:
            s.execute(update(BI).where(mine, other_tenure, open_).values(state="revoked", closed_on=day),
                      self.tenure_closes, execution_options={"synchronize_session": False})
            s.execute(update(BI).where(mine, other_tenure, perk).values(state="expired", closed_on=day),
                      self.tenure_closes, execution_options={"synchronize_session": False})
        if self.tenure_reopens:
            this_tenure = (BI.c.level == bindparam("b_level")) & (BI.c.tenure == bindparam("b_tenure"))
            closed_today = BI.c.closed_on == day
            perk_closed = (BI.c.state == "expired") & (BI.c.mode == "auto") & BI.c.amount.is_(None) \
                & BI.c.expires_on.is_(None)
            s.execute(update(BI).where(mine, this_tenure, closed_today, perk_closed | (BI.c.state == "revoked"))
                      .values(state=case((BI.c.mode == "auto", "issued"), (BI.c.request_text.is_not(None), "pending_review"),
                                         else_="available"), closed_on=None),
                      self.tenure_reopens, execution_options={"synchronize_session": False})
        if self.revoke_alls:
            s.execute(update(BI).where(mine, open_ | perk).values(state="revoked", closed_on=day),
                      self.revoke_alls, execution_options={"synchronize_session": False})
        if self.items:
            self.issued += self._insert(BI, self.items, ["member_id", "program_key", "benefit_key", "tier", "period"],
                                        count=True)
        if self.notes:
            self._insert(NT, self.notes, ["member_id", "dedup_key"])

    def _insert(self, table: Table, rows: list[dict], skip_conflicts: list[str] | None = None,
                count: bool = False) -> int:
        """INSERT rows (dicts with the same keys), skipping those that conflict on
        ``skip_conflicts``; returns how many were inserted (with ``count``, or on PostgreSQL)."""
        s = self.session
        self.written[table.name] += len(rows)  # an upper bound (conflicts): enough to judge statistics
        if not is_sqlite(s):
            columns = list(rows[0])
            conflict = f"ON CONFLICT ({', '.join(skip_conflicts)}) DO NOTHING" if skip_conflicts else ""
            return copy_insert(s, table, columns, ([r[c] for c in columns] for r in rows), conflict)
        if skip_conflicts is None:
            s.execute(insert(table), rows)
            return len(rows)
        stmt = dialect_insert(s, table).on_conflict_do_nothing(index_elements=skip_conflicts)
        if not count:
            s.execute(stmt, rows)
            return 0
        return len(s.execute(stmt.returning(*table.primary_key), rows).all())


def refresh_statistics(session: Session, written: Mapping[str, int]) -> None:
    """ANALYZE, inside the caller's transaction, each table of ``written`` (rows inserted, by
    table) that got at least ANALYZE_AFTER rows and ANALYZE_SHARE of the rows its statistics
    know. SQLite samples (analysis_limit) so a large table costs
    milliseconds, as PostgreSQL's ANALYZE does."""
    sqlite = session.get_bind().dialect.name == "sqlite"
    stale = [t for t in WRITTEN_TABLES if written.get(t, 0) >= ANALYZE_AFTER
             and written[t] >= ANALYZE_SHARE * _planner_rows(session, t, sqlite)]  # asks only then
    if stale and sqlite:
        session.execute(text("PRAGMA analysis_limit = 1000"))
    for table in stale:
        # The names are the constants above, never input.
        session.execute(text(f"ANALYZE {table}"))  # nosec B608


def _planner_rows(session: Session, table: str, sqlite: bool) -> float:
    """The row count the planner's statistics hold for ``table`` (0: never analysed)."""
    if sqlite:
        if not session.scalar(text("SELECT count(*) FROM sqlite_master WHERE name = 'sqlite_stat1'")):
            return 0
        stat = session.scalar(text("SELECT stat FROM sqlite_stat1 WHERE tbl = :t LIMIT 1"), {"t": table})
        return float(stat.split()[0]) if stat else 0
    return max(0.0, session.scalar(text("SELECT reltuples FROM pg_class WHERE oid = CAST(:t AS regclass)"), {"t": table}))


def expire_items(session: Session, program_key: str, as_of: dt.date, now: dt.datetime) -> int:
    """Items past their validity expire (an item expires *on* its expires_on); members hear
    a week ahead. Set-based: two statements whatever the population."""
    result = session.execute(
        update(BI)
        .where(BI.c.program_key == program_key, BI.c.state.in_(("available", "issued", "claimed")),
               BI.c.expires_on.is_not(None), BI.c.expires_on <= as_of)
        .values(state="expired", closed_on=as_of)
    )
    soon = session.execute(
        select(BI.c.id, BI.c.member_id, BI.c.benefit_key, BI.c.expires_on, BI.c.state).where(
            BI.c.program_key == program_key, BI.c.state.in_(("available", "issued", "claimed")),
            BI.c.expires_on > as_of, BI.c.expires_on <= as_of + dt.timedelta(days=7))
    ).all()
    if soon:
        session.execute(
            dialect_insert(session, NT).on_conflict_do_nothing(index_elements=["member_id", "dedup_key"]),
            [{"member_id": r.member_id, "program_key": program_key, "kind": "benefit_expiring", "on": as_of,
              "dedup_key": f"expiring:{r.id}", "payload": {"item": r.id, "benefit": r.benefit_key,
                                                            "expires_on": r.expires_on.isoformat(), "state": r.state},
              "created_at": now} for r in soon],
        )
    return result.rowcount or 0
