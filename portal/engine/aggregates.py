"""Windows -> SQL aggregate queries over all enrolled members: one scan for all bounded
windows of every target (conditional aggregates), one for all-time windows and the latest
readings of gauges.

Each query returns one row per member, ordered by member id, so the run can merge the streams
member by member without holding the population in memory.
"""

from __future__ import annotations

import datetime as dt
from collections import defaultdict
from collections.abc import Iterator
from dataclasses import dataclass

from sqlalchemy import (
    Column,
    ColumnElement,
    Connection,
    Double,
    Integer,
    MetaData,
    Numeric,
    Select,
    Table,
    and_,
    case,
    cast,
    distinct,
    extract,
    func,
    insert,
    literal,
    literal_column,
    or_,
    select,
    text,
)
from sqlalchemy.dialects import postgresql
from sqlalchemy.dialects.sqlite.base import SQLiteCompiler
from sqlalchemy.schema import CreateTableAs

from ..models import Enrolment, MetricRow
from .definition import AggregateSpec, Program
from .windows import bounds

MR = MetricRow.__table__
EN = Enrolment.__table__
# Per statement: Connection.execution_options() would change the connection for good (later
# statements, a CREATE TABLE AS among them, would run through a server-side cursor too).
STREAM = {"yield_per": 5000}
SCRATCH_STATISTICS = 10  # PostgreSQL's statistics target for scratch tables: 300 x 10 sampled rows
NDIGITS = 6  # aggregates are rounded so both databases' float sums compare the same


def rounded(expr, dialect: str):
    """``expr`` rounded to NDIGITS decimals by the database. Rounding happens in SQL, once, so
    the run's decisions in SQL (engine/quiet.py), its decisions in Python and the values a
    page shows all start from the same numbers."""
    if dialect == "postgresql":
        return _rounded_postgresql(expr)
    return func.round(expr, NDIGITS)


def _f8(value: float) -> ColumnElement:
    return literal_column(f"CAST({float(value)!r} AS DOUBLE PRECISION)", Double)


def _numeric_round(expr) -> ColumnElement:
    """The definition on PostgreSQL (round(double precision, int) does not exist there): to
    numeric (15 significant digits), half away from zero at NDIGITS, back to the nearest double.
    Both casts go through text - about half a microsecond a value, paid by the leader alone
    after a parallel aggregate (1-2 s of a scan at 1M members, docs/performance.md round 13)."""
    return cast(func.round(cast(expr, Numeric), NDIGITS), Double)


# Below FAST_BELOW the 15 digits keep at least NDIGITS + 2 decimals, so the numeric value
# differs from x by < 0.005 units of 10^-NDIGITS, and x * 10^NDIGITS in doubles by < 0.001 more.
# Where that product is farther than FAST_MARGIN from a half, both round to the same integer
# k, and k / 10^NDIGITS in doubles is the nearest double to k * 10^-NDIGITS, which is what the
# numeric route returns: the same double, bit for bit (tests/unit/test_rounding.py). Halves
# (0.0078125), near-halves and larger values take the numeric route.
FAST_BELOW = 1e7
FAST_MARGIN = 0.01
_SCALE = _f8(10.0**NDIGITS)


def _fast_route(expr) -> ColumnElement:
    """True where doubles round ``expr`` exactly as ``_numeric_round`` does."""
    scaled = func.abs(expr) * _SCALE
    return and_(func.abs(expr) < _f8(FAST_BELOW), func.abs(scaled - func.floor(scaled) - _f8(0.5)) > _f8(FAST_MARGIN))


def _rounded_postgresql(expr) -> ColumnElement:
    """``_numeric_round(expr)``, computed in doubles where that gives the same result."""
    # + 0: a negative value rounded to zero gives -0.0 in doubles, 0.0 by the numeric route
    return case((_fast_route(expr), func.round(expr * _SCALE, type_=Double) / _SCALE + _f8(0)),
                else_=_numeric_round(expr))


@dataclass(frozen=True)
class Plan:
    """The queries of one program: aggregates grouped by window, plus the latest gauges."""

    by_window: dict[str, list[tuple[str, AggregateSpec]]]
    latest: dict[str, list[str]]  # metric -> value keys that take its latest reading

    @property
    def keys(self) -> list[str]:
        out = [k for specs in self.by_window.values() for k, _ in specs]
        return out + [k for ks in self.latest.values() for k in ks]


