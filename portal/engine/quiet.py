"""Which members a run can leave exactly as they are - decided in SQL, for the whole population
at once, so Python decides only for the few whose standing, ledger or notices would change.

A daily run of a million members changes a few thousand standings; deciding every member in
Python and writing every standing back cost 100-200 us a member (docs/performance.md, E5/E8).
This module compiles a program's values, requirements, level selection, sub-classes, reward
tasks, blacklist rules, ledger periods and forecast into one SQL condition that is true for a
member whose outcome *may* differ from what is stored. The condition is conservative: where it
is unsure (a rounding tie, a feature it does not compile) it says "look", and Python - the one
place the rules are decided - does. It never decides anything itself, so a wrong "look" costs
time, never correctness; a wrong "quiet" would be a bug, which tests/engine/test_quiet.py
hunts for by comparing every run with the reference path (everyone decided in Python).

Values are compared exactly, not with a tolerance: the aggregates are rounded by the database
(aggregates.rounded) and Python reads those same numbers, and + - * / min max abs give the
same IEEE doubles in SQL and in Python. Only round() may differ (half-even in Python, half
away from zero in SQL): a value within a hair of a rounding tie sends the member to Python.
"""

from __future__ import annotations

import ast
import datetime as dt
from collections.abc import Callable
from dataclasses import dataclass
from fractions import Fraction

from sqlalchemy import (
    Boolean,
    ColumnElement,
    Double,
    Integer,
    Label,
    Numeric,
    Select,
    and_,
    case,
    cast,
    false,
    func,
    literal,
    literal_column,
    not_,
    or_,
    select,
    true,
)
from sqlalchemy.dialects.postgresql import JSONB

from . import expr as expr_lang
from .definition import AggregateSpec, BucketSpec, ExprSpec, Program, RankBucketSpec, Requirement
from .ledger import is_quarter_end
from .scores import population_ranked

EPOCH = dt.date(1970, 1, 1)
TIE = 1e-6  # a scaled value this close to .5 is a rounding tie for round()


class Unsupported(Exception):
    """A definition this compiler does not translate: every member goes to Python."""


@dataclass(frozen=True)
class Stored:
    """The stored standing's columns in the run's driver query."""

    member_id: ColumnElement
    level: ColumnElement
    sub_class: ColumnElement
    status: ColumnElement
    score: ColumnElement
    reward_met: ColumnElement
    as_of: ColumnElement
    level_since: ColumnElement
    promoted_on: ColumnElement
    program_version: ColumnElement
    locked_level: ColumnElement
    blacklist_exempt_until: ColumnElement
    values: ColumnElement | None = None  # JSON; stored for population-ranked programs only


@dataclass(frozen=True)
class Context:
    program: Program
    version: int
    as_of: dt.date
    prior: dt.date | None  # the as-of date of the program's previous finished run
    dialect: str
    forecast: int | None  # the index of the forecast target, if the run has one


def _num(v: float) -> ColumnElement:
    return literal(float(v), Double)


# A target's rank of a value over the enrolled population: (the value's key, its SQL expression)
# -> (rank, population) columns, or None where the target has no ranks (the forecast: 0).
Ranked = Callable[[str, ColumnElement], "tuple[ColumnElement, ColumnElement] | None"]


class Shared:
    """Values the condition computes once per member, as columns of a LATERAL subquery the
    driver joins (PostgreSQL), which the condition names ``sift.xN``. SQL has no common
    subexpressions: a scorecard's score, written out wherever the condition compares it (each
    level's band, the stored score, its rounding tie), was computed about ten times a member,
    and each stored value parsed from its JSON again - together 0.3 s of the 0.45 s its driver
    query took at 100,000 members (docs/performance.md, round 19). SQLite is left as it was:
    the same change measured no faster there (it caches a parsed JSON document)."""

    NAME = "sift"

    def __init__(self) -> None:
        self.columns: list[Label] = []

    def add(self, expr: ColumnElement, kind=Double) -> ColumnElement:
        label = f"x{len(self.columns)}"
        self.columns.append(expr.label(label))
        return literal_column(f"{self.NAME}.{label}", kind)

    def join(self, stmt: Select) -> Select:
        """``stmt`` with the subquery joined after its tables (it refers to their columns).
        OFFSET 0 keeps PostgreSQL from pulling the subquery up into the condition, which would
        write the expressions out again."""
        if not self.columns:
            return stmt
        return stmt.join(select(*self.columns).correlate_except(None).offset(0).lateral(self.NAME), true())


