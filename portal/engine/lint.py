"""Checks of a program definition beyond its schema: unreachable levels, band gaps and
overlaps, unused metrics, levels with no benefits. Errors make ``portal programs lint`` exit 1."""

from __future__ import annotations

import math
from dataclasses import dataclass

from . import expr as expr_lang
from .definition import (
    AggregateSpec,
    Band,
    BucketSpec,
    DefinitionError,
    ExprSpec,
    LevelSpec,
    Program,
    RankBucketSpec,
    Requirement,
    value_order,
)
from .rules import number

Interval = tuple[float, float]
INF = math.inf


@dataclass(frozen=True)
class Finding:
    severity: str  # error | warning
    path: str
    message: str

    def __str__(self) -> str:
        return f"{self.severity}: {self.path}: {self.message}" if self.path else f"{self.severity}: {self.message}"


def fmt(v: float) -> str:
    if math.isinf(v):
        return "∞" if v > 0 else "-∞"
    n = number(v)
    return f"{n:,}" if isinstance(n, int) else f"{n:,.4g}"


def value_ranges(program: Program) -> dict[str, Interval]:
    """The smallest and largest value each program value can take."""
    ranges: dict[str, Interval] = {}
    for key in value_order(program):
        spec = program.value_spec(key)
        if isinstance(spec, AggregateSpec):
            ranges[key] = _aggregate_range(program, spec)
        elif isinstance(spec, ExprSpec):
            ranges[key] = expr_lang.interval(expr_lang.parse(spec.expr), ranges)
        elif isinstance(spec, BucketSpec):
            scores = [r.score for r in spec.table]
            ranges[key] = (min(scores), max(scores))
        elif isinstance(spec, RankBucketSpec):
            scores = [c.score for c in spec.cuts] + [spec.otherwise, 0.0]
            ranges[key] = (min(scores), max(scores))
    return ranges


def _aggregate_range(program: Program, spec: AggregateSpec) -> Interval:
    metrics = [program.metrics[m] for m in spec.metric]
    lo = min(m.min for m in metrics)
    hi = INF if any(m.max is None for m in metrics) else max(m.max for m in metrics)  # type: ignore[type-var]
    if spec.agg == "count":
        return (0.0, INF)
    if spec.agg == "sum":
        return (min(0.0, lo * INF if lo < 0 else 0.0), INF if hi > 0 else 0.0)
    if spec.agg == "months_active":
        if spec.window.endswith("m"):
            return (0.0, float(int(spec.window[:-1])))
        if spec.window.endswith("d"):
            return (0.0, float(math.ceil(int(spec.window[:-1]) / 28) + 1))
        return (0.0, INF)
    # avg, latest, max: a row's value, or 0 with no rows
    return (min(lo, 0.0), max(hi, 0.0))


def satisfiable(interval: Interval, op: str, required: float) -> bool:
    lo, hi = interval
    return {
        ">=": hi >= required,
        ">": hi > required,
        "<=": lo <= required,
        "<": lo < required,
        "=": lo <= required <= hi,
        "!=": not (lo == hi == required),
    }[op]


def _unreachable(req: Requirement, ranges: dict[str, Interval]) -> list[str]:
    """Why a requirement can never be met (empty list: it can)."""
    if req.when is not None:
        return []  # it does not apply whenever its condition fails
    if req.any is not None:
        why = [_unreachable(c, ranges) for c in req.any]
        return [w for ws in why for w in ws] if all(why) else []
    if req.all is not None:
        return [w for c in req.all for w in _unreachable(c, ranges)]
    interval = ranges.get(req.value_key, (-INF, INF))
    if satisfiable(interval, req.op, req.required):  # type: ignore[arg-type]
        return []
    return [f"{req.key} {req.op} {fmt(req.required)} can never hold ({req.value_key} is at most {fmt(interval[1])}, at least {fmt(interval[0])})"]


def _bounds(band: Band) -> tuple[float, bool, float, bool]:
    lo = -INF if band.min is None else band.min
    hi = INF if band.max is None else band.max
    return lo, band.min is None or band.min_op == ">=", hi, band.max is None or band.max_op == "<="


def _op_bounds(op: str, v: float) -> tuple[float, bool, float, bool]:
    return {
        ">=": (v, True, INF, True),
        ">": (v, False, INF, True),
        "<=": (-INF, True, v, True),
        "<": (-INF, True, v, False),
        "=": (v, True, v, True),
    }.get(op, (-INF, True, INF, True))


def _intersect(a, b):
    lo, lo_in = (a[0], a[1]) if (a[0] > b[0] or (a[0] == b[0] and not a[1])) else (b[0], b[1])
    hi, hi_in = (a[2], a[3]) if (a[2] < b[2] or (a[2] == b[2] and not a[3])) else (b[2], b[3])
    if lo > hi or (lo == hi and not (lo_in and hi_in)):
        return None
    return (lo, lo_in, hi, hi_in)