def plan(program: Program, only: set[str] | None = None) -> Plan:
    by_window: dict[str, list[tuple[str, AggregateSpec]]] = defaultdict(list)
    latest: dict[str, list[str]] = defaultdict(list)
    for key in program.values:
        spec = program.value_spec(key)
        if not isinstance(spec, AggregateSpec) or (only is not None and key not in only):
            continue
        if spec.agg == "latest":
            for metric in spec.metric:
                latest[metric].append(key)
        else:
            by_window[spec.window].append((key, spec))
    return Plan(dict(by_window), dict(latest))


def _aggregate(spec: AggregateSpec, dialect: str, start: dt.date | None, end: dt.date | None,
               scan_metrics: set[str] | None = None):
    """The aggregate of ``spec`` over its rows dated start..end (both inclusive, None: open).
    A term the scan's own WHERE already implies is left out (the scan reads only
    ``scan_metrics``; the caller passes None for a bound the scan shares): every term is
    evaluated for every row read, and the window scans are most of a run."""
    terms = []
    if scan_metrics is None or set(spec.metric) != scan_metrics:
        terms.append(MR.c.metric.in_(spec.metric) if len(spec.metric) > 1 else MR.c.metric == spec.metric[0])
    if spec.kinds:
        terms.append(MR.c.kind.in_(spec.kinds))
    if spec.exclude_kinds:
        terms.append(or_(MR.c.kind.is_(None), MR.c.kind.not_in(spec.exclude_kinds)))
    if start is not None:
        terms.append(MR.c.date >= start)
    if end is not None:
        terms.append(MR.c.date <= end)
    if spec.agg == "count":
        return _only_rows(func.count(), terms)
    if spec.agg in ("sum", "avg", "max"):
        return rounded(_only_rows(getattr(func, spec.agg)(MR.c.value), terms), dialect)
    # months_active: distinct calendar months with a row
    month = extract("year", MR.c.date) * 12 + extract("month", MR.c.date)
    return _only_rows(func.count(distinct(month)), terms)


def _only_rows(aggregate, terms: list):
    """``aggregate`` over the rows meeting every term: FILTER (WHERE ...) skips the others
    before the aggregate sees them (SQLite and PostgreSQL), cheaper than a CASE per row."""
    return aggregate.filter(and_(*terms)) if terms else aggregate


# A target is one evaluation of the program's values: (as_of, data_until). The run needs one
# per period (consecutive-period rules look at earlier period ends) plus, for downgrade
# warnings, a forecast (a later as-of with only the data known today).
Target = tuple[dt.date, dt.date | None]
Slot = tuple[int, str]  # (target index, value key)


def _end(as_of: dt.date, data_until: dt.date | None) -> dt.date:
    return min(as_of, data_until) if data_until else as_of


# Whose rows a scan reads: every enrolled member (None), the ids a select yields (a re-run),
# or one member (explaining a standing on a page).
Members = Select | int | None


def _only(members: Members, upto: int | None) -> list:
    """Conditions restricting metric rows to ``members`` and to ids up to ``upto`` (the rows a
    run had read: its metric mark)."""
    where = []
    if isinstance(members, int):
        where.append(MR.c.member_id == members)
    elif members is not None:
        where.append(MR.c.member_id.in_(members))
    if upto is not None:
        where.append(MR.c.id <= upto)
    return where


# SQLite reads a program's rows member by member: the enrolments in member order, each
# member's rows from this index (member, metric, date) - every group ends where the next member
# begins, so nothing is sorted. Left to itself the planner takes (metric, date, member) and
# sorts every row for the GROUP BY: 2x the time at 100k members (docs/performance.md, E11).
MEMBER_ORDER = "INDEXED BY ix_metric_rows_member_metric_date"


def _sqlite_from_hint(_compiler, _table, text: str | None) -> str | None:
    return text


# SQLAlchemy's SQLite compiler drops table hints (Select.with_hint); SQLite's one hint,
# INDEXED BY, goes right after the table name - where the generic hook puts it.
SQLiteCompiler.get_from_hint_text = _sqlite_from_hint  # type: ignore[method-assign]


def _program_rows(program_key: str, dialect: str, *columns) -> tuple[Select, ColumnElement]:
    """SELECT member id, ``columns`` FROM the program's members' metric rows; and the member id
    column to group by."""
    on = (EN.c.member_id == MR.c.member_id) & (EN.c.program_key == program_key)
    if dialect == "sqlite":
        member = EN.c.member_id
        stmt = select(member, *columns).select_from(EN.join(MR, on)).with_hint(MR, MEMBER_ORDER, "sqlite")
    else:  # PostgreSQL: a parallel scan and hash join
        member = MR.c.member_id
        stmt = select(member, *columns).select_from(MR.join(EN, on))
    return stmt, member