class _Values:
    """SQL expressions of a program's values for one target, from the aggregate columns.
    With ``shared``, a value that is not an aggregate is computed once (``Shared``) and the
    condition refers to it; ``full`` writes every value out, for the shared columns
    themselves and for the rank tables' queries."""

    def __init__(self, program: Program, raw: Callable[[str], ColumnElement], dialect: str,
                 ranked: Ranked | None = None, shared: Shared | None = None):
        self.program, self.raw, self.dialect, self.ranked = program, raw, dialect, ranked
        self.ties: list[ColumnElement] = []  # round() calls near a tie: send the member to Python
        self._memo: dict[str, ColumnElement] = {}
        self.shared = shared
        self.full = self if shared is None else _Values(program, raw, dialect, ranked)

    def __getitem__(self, key: str) -> ColumnElement:
        if key not in self._memo:
            if self.shared is not None and not isinstance(self.program.value_spec(key), AggregateSpec):
                self._memo[key] = self.shared.add(self.full[key])
            else:
                self._memo[key] = self._value(key)
        return self._memo[key]

    def unsure(self) -> list[ColumnElement]:
        """The rounding ties of the values the condition used (one shared column for all)."""
        ties = self.full.ties
        if self.shared is None or not ties:
            return ties
        return [self.shared.add(or_(*ties), Boolean)]

    def _value(self, key: str) -> ColumnElement:
        spec = self.program.value_spec(key)
        if isinstance(spec, AggregateSpec):
            return self.raw(key)
        if isinstance(spec, ExprSpec):
            return self._expr(expr_lang.parse(spec.expr).body)
        if isinstance(spec, BucketSpec):
            of = self[spec.of]
            whens = [(compare(of, row.op, row.value), _num(row.score)) for row in spec.table if row.op is not None]
            return case(*whens, else_=_num(spec.table[-1].score)) if whens else _num(spec.table[-1].score)
        if isinstance(spec, RankBucketSpec):
            return self._rank_bucket(spec)
        raise Unsupported(type(spec).__name__)  # pragma: no cover - the definition allows no other

    def _rank_bucket(self, spec: RankBucketSpec) -> ColumnElement:
        """scores.RankTable.score: the member's competition rank (1 + how many values are
        greater) against each cut's share of the population, in integers as Python does."""
        if self.ranked is None:
            raise Unsupported("population ranks")
        probe = _Values(self.program, self.raw, self.dialect)
        probe[spec.of]
        if probe.ties:
            # Near a tie one member's value may differ from Python's, and with it everyone's rank.
            raise Unsupported("a ranked value computed with round()")
        of = self[spec.of]
        ranked = self.ranked(spec.of, of)
        if ranked is None:
            return _num(0)
        rank_, population = ranked
        whens = [(or_(of <= _num(0), population == 0), _num(0))]
        for cut in spec.cuts:
            share = Fraction(str(cut.share))
            whens.append((rank_ * share.denominator <= population * share.numerator, _num(cut.score)))
        return case(*whens, else_=_num(spec.otherwise))

    def _expr(self, node: ast.AST) -> ColumnElement:
        if isinstance(node, ast.Constant):
            return _num(node.value)
        if isinstance(node, ast.Name):
            return self[node.id]
        if isinstance(node, ast.UnaryOp):
            inner = self._expr(node.operand)
            return -inner if isinstance(node.op, ast.USub) else inner
        if isinstance(node, ast.BinOp):
            a, b = self._expr(node.left), self._expr(node.right)
            if isinstance(node.op, ast.Add):
                return a + b
            if isinstance(node.op, ast.Sub):
                return a - b
            if isinstance(node.op, ast.Mult):
                return a * b
            return case((b == 0, _num(0)), else_=a / b)  # expr.py: a ratio of nothing is 0
        if isinstance(node, ast.Call):
            name = node.func.id  # type: ignore[attr-defined]
            args = [self._expr(a) for a in node.args]
            if name in ("min", "max"):
                if len(args) == 1:
                    raise Unsupported(f"{name}() of one argument")
                if self.dialect == "postgresql":
                    return (func.least if name == "min" else func.greatest)(*args)
                return getattr(func, name)(*args)
            if name == "abs":
                return func.abs(args[0])
            return self._round(node, args)
        raise Unsupported(type(node).__name__)  # pragma: no cover - expr.parse refuses the rest

    def _round(self, node: ast.Call, args: list[ColumnElement]) -> ColumnElement:
        digits = 0
        if len(node.args) > 1:
            if not isinstance(node.args[1], ast.Constant):
                raise Unsupported("round() to a computed number of digits")
            digits = int(node.args[1].value)
        scaled = args[0] * _num(10.0 ** digits)
        whole = func.trunc(scaled) if self.dialect == "postgresql" else cast(scaled, Integer)  # toward zero
        self.ties.append(func.abs(func.abs(scaled - whole) - _num(0.5)) < _num(TIE))
        if self.dialect == "postgresql":
            return cast(func.round(cast(args[0], Numeric), digits), Double)
        return func.round(args[0], digits)


