"""What-if simulations of a program definition: scale every threshold by a percentage, or
change one threshold, evaluate the modified definition as a dry run (nothing is written) and
report who would move up or down; an admin can publish the modified definition.

A modified definition is built from the parsed one's data (``program.model_dump()``), changed,
and validated again with ``parse_program``.
"""

from __future__ import annotations

import copy
import datetime as dt
import re
from collections import defaultdict
from dataclasses import dataclass, field
from typing import Any

import yaml
from sqlalchemy import func, select
from sqlalchemy.orm import Session

from ..engine.definition import DefinitionError, Program, parse_program
from ..engine.run import Summary, evaluate
from ..models import Standing
from . import ServiceError, explain
from . import programs as programs_service
from .audit import record
from .staff import require_staff

MIN_PERCENT, MAX_PERCENT = -90.0, 100.0
MEMBER_LIST = 200
SCALED_OPS = (">=", ">", "<=", "<")  # "= 1" (a task done) is not a threshold to scale
_PATH_RE = re.compile(r"^levels\[(\d+)\]((?:\.(?:requires|reward_tasks|any|all)\[\d+\])+|\.band\.(?:min|max))$")


@dataclass(frozen=True)
class Change:
    """The modification: ``scale`` by ``percent``, or set the threshold at ``path`` to ``value``."""

    mode: str  # scale | set
    percent: float | None = None
    path: str | None = None
    value: float | None = None

    def describe(self) -> str:
        if self.mode == "scale":
            return f"all thresholds {self.percent:+g}%"
        return f"{self.path} = {_num(self.value)}"


@dataclass
class Threshold:
    path: str  # levels[2].requires[0], levels[1].band.min
    level: str
    key: str  # requirement key, or band_of.min / .max
    op: str
    required: float


def thresholds(program: Program) -> list[Threshold]:
    """Every threshold one can change on its own: leaf requirements with a comparison, and
    band bounds."""
    out: list[Threshold] = []

    def walk(reqs: list[Any], path: str, level: str) -> None:
        for j, r in enumerate(reqs):
            if r.children:
                walk(r.children, f"{path}[{j}].{'any' if r.any is not None else 'all'}", level)
            elif r.op is not None and r.required is not None:
                out.append(Threshold(f"{path}[{j}]", level, r.key, r.op, r.required))

    for i, lv in enumerate(program.levels):
        if lv.band is not None:
            if lv.band.min is not None:
                out.append(Threshold(f"levels[{i}].band.min", lv.key, f"{program.band_of}", lv.band.min_op, lv.band.min))
            if lv.band.max is not None:
                out.append(Threshold(f"levels[{i}].band.max", lv.key, f"{program.band_of}", lv.band.max_op, lv.band.max))
        walk(lv.requires, f"levels[{i}].requires", lv.key)
        walk(lv.reward_tasks, f"levels[{i}].reward_tasks", lv.key)
    return out


def _scale_reqs(reqs: list[dict[str, Any]], factor: float) -> None:
    for r in reqs:
        for group in ("any", "all"):
            if r.get(group):
                _scale_reqs(r[group], factor)
        if r.get("op") in SCALED_OPS and r.get("required") is not None:
            r["required"] = _round(r["required"] * factor)


def _round(v: float) -> float:
    return round(v, 6)


def modified_data(program: Program, change: Change) -> dict[str, Any]:
    """The definition's data with the change applied (a deep copy; the program is untouched)."""
    data = copy.deepcopy(program.model_dump())
    if change.mode == "scale":
        if change.percent is None or not MIN_PERCENT <= change.percent <= MAX_PERCENT:
            raise ServiceError(f"the percentage must be between {MIN_PERCENT:g} and {MAX_PERCENT:g}")
        factor = 1 + change.percent / 100
        for lv in data["levels"]:
            _scale_reqs(lv.get("requires") or [], factor)
            _scale_reqs(lv.get("reward_tasks") or [], factor)
            band = lv.get("band")
            if band:
                for bound in ("min", "max"):
                    if band.get(bound) is not None:
                        band[bound] = _round(band[bound] * factor)
            for sub in lv.get("sub_classes") or []:  # sub-classes inside a band move with it
                sub["value"] = _round(sub["value"] * factor)
            for ret in lv.get("retention") or []:
                ret["value"] = _round(ret["value"] * factor)
        return data
    if change.mode == "set":
        if change.value is None:
            raise ServiceError("give the new required value")
        known = {t.path for t in thresholds(program)}
        if change.path not in known:
            raise ServiceError(f"program '{program.key}' has no threshold '{change.path}'")
        m = _PATH_RE.match(change.path or "")
        if m is None:  # pragma: no cover - every known path matches
            raise ServiceError(f"bad threshold path '{change.path}'")
        node: Any = data["levels"][int(m.group(1))]
        rest = m.group(2)
        if rest.startswith(".band."):
            node["band"][rest.rsplit(".", 1)[1]] = float(change.value)
            return data
        for name, idx in re.findall(r"\.(\w+)\[(\d+)\]", rest):
            node = node[name][int(idx)]
        node["required"] = float(change.value)
        return data
    raise ServiceError("choose 'scale' (all thresholds by a percentage) or 'set' (one threshold)")


def build(program: Program, change: Change) -> Program:
    """The modified definition, validated like any published one."""
    try:
        return parse_program(modified_data(program, change), f"{program.key} (simulated)")
    except DefinitionError as exc:
        raise ServiceError(f"the modified definition is not valid: {exc}") from None