def _scan(program_key: str, dialect: str, columns: list, metrics: set[str], lo: dt.date | None, hi: dt.date,
          members: Members, upto: int | None = None) -> Select:
    stmt, member = _program_rows(program_key, dialect, *columns)
    stmt = stmt.where(MR.c.metric.in_(sorted(metrics)), MR.c.date <= hi).group_by(member).order_by(member)
    if lo is not None:
        stmt = stmt.where(MR.c.date >= lo)
    return stmt.where(*_only(members, upto))


def window_queries(program_key: str, p: Plan, targets: list[Target], dialect: str, members: Members = None,
                   upto: int | None = None) -> list[tuple[Select, list[list[Slot]]]]:
    """At most two scans for every aggregate value of every target: one over all history for
    ``all`` windows and the latest readings, one over the union of the bounded windows (each
    value a conditional aggregate over its own dates); each column feeds the slots listed for
    it (the same aggregate over the same dates is computed once: a forecast often repeats
    today's). A bounded value whose metrics the history scan reads anyway is computed there:
    its rows are read once. ``members``: restrict to these member ids (a re-run)."""
    history: list[tuple[Slot, AggregateSpec, dt.date | None, dt.date]] = []
    windowed: list[tuple[Slot, AggregateSpec, dt.date | None, dt.date]] = []
    for t, (as_of, until) in enumerate(targets):
        for window, specs in p.by_window.items():
            start, end = bounds(window, as_of)
            (history if window == "all" else windowed).extend(
                ((t, key), spec, start, _end(end, until)) for key, spec in specs)
    days = _latest_days(targets) if p.latest else {}
    read = {m for _, spec, _, _ in history for m in spec.metric} | set(p.latest)
    history += [w for w in windowed if read.issuperset(w[1].metric)]
    windowed = [w for w in windowed if not read.issuperset(w[1].metric)]
    out = []
    for bounded, wanted, newest in ((False, history, days), (True, windowed, {})):
        if not wanted and not newest:
            continue
        metrics = {m for _, spec, _, _ in wanted for m in spec.metric} | (set(p.latest) if newest else set())
        lo = min(start for _, _, start, _ in wanted) if bounded else None
        hi = max([end for _, _, _, end in wanted] + list(newest))
        columns: dict[tuple, int] = {}
        exprs, slots = [], []
        for slot, spec, start, end in wanted:
            same = (spec.agg, tuple(spec.metric), tuple(spec.kinds or ()), tuple(spec.exclude_kinds or ()), start, end)
            if same not in columns:
                columns[same] = len(exprs)
                agg = _aggregate(spec, dialect, None if start == lo else start, None if end == hi else end, metrics)
                exprs.append(func.coalesce(agg, 0).label(f"v{len(exprs)}"))
                slots.append([])
            slots[columns[same]].append(slot)
        # The latest readings ride on the history scan: their rows are read in the same pass
        # (NULL: no reading; the key is then left out, as for a member without rows).
        newest_at = set()
        for day, indexes in newest.items():
            for metric in sorted(p.latest):
                newest_at.add(len(exprs))
                exprs.append(_newest(metric, None if day == hi else day, dialect, metrics).label(f"v{len(exprs)}"))
                slots.append([(t, key) for t in indexes for key in p.latest[metric]])
        scan = _scan(program_key, dialect, exprs, metrics, lo, hi, members, upto)
        out.append((_read_newest(scan, newest_at, dialect), slots))
    return out


# SQLite keys a reading by its day, then its row id (ties on a day: the row stored last), as
# one integer: days since 0001-01-01 times 2^40 plus the id (ids below 2^40, days below 2^23:
# the key stays below 2^63). A member's greatest key is its newest reading, whose value is
# then read by the key's row id, once per member: testing and comparing one integer per row
# costs a quarter less of the scan than building and comparing a "date id value" string.
# PostgreSQL's per-member lookups cost more than they save there (docs/performance.md, round 10).
ID_SPAN = 2**40