def compare(actual: ColumnElement, op: str, required: float) -> ColumnElement:
    r = _num(required)
    return {">=": actual >= r, ">": actual > r, "<=": actual <= r, "<": actual < r, "=": actual == r,
            "!=": actual != r}[op]


def met(req: Requirement, v: _Values) -> ColumnElement:
    if req.any is not None:
        inner = or_(*(met(c, v) for c in req.any))
    elif req.all is not None:
        inner = and_(*(met(c, v) for c in req.all))
    else:
        inner = compare(v[req.value_key], req.op, req.required)  # type: ignore[arg-type]
    if req.when is None:
        return inner
    return or_(not_(compare(v[req.when.value], req.when.op, req.when.required)), inner)


def all_met(reqs: list[Requirement], v: _Values) -> ColumnElement:
    return and_(*(met(r, v) for r in reqs)) if reqs else true()


def eligible(program: Program, v: _Values) -> ColumnElement:
    """transitions.eligible: the level key the values support, or NULL."""
    levels = program.levels
    if program.selection == "ladder":
        whens = [(not_(all_met(levels[0].requires, v)), None)]
        whens += [(not_(all_met(lv.requires, v)), levels[i].key) for i, lv in enumerate(levels[1:])]
        chosen = case(*whens, else_=levels[-1].key)
    elif program.selection == "highest_met":
        whens = [(all_met(lv.requires, v), lv.key) for lv in reversed(levels)]
        chosen = case(*whens, else_=None)
        prerequisite = program.level(program.prerequisite)
        if prerequisite is not None:
            chosen = case((not_(all_met(prerequisite.requires, v)), None), else_=chosen)
    else:
        value = v[program.band_of]  # type: ignore[index]
        whens = [(_in_band(lv.band, value), lv.key) for lv in reversed(levels) if lv.band is not None]
        chosen = case(*whens, else_=None) if whens else literal(None)
    if program.rated_when:
        chosen = case((not_(all_met(program.rated_when, v)), None), else_=chosen)
    return chosen


def _in_band(band, value: ColumnElement) -> ColumnElement:
    parts = []
    if band.min is not None:
        parts.append(compare(value, band.min_op, band.min))
    if band.max is not None:
        parts.append(compare(value, band.max_op, band.max))
    return and_(*parts) if parts else true()


