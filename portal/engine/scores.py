"""Derived values: expressions, bucket tables and rank buckets over the enrolled population."""

from __future__ import annotations

import bisect
from collections.abc import Callable, Sequence
from fractions import Fraction

from . import expr as expr_lang
from .definition import (
    AggregateSpec,
    BucketSpec,
    ExprSpec,
    Program,
    RankBucketSpec,
    dependencies,
    value_order,
)
from .rules import compare

Env = dict[str, float]
_NO_RANKS: dict[str, RankTable | KnownRank] = {}  # read only: a value ranked without tables is 0


class RankCuts:
    """A rank bucket's cuts as the last rank each admits, for a population size: p = rank / N
    <= share exactly, i.e. rank <= floor(share * N) with the share as the fraction it is
    written as (0.1 is 1/10). Worked out once per (spec, N), not per member: a Fraction per
    cut per member was 18 us a call (docs/performance.md, round 16)."""

    def __init__(self) -> None:
        self._last: dict[tuple[int, int], tuple[RankBucketSpec, list[tuple[int, float]]]] = {}

    def score(self, value: float, rank: int, population: int, spec: RankBucketSpec) -> float:
        """The score of ``value`` at ``rank`` of ``population`` (rank is read only for a value
        above 0: "a member whose value is 0 scores 0")."""
        if value <= 0 or population == 0:
            return 0.0
        entry = self._last.get((id(spec), population))
        if entry is None or entry[0] is not spec:
            last = []
            for cut in spec.cuts:
                share = Fraction(str(cut.share))
                last.append((share.numerator * population // share.denominator, float(cut.score)))
            entry = self._last[(id(spec), population)] = (spec, last)
        for limit, score in entry[1]:
            if rank <= limit:
                return score
        return float(spec.otherwise)


class RankTable:
    """Competition ranking (1, 2, 2, 4) of a value over the enrolled population."""

    def __init__(self, values: list[float], population: int):
        self._ascending = sorted(values)
        self.population = population
        self._cuts = RankCuts()

    def rank(self, value: float) -> int:
        greater = len(self._ascending) - bisect.bisect_right(self._ascending, value)
        return greater + 1

    def score(self, value: float, spec: RankBucketSpec) -> float:
        return self._cuts.score(value, self.rank(value) if value > 0 else 0, self.population, spec)


class KnownRank:
    """One member's rank and population as the database ranked them (RANK() over the same
    values, engine/quiet.py), scored as ``RankTable`` scores: no table of everyone's values."""

    __slots__ = ("_cuts", "population", "rank")

    def __init__(self, rank: int, population: int, cuts: RankCuts):
        self.rank, self.population, self._cuts = rank, population, cuts

    def score(self, value: float, spec: RankBucketSpec) -> float:
        return self._cuts.score(value, self.rank, self.population, spec)


def population_ranked(program: Program) -> bool:
    """Whether some value ranks the enrolled population (one member's values then depend on
    everyone's, and cannot be recomputed for that member alone)."""
    return any(isinstance(program.value_spec(k), RankBucketSpec) for k in program.values)


class Calculator:
    """Computes every value of a program for one member from its aggregates."""

    def __init__(self, program: Program):
        self.program = program
        self.aggregate_keys = [k for k in program.values if isinstance(program.value_spec(k), AggregateSpec)]
        self.rank_keys = [k for k in program.values if isinstance(program.value_spec(k), RankBucketSpec)]
        self.rank_sources = sorted({program.value_spec(k).of for k in self.rank_keys})
        self._steps: list[tuple[str, Callable[[Env, dict[str, RankTable | KnownRank]], float]]] = []
        for key in value_order(program):
            spec = program.value_spec(key)
            if isinstance(spec, ExprSpec):
                fn = expr_lang.compile_expr(expr_lang.parse(spec.expr))
                self._steps.append((key, lambda env, _r, fn=fn: fn(env)))
            elif isinstance(spec, BucketSpec):
                self._steps.append((key, lambda env, _r, spec=spec: bucket(env[spec.of], spec)))
            elif isinstance(spec, RankBucketSpec):
                self._steps.append((key, lambda env, ranks, spec=spec, key=key: _rank(env, ranks, spec)))

        # What the ranked values need (the rank pass computes only those, for every member).
        needed, todo = set(), list(self.rank_sources)
        while todo:
            key = todo.pop()
            if key not in needed:
                needed.add(key)
                todo += dependencies(program.value_spec(key))
        self.source_aggregates = [k for k in self.aggregate_keys if k in needed]
        self._source_steps = [(k, fn) for k, fn in self._steps if k in needed]

    def source_values(self, values: Sequence[float]) -> list[float]:
        """The ``rank_sources`` (in that order) from the ``source_aggregates`` (in that order),
        as ``compute`` without ranks gives them (a rank of a rank is 0 there too)."""
        env: Env = dict(zip(self.source_aggregates, values, strict=True))
        for key, fn in self._source_steps:
            env[key] = fn(env, _NO_RANKS)
        return [env[k] for k in self.rank_sources]

    def compute(self, aggregates: dict[str, float], ranks: dict[str, RankTable | KnownRank] | None = None) -> Env:
        env: Env = {k: aggregates.get(k, 0.0) for k in self.aggregate_keys}
        ranks = ranks or {}
        for key, fn in self._steps:
            env[key] = fn(env, ranks)
        return env


def _rank(env: Env, ranks: dict[str, RankTable | KnownRank], spec: RankBucketSpec) -> float:
    table = ranks.get(spec.of)
    return table.score(env[spec.of], spec) if table else 0.0


def bucket(value: float, spec: BucketSpec) -> float:
    for row in spec.table:
        if row.op is None or compare(value, row.op, row.value):
            return float(row.score)
    return float(spec.table[-1].score)  # pragma: no cover - the last row is a catch-all