def _newest(metric: str, day: dt.date | None, dialect: str, scan_metrics: set[str]) -> ColumnElement:
    """The member's newest reading of ``metric`` dated up to ``day`` (None: the scan's own
    bound), NULL without one: its key (SQLite; ``_read_newest`` reads the value) or its value
    (PostgreSQL)."""
    terms = [] if scan_metrics == {metric} else [MR.c.metric == metric]
    if day is not None:
        terms.append(MR.c.date <= day)
    if dialect == "sqlite":  # julianday: days since 4714 BC, a REAL ending in .5 for a date
        day_number = cast(func.julianday(MR.c.date), Integer) - 1721425
        return _only_rows(func.max(day_number * ID_SPAN + MR.c.id), terms)
    # PostgreSQL: the greatest (day, id, value) array is the newest reading (arrays compare
    # element by element; ids are exact as doubles up to 2^53) - a third faster than DISTINCT
    # ON, which sorts every reading, and it stays in the scan's parallel hash aggregate.
    reading = postgresql.array([cast(MR.c.date - literal(dt.date(2000, 1, 1)), Double), cast(MR.c.id, Double),
                                MR.c.value])
    return rounded(_only_rows(func.max(reading), terms)[3], dialect)


def _read_newest(scan: Select, newest_at: set[int], dialect: str) -> Select:
    """``scan`` with the columns at ``newest_at`` (counted after the member id) turned into
    readings: on SQLite they hold keys, replaced by the values read by row id; PostgreSQL's
    already hold the values."""
    if dialect != "sqlite" or not newest_at:
        return scan
    inner = scan.subquery("scan")
    member, *values = inner.c
    columns: list[ColumnElement] = [member]
    for j, column in enumerate(values):
        if j in newest_at:
            reading = select(MR.c.value).where(MR.c.id == column % ID_SPAN).scalar_subquery()
            column = rounded(reading, dialect).label(column.name)
        columns.append(column)
    return select(*columns).order_by(member)


Stream = Iterator[tuple[int, list[dict[str, float]]]]  # member id, one dict per target


def target_streams(conn: Connection, program_key: str, p: Plan, targets: list[Target],
                   members: Members = None, upto: int | None = None) -> list[Stream]:
    """Iterators yielding (member_id, [values of target 0, target 1, ...]) in member order.
    One member's rows (a page's) are read whole: no server-side cursor, which PostgreSQL only
    declares inside a transaction, and the web reads in autocommit (db.read_only)."""
    out: list[Stream] = []
    options = {} if isinstance(members, int) else STREAM
    for query, names in window_queries(program_key, p, targets, conn.dialect.name, members, upto):
        out.append(_rows(conn.execute(query, execution_options=options), names, len(targets)))
    return out


def streams(conn: Connection, program_key: str, p: Plan, as_of: dt.date, data_until: dt.date | None = None,
            members: Members = None, upto: int | None = None) -> list[Stream]:
    """One target's streams."""
    return target_streams(conn, program_key, p, [(as_of, data_until)], members, upto)


def _rows(result, names: list[list[Slot]], n: int) -> Stream:
    """A scan's rows: each column feeds its slots; NULL (a latest column without a reading)
    feeds none."""
    for row in result:
        envs: list[dict[str, float]] = [{} for _ in range(n)]
        for slots, v in zip(names, row[1:], strict=True):
            if v is not None:
                number = float(v)
                for t, key in slots:
                    envs[t][key] = number
        yield row[0], envs


class Merger:
    """Advances several member-ordered streams to a given member id."""

    def __init__(self, sources: list[Stream], targets: int = 1):
        self._sources = sources
        self._targets = targets
        self._heads: list[tuple[int, list[dict[str, float]]] | None] = [next(s, None) for s in sources]

    def take_all(self, member_id: int) -> list[dict[str, float]]:
        """The member's values, one dict per target (empty where the member has no rows)."""
        merged: list[dict[str, float]] = [{} for _ in range(self._targets)]
        for i, source in enumerate(self._sources):
            head = self._heads[i]
            while head is not None and head[0] < member_id:
                head = next(source, None)
            if head is not None and head[0] == member_id:
                for t, values in enumerate(head[1]):
                    if values:
                        merged[t].update(values)
                head = next(source, None)
            self._heads[i] = head
        return merged

    def take(self, member_id: int) -> dict[str, float]:
        return self.take_all(member_id)[0]