def rank(program: Program, level: ColumnElement) -> ColumnElement:
    """Program.rank in SQL: the level's position, lowest first; -1 for not rated."""
    return case(*((level == k, i) for i, k in enumerate(program.level_keys)), else_=-1)


def _per_level(program: Program, level: ColumnElement, build: Callable) -> ColumnElement:
    """CASE over the stored level: ``build(level_spec)`` for each level (None: NULL)."""
    whens = [(level == lv.key, out) for lv in program.levels if (out := build(lv)) is not None]
    return case(*whens, else_=None) if whens else literal(None)


def _day(dialect: str, column: ColumnElement) -> ColumnElement:
    """A date column as a day number (days since 1970-01-01), an integer in both databases."""
    if dialect == "postgresql":
        return column - literal(EPOCH)
    return cast(func.julianday(column) - 2440587.5, Integer)


def _days(d: dt.date) -> int:
    return (d - EPOCH).days


def look(ctx: Context, st: Stored, targets: list[_Values]) -> ColumnElement:
    """True for a member whose outcome may differ from its stored standing: Python decides
    those; everyone else is left exactly as stored (nothing to write, issue or tell)."""
    program, now = ctx.program, targets[0]
    level = st.level
    candidate = eligible(program, now)
    reward = _per_level(program, level, lambda lv: all_met(lv.reward_tasks, now) if lv.reward_tasks else None)
    # What Python would store for a member kept at its level, and what the stored row says.
    kept_differs = [reward.is_distinct_from(st.reward_met)]
    if program.score:
        kept_differs.append(now[program.score].is_distinct_from(st.score))
    if population_ranked(program):
        # Ranked programs store every value (run.py, _Writer): any that moved is a write.
        if st.values is None:
            raise Unsupported("stored values")
        stored = st.values
        if now.shared is not None:
            # Parsed once per member: each ->> of a json column parses the text again (2 us a
            # value, a dozen values: three quarters of the scorecard's condition).
            stored = now.shared.add(cast(stored, JSONB), JSONB)
        kept_differs += [now[key].is_distinct_from(stored[key].as_float()) for key in program.values]
    active = [candidate.is_distinct_from(level)]
    if program.blacklist:
        active.append(or_(*(met(r, now) for r in program.blacklist)))
    if any(lv.sub_classes or lv.default_sub_class for lv in program.levels):
        band = now[program.band_of] if program.band_of else _num(0)
        active.append(_per_level(program, level, lambda lv: _sub_class(lv, band, st.sub_class))
                      .is_distinct_from(st.sub_class))
    active += _ledger(ctx, st, reward)
    if ctx.forecast is not None:
        active.append(_forecast_down(ctx, st, targets[ctx.forecast]))
    unsure = [t for v in targets for t in v.unsure()]
    parts = [
        st.as_of >= ctx.as_of,  # written today: a re-run decides from the state before it
        st.program_version != ctx.version,
        st.locked_level.is_not(None),
        and_(st.blacklist_exempt_until.is_not(None), st.blacklist_exempt_until >= ctx.as_of),
        st.status.is_(None),
        *kept_differs,
        and_(st.status == "active", or_(*active)),
        and_(st.status != "active", st.status != "blacklisted"),
        *unsure,
    ]
    # Never rated: Python rates. A part that comes out unknown (NULL) counts as "look".
    return or_(st.member_id.is_(None), *(func.coalesce(part, true()) for part in parts))


def _sub_class(lv, band: ColumnElement, held: ColumnElement) -> ColumnElement | None:
    """transitions.sub_class for a member kept at ``lv`` (held: its stored sub-class)."""
    if not (lv.sub_classes or lv.default_sub_class):
        return None
    whens = [(and_(held == rule.sub_class, compare(band, rule.op, rule.value)), rule.sub_class) for rule in lv.retention]
    whens += [(compare(band, sc.op, sc.value), sc.key) for sc in lv.sub_classes]
    return case(*whens, else_=lv.default_sub_class) if whens else literal(lv.default_sub_class)