def _gaps(whole, parts):
    """The pieces of ``whole`` that no part covers."""
    parts = sorted((p for p in parts if p), key=lambda p: (p[0], not p[1]))
    gaps = []
    cur_lo, cur_in = whole[0], whole[1]
    for lo, lo_in, hi, hi_in in parts:
        if lo > cur_lo or (lo == cur_lo and cur_in and not lo_in):
            gaps.append((cur_lo, cur_in, lo, not lo_in))
        if hi > cur_lo or (hi == cur_lo and hi_in):
            cur_lo, cur_in = hi, not hi_in
    if cur_lo < whole[2] or (cur_lo == whole[2] and cur_in and whole[3]):
        gaps.append((cur_lo, cur_in, whole[2], whole[3]))
    return [g for g in gaps if g[0] < g[2] or (g[0] == g[2] and g[1] and g[3])]


def _show(iv) -> str:
    lo, lo_in, hi, hi_in = iv
    left = "[" if lo_in and not math.isinf(lo) else "("
    right = "]" if hi_in and not math.isinf(hi) else ")"
    return f"{left}{fmt(lo)}, {fmt(hi)}{right}"


def lint(program: Program) -> list[Finding]:
    findings: list[Finding] = []
    ranges = value_ranges(program)

    # unreachable levels
    blocked_below: str | None = None
    for i, level in enumerate(program.levels):
        path = f"levels[{i}] ({level.key})"
        why: list[str] = []
        if program.selection == "bands" and level.band is not None:
            lo, hi = ranges.get(program.band_of or "", (-INF, INF))
            band = _bounds(level.band)
            if _intersect(band, (lo, True, hi, True)) is None:
                why.append(f"{program.band_of} is always in [{fmt(lo)}, {fmt(hi)}], outside the band {_show(band)}")
        else:
            for req in level.requires:
                why += _unreachable(req, ranges)
        if why:
            findings.append(Finding("warning", path, f"level {level.key} is unreachable: " + "; ".join(why)))
            if program.selection == "ladder" and blocked_below is None:
                blocked_below = level.key
        elif program.selection == "ladder" and blocked_below is not None:
            findings.append(Finding("warning", path, f"level {level.key} is unreachable: the ladder stops at {blocked_below}"))
        if program.selection == "bands":
            findings += _sub_class_findings(program, i, level)

    if program.selection == "bands":
        findings += _band_findings(program, ranges)

    # levels with no benefits
    for i, level in enumerate(program.levels):
        if not program.benefits_of(level.key):
            findings.append(Finding("warning", f"levels[{i}] ({level.key})", f"level {level.key} has no benefits"))

    # metrics no value uses
    used = {m for k in program.values if isinstance(program.value_spec(k), AggregateSpec) for m in program.value_spec(k).metric}
    for metric in program.metrics:
        if metric not in used:
            findings.append(Finding("warning", f"metrics.{metric}", f"metric '{metric}' is not used by any value"))
    return findings


def _band_findings(program: Program, ranges: dict[str, Interval]) -> list[Finding]:
    findings: list[Finding] = []
    bands = [(lv.key, _bounds(lv.band)) for lv in program.levels if lv.band is not None]
    for a in range(len(bands)):
        for b in range(a + 1, len(bands)):
            both = _intersect(bands[a][1], bands[b][1])
            if both is not None:
                findings.append(Finding("error", "levels", f"bands of {bands[a][0]} and {bands[b][0]} overlap on {_show(both)}"))
    lo, hi = ranges.get(program.band_of or "", (-INF, INF))
    for gap in _gaps((lo, True, hi, True), [b for _, b in bands]):
        findings.append(Finding("error", "levels", f"no level's band covers {program.band_of} in {_show(gap)}"))
    return findings


def _sub_class_findings(program: Program, i: int, level: LevelSpec) -> list[Finding]:
    if not level.sub_classes or level.band is None:
        return []
    path = f"levels[{i}] ({level.key}).sub_classes"
    band = _bounds(level.band)
    parts = [(_intersect(band, _op_bounds(s.op, s.value)), s.key) for s in level.sub_classes]
    findings: list[Finding] = []
    for a in range(len(parts)):
        for b in range(a + 1, len(parts)):
            if parts[a][0] and parts[b][0]:
                both = _intersect(parts[a][0], parts[b][0])
                if both is not None:
                    findings.append(Finding("warning", path, f"sub-classes {parts[a][1]} and {parts[b][1]} overlap on {_show(both)}; the first listed wins"))
    gaps = _gaps(band, [p for p, _ in parts])
    # One explicit sub-class plus a default is a deliberate "everything else"; more than one
    # with a hole between them is a gap in the source the default silently fills.
    if gaps and (level.default_sub_class is None or len(level.sub_classes) > 1):
        for gap in gaps:
            if level.default_sub_class is None:
                findings.append(Finding("error", path, f"level {level.key}: {program.band_of} in {_show(gap)} matches no sub-class and there is no default"))
            else:
                findings.append(Finding("warning", path, f"level {level.key}: {program.band_of} in {_show(gap)} matches no sub-class; it gets the default '{level.default_sub_class}'"))
    return findings


def lint_text(text: str, source: str = "") -> list[Finding]:
    from .definition import load_text

    try:
        program = load_text(text, source)
    except DefinitionError as exc:
        return [Finding("error", path, message) for path, message in exc.errors]
    return lint(program)