class Scratch:
    """A run's aggregates, computed once into temporary tables on the run's read connection
    (one row per member each) and joined by the run's driver query: SQL decides from them who
    needs a decision in Python (engine/quiet.py), and Python reads the same numbers. The
    tables go with the read transaction's rollback."""

    def __init__(self, conn: Connection, program_key: str, p: Plan, targets: list[Target],
                 members: Members = None, upto: int | None = None):
        self.n = len(targets)
        self.tables: list[Table] = []
        self.labels: list[tuple[Column, list[Slot]]] = []  # a table column -> the values it feeds
        dialect = conn.dialect.name
        for i, (query, names) in enumerate(window_queries(program_key, p, targets, dialect, members, upto)):
            table = self._store(conn, f"run_window{i}", query)
            self.tables.append(table)
            self.labels += [(table.c[f"v{j}"], slots) for j, slots in enumerate(names)]
        self._raw = {name: column for column, names in self.labels for name in names}
        self._conn, self._program_key = conn, program_key
        self._ranks: dict[tuple[int, str], tuple[ColumnElement, ColumnElement]] = {}
        self._rank_tables: list[Table] = []

    def rank(self, target: int, key: str, value: ColumnElement) -> tuple[ColumnElement, ColumnElement]:
        """(rank, population) of a value over the program's enrolled members in ``target``:
        its competition rank, highest first (1 + how many are greater: RANK() over the
        value descending), stored in a temporary table the driver joins. ``value``: the
        value's SQL over this scratch's columns (engine/quiet.py)."""
        if (target, key) not in self._ranks:
            query = self._join(
                select(EN.c.member_id, func.rank().over(order_by=value.desc()).label("r"),
                       func.count().over().label("n"))
                .where(EN.c.program_key == self._program_key),
                EN.c.member_id, self.tables)
            table = self._store(self._conn, f"run_rank{len(self._rank_tables)}", query, Integer)
            self._rank_tables.append(table)
            self._ranks[(target, key)] = (table.c.r, table.c.n)
        return self._ranks[(target, key)]

    def ranked(self, target: int, key: str) -> tuple[ColumnElement, ColumnElement] | None:
        """The (rank, population) columns ``rank`` made for a value of ``target``, if it did."""
        return self._ranks.get((target, key))

    def _store(self, conn: Connection, name: str, query: Select, kind=Double) -> Table:
        if conn.dialect.name == "postgresql":
            # CREATE TABLE AS may scan in parallel (an INSERT ... SELECT may not).
            cas = CreateTableAs(query.order_by(None), name, temporary=True)
            conn.execute(cas)
            # The driver's plan needs the table's size and that member_id is unique, which a
            # sample of 3,000 rows shows as well as the default 30,000: ANALYZE of a 45,000-row
            # window took 0.21 s, now 0.02 s, the plans the same (docs/performance.md, round
            # 15). This read transaction analyses only its scratch tables; LOCAL ends with it.
            conn.execute(text(f"SET LOCAL default_statistics_target = {SCRATCH_STATISTICS}"))
            conn.execute(text(f"ANALYZE {name}"))  # nosec B608 - a constant name
            table = cas.table
        else:
            # A rowid table keyed by member: the driver joins it with one lookup per member.
            # Rows go in as they come: ordering them would sort the latest readings' scan.
            names = [c.name for c in query.selected_columns]
            table = Table(name, MetaData(), Column(names[0], Integer, primary_key=True),
                          *(Column(n, kind) for n in names[1:]), prefixes=["TEMPORARY"])
            table.create(conn)
            conn.execute(insert(table).from_select(names, query.order_by(None)))
        return table

    def raw(self, target: int, key: str) -> ColumnElement:
        """An aggregate value of one target (0 for a member without rows in its scan)."""
        return func.coalesce(self._raw[(target, key)], literal(0.0, Double))

    @property
    def columns(self) -> list[Column]:
        return [column for column, _ in self.labels]

    def join(self, stmt: Select, member_id) -> Select:
        """``stmt`` outer-joined with every table of the scratch (aggregates and ranks)."""
        return self._join(stmt, member_id, self.tables + self._rank_tables)

    @staticmethod
    def _join(stmt: Select, member_id, tables: list[Table]) -> Select:
        for table in tables:
            stmt = stmt.outerjoin(table, table.c.member_id == member_id)
        return stmt

    def envs(self, values) -> list[dict[str, float]]:
        """One member's values per target from its row's scratch columns (in ``columns``
        order); keys of a scan without the member are left out (Calculator: 0)."""
        out: list[dict[str, float]] = [{} for _ in range(self.n)]
        for (_, names), v in zip(self.labels, values, strict=True):
            if v is not None:
                number = float(v)
                for t, key in names:
                    out[t][key] = number
        return out


def _latest_days(targets: list[Target]) -> dict[dt.date, list[int]]:
    """The days whose latest readings the targets need (a forecast shares today's)."""
    by_day: dict[dt.date, list[int]] = defaultdict(list)
    for t, (as_of, until) in enumerate(targets):
        by_day[_end(as_of, until)].append(t)
    return by_day