def _ledger(ctx: Context, st: Stored, reward: ColumnElement) -> list[ColumnElement]:
    """ledger.plan for a member kept at its level: true where an item may come due today - a
    period that began since the member was last evaluated, a make-up day, a quarter's end,
    a reward cycle that began."""
    program, dialect = ctx.program, ctx.dialect
    today = _days(ctx.as_of)
    since = _day(dialect, st.level_since)
    days_in = literal(today) - since
    # When the member was last evaluated (run._last_evaluated): its standing's date, or the
    # program's previous run if later (a standing is written only when it changes).
    last = _day(dialect, st.as_of)
    if ctx.prior is not None:
        last = case((last > _days(ctx.prior), last), else_=_days(ctx.prior))
    out: list[ColumnElement] = []
    periodic: dict[int, list[str]] = {}  # period length -> levels with such a benefit
    makeup: dict[int, list[str]] = {}
    quarterly: list[str] = []
    rewarded: list[str] = []
    for lv in program.levels:
        for spec in program.benefits_of(lv.key):
            if spec.tier == "reward":
                rewarded.append(lv.key)
            elif spec.schedule == "quarterly":
                quarterly.append(lv.key)
            elif spec.period_days:
                periodic.setdefault(spec.period_days, []).append(lv.key)
                if spec.makeup:
                    makeup.setdefault(spec.period_days, []).append(lv.key)
    rated = and_(st.level.is_not(None), st.level_since.is_not(None))
    if any((periodic, quarterly, rewarded)):
        # A tenure that starts after today: Python's floor division differs from SQL's.
        out.append(and_(st.level.is_not(None), or_(st.level_since.is_(None), days_in < 0)))
    for p, levels in periodic.items():
        start = since + (days_in // p) * p  # floor division of non-negative integers
        out.append(and_(rated, st.level.in_(levels), last < start))
    for p, levels in makeup.items():
        out.append(and_(rated, st.level.in_(levels), (days_in + 1) % p == 0))
    if quarterly and is_quarter_end(ctx.as_of):
        out.append(st.level.in_(quarterly))
    if rewarded:
        cycle = program.transitions.reward_cycle_days
        start = since + (days_in // cycle) * cycle
        out.append(and_(rated, st.level.in_(sorted(set(rewarded))), reward.is_(True), last < start))
    return out


def _forecast_down(ctx: Context, st: Stored, forecast: _Values) -> ColumnElement:
    """notices.warnings' forecast: the data as it stands would lose the level by then."""
    program = ctx.program
    if program.transitions.consecutive_periods > 1:
        return false()  # decide() holds a change until N periods agree: no forecast warning
    lower = rank(program, eligible(program, forecast)) < rank(program, st.level)
    days = program.transitions.protection_days
    if not days:
        return and_(st.level.is_not(None), lower)
    on = _days(ctx.as_of + dt.timedelta(days=program.transitions.warn_days))
    protected = and_(st.promoted_on.is_not(None), literal(on) < _day(ctx.dialect, st.promoted_on) + days)
    return and_(st.level.is_not(None), lower, not_(protected))


def compile_look(ctx: Context, st: Stored, raw: Callable[[int, str], ColumnElement], n_targets: int,
                 ranked: Callable[[int, str, ColumnElement], tuple[ColumnElement, ColumnElement] | None] | None = None,
                 shared: Shared | None = None) -> ColumnElement:
    """``look`` for the program, or true (everyone to Python) where it cannot be compiled.
    ``ranked(target, key, value)``: the rank columns of a ranked value (see ``Ranked``); None:
    the program's ranks cannot be had in SQL. ``shared``: compute each value once there (the
    caller joins it to the driver)."""
    try:
        targets = [_Values(ctx.program, lambda key, t=t: raw(t, key), ctx.dialect,
                           None if ranked is None else lambda key, value, t=t: ranked(t, key, value), shared)
                   for t in range(n_targets)]
        return look(ctx, st, targets)
    except Unsupported:
        if shared is not None:
            shared.columns.clear()
        return true()