@dataclass
class Move:
    member: str
    from_level: str | None
    to_level: str | None
    direction: str  # up | down
    anyway: bool  # the current definition would move this member the same way too


@dataclass
class LevelMoves:
    level: str | None
    members: int  # holding it now
    up: int = 0  # would move up from it
    down: int = 0  # would move down from it
    arriving: int = 0  # would move into it


@dataclass
class Simulation:
    program: Program
    version: int
    change: Change
    as_of: dt.date
    evaluated: int
    upgraded: int
    downgraded: int
    baseline_upgraded: int
    baseline_downgraded: int
    levels: list[LevelMoves]
    moves: list[Move]  # the first MEMBER_LIST
    total_moves: int
    truncated: bool  # more changes than the run lists: per-level counts are of the listed ones
    sub_class_changes: int = 0
    notes: list[str] = field(default_factory=list)


def default_as_of(session: Session, program_key: str) -> dt.date:
    """The date of the program's latest evaluation (so only the change makes a difference)."""
    return explain.evaluated(session, program_key).as_of \
        or session.scalar(select(func.max(Standing.as_of)).where(Standing.program_key == program_key)) \
        or dt.date.today()


def simulate(session: Session, program_key: str, change: Change, as_of: dt.date | None = None) -> Simulation:
    """Dry-run the current and the modified definition as of ``as_of``; nothing is written."""
    current, version = programs_service.definition(session, program_key)
    modified = build(current, change)
    as_of = as_of or default_as_of(session, program_key)
    baseline = evaluate(session, current, version, as_of, dry_run=True)
    result = evaluate(session, modified, version, as_of, dry_run=True)
    return _report(session, current, version, change, as_of, baseline, result)


def _report(session: Session, program: Program, version: int, change: Change, as_of: dt.date, baseline: Summary,
            result: Summary) -> Simulation:
    held = dict(session.execute(select(Standing.level, func.count()).where(Standing.program_key == program.key)
                                .group_by(Standing.level)).all())
    base_moves = {(c["member"], c["to"]) for c in baseline.changes if c["direction"] != "same"}
    per: dict[str | None, LevelMoves] = {}
    for key in list(reversed(program.level_keys)) + [None]:
        per[key] = LevelMoves(key, held.get(key, 0))
    moves: list[Move] = []
    counts: dict[str, int] = defaultdict(int)
    for c in result.changes:
        if c["direction"] == "same":
            counts["sub"] += 1
            continue
        row = per.setdefault(c["from"], LevelMoves(c["from"], held.get(c["from"], 0)))
        if c["direction"] == "up":
            row.up += 1
        else:
            row.down += 1
        per.setdefault(c["to"], LevelMoves(c["to"], held.get(c["to"], 0))).arriving += 1
        moves.append(Move(c["member"], c["from"], c["to"], c["direction"], (c["member"], c["to"]) in base_moves))
    notes = []
    if baseline.upgraded or baseline.downgraded:
        notes.append(f"as of {as_of.isoformat()} the current definition itself would move "
                     f"{baseline.upgraded} up and {baseline.downgraded} down (marked 'anyway' below)")
    truncated = len(result.changes) >= Summary.CHANGE_LIST
    return Simulation(program, version, change, as_of, result.evaluated, result.upgraded, result.downgraded,
                      baseline.upgraded, baseline.downgraded, list(per.values()), moves[:MEMBER_LIST], len(moves),
                      truncated, counts["sub"], notes)


# -- publishing -------------------------------------------------------------------------------


def definition_text(program: Program) -> str:
    """YAML text of a definition (fields left at their defaults are left out)."""
    data = _tidy(program.model_dump(exclude_defaults=True))
    return yaml.safe_dump(data, allow_unicode=True, sort_keys=False, width=120)


def _tidy(v: Any) -> Any:
    if isinstance(v, dict):
        return {k: _tidy(x) for k, x in v.items()}
    if isinstance(v, list):
        return [_tidy(x) for x in v]
    if isinstance(v, float) and v.is_integer() and abs(v) < 1e15:
        return int(v)
    return v


@dataclass
class PublishResult:
    key: str
    version: int
    previous: int


def publish(session: Session, by: str, program_key: str, change: Change, reason: str) -> PublishResult:
    """Publish the modified definition as the program's new version (admin only), audited as
    ``program.publish``; the old versions are kept."""
    actor = require_staff(session, by)
    if getattr(actor, "role", None) != "admin":
        raise ServiceError("only an admin publishes program definitions", status=403)
    reason = (reason or "").strip()
    if not reason:
        raise ServiceError("a reason is required")
    if len(reason) > 2000:
        raise ServiceError("the reason is longer than 2,000 characters")
    current, version = programs_service.definition(session, program_key)
    modified = build(current, change)
    text = definition_text(modified)
    note = f"{change.describe()}: {reason}"[:500]
    published = programs_service.publish(session, text, f"staff console ({change.describe()})", by=actor.key, note=note)
    if not published.created:
        raise ServiceError("the modified definition is the same as the current version", status=409)
    record(session, actor.key, "program.publish", program_key=program_key, reason=reason,
           before={"version": version}, after={"version": published.version, "change": change.describe()})
    return PublishResult(program_key, published.version, version)


def _num(v: float | None) -> str:
    if v is None:
        return "-"
    return str(int(v)) if float(v).is_integer() else f"{v:g}"
