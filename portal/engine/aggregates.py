"""Windows -> SQL aggregate queries, one per (program, window) over all enrolled members.

Each query returns one row per member (``latest`` one per member and metric), ordered by
member id, so the run can merge the streams member by member without holding the population
in memory.
"""

from __future__ import annotations

import datetime as dt
from collections import defaultdict
from collections.abc import Iterator
from dataclasses import dataclass

from sqlalchemy import Connection, Select, case, distinct, extract, func, or_, select

from ..models import Enrolment, MetricRow
from .definition import AggregateSpec, Program
from .windows import bounds

MR = MetricRow.__table__
EN = Enrolment.__table__
NDIGITS = 6  # aggregates are rounded so both databases' float sums compare the same


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


def _condition(spec: AggregateSpec):
    cond = MR.c.metric.in_(spec.metric) if len(spec.metric) > 1 else MR.c.metric == spec.metric[0]
    if spec.kinds:
        cond = cond & MR.c.kind.in_(spec.kinds)
    if spec.exclude_kinds:
        cond = cond & or_(MR.c.kind.is_(None), MR.c.kind.not_in(spec.exclude_kinds))
    return cond


def _column(spec: AggregateSpec):
    cond = _condition(spec)
    if spec.agg == "count":
        return func.sum(case((cond, 1), else_=0))
    if spec.agg == "sum":
        return func.sum(case((cond, MR.c.value)))
    if spec.agg == "avg":
        return func.avg(case((cond, MR.c.value)))
    if spec.agg == "max":
        return func.max(case((cond, MR.c.value)))
    # months_active: distinct calendar months with a row
    month = extract("year", MR.c.date) * 12 + extract("month", MR.c.date)
    return func.count(distinct(case((cond, month))))


def window_query(program_key: str, specs: list[tuple[str, AggregateSpec]], window: str, as_of: dt.date,
                 data_until: dt.date | None = None, members: Select | None = None) -> Select:
    """``data_until`` (forecasts): the window is that of ``as_of`` but only rows up to it count.
    ``members``: a query of member ids to restrict the scan to (an incremental re-run)."""
    start, end = bounds(window, as_of)
    if data_until is not None:
        end = min(end, data_until)
    metrics = sorted({m for _, spec in specs for m in spec.metric})
    stmt = (
        select(MR.c.member_id, *[_column(spec).label(key) for key, spec in specs])
        .join(EN, (EN.c.member_id == MR.c.member_id) & (EN.c.program_key == program_key))
        .where(MR.c.metric.in_(metrics), MR.c.date <= end)
        .group_by(MR.c.member_id)
        .order_by(MR.c.member_id)
    )
    if start is not None:
        stmt = stmt.where(MR.c.date >= start)
    if members is not None:
        stmt = stmt.where(MR.c.member_id.in_(members))
    return stmt


def latest_query(program_key: str, metrics: list[str], as_of: dt.date, members: Select | None = None) -> Select:
    rn = func.row_number().over(
        partition_by=(MR.c.member_id, MR.c.metric), order_by=(MR.c.date.desc(), MR.c.id.desc())
    )
    inner = (
        select(MR.c.member_id, MR.c.metric, MR.c.value, rn.label("rn"))
        .join(EN, (EN.c.member_id == MR.c.member_id) & (EN.c.program_key == program_key))
        .where(MR.c.metric.in_(sorted(metrics)), MR.c.date <= as_of)
    )
    if members is not None:
        inner = inner.where(MR.c.member_id.in_(members))
    inner = inner.subquery()
    return select(inner.c.member_id, inner.c.metric, inner.c.value).where(inner.c.rn == 1).order_by(inner.c.member_id)


def _clean(v) -> float:
    if v is None:
        return 0.0
    return round(float(v), NDIGITS)


Stream = Iterator[tuple[int, dict[str, float]]]


def streams(conn: Connection, program_key: str, p: Plan, as_of: dt.date, data_until: dt.date | None = None,
            members: Select | None = None) -> list[Stream]:
    """One iterator per query, each yielding (member_id, {value key: number}) in member order."""
    out: list[Stream] = []
    for window, specs in p.by_window.items():
        keys = [k for k, _ in specs]
        query = window_query(program_key, specs, window, as_of, data_until, members)
        out.append(_rows(conn.execution_options(yield_per=5000).execute(query), keys))
    if p.latest:
        latest_day = min(as_of, data_until) if data_until else as_of
        query = latest_query(program_key, list(p.latest), latest_day, members)
        result = conn.execution_options(yield_per=5000).execute(query)
        out.append(_group_latest(result, p.latest))
    return out


def _rows(result, keys: list[str]) -> Stream:
    for row in result:
        yield row[0], {k: _clean(v) for k, v in zip(keys, row[1:], strict=True)}


def _group_latest(rows, latest: dict[str, list[str]]) -> Stream:
    current: int | None = None
    values: dict[str, float] = {}
    for member_id, metric, value in rows:
        if member_id != current:
            if current is not None:
                yield current, values
            current, values = member_id, {}
        for key in latest[metric]:
            values[key] = _clean(value)
    if current is not None:
        yield current, values


class Merger:
    """Advances several member-ordered streams to a given member id."""

    def __init__(self, sources: list[Stream]):
        self._sources = sources
        self._heads: list[tuple[int, dict[str, float]] | None] = [next(s, None) for s in sources]

    def take(self, member_id: int) -> dict[str, float]:
        merged: dict[str, float] = {}
        for i, source in enumerate(self._sources):
            head = self._heads[i]
            while head is not None and head[0] < member_id:
                head = next(source, None)
            if head is not None and head[0] == member_id:
                merged.update(head[1])
                head = next(source, None)
            self._heads[i] = head
        return merged
