"""Requirements: whether they are met, and the explainable rows shown to members and staff."""

from __future__ import annotations

import operator
from typing import Any

from .definition import AggregateSpec, Band, LevelSpec, Program, Requirement, dependencies

Env = dict[str, float]

_OPS = {
    ">=": operator.ge,
    ">": operator.gt,
    "<=": operator.le,
    "<": operator.lt,
    "=": operator.eq,
    "!=": operator.ne,
}


def compare(actual: float, op: str, required: float) -> bool:
    return _OPS[op](actual, required)


def number(v: float | None) -> float | int | None:
    """JSON-friendly: 22 rather than 22.0."""
    if v is None:
        return None
    return int(v) if float(v).is_integer() and abs(v) < 2**53 else v


def applies(req: Requirement, env: Env) -> bool:
    return req.when is None or compare(env[req.when.value], req.when.op, req.when.required)


def met(req: Requirement, env: Env) -> bool:
    if not applies(req, env):
        return True  # a conditional task that does not apply now
    if req.any is not None:
        return any(met(c, env) for c in req.any)
    if req.all is not None:
        return all(met(c, env) for c in req.all)
    return compare(env[req.value_key], req.op, req.required)  # type: ignore[arg-type]


def all_met(reqs: list[Requirement], env: Env) -> bool:
    return all(met(r, env) for r in reqs)


def band_contains(band: Band, value: float) -> bool:
    if band.min is not None and not compare(value, band.min_op, band.min):
        return False
    return band.max is None or compare(value, band.max_op, band.max)


# -- explanation rows ------------------------------------------------------------------------


def metric_of(program: Program, value_key: str) -> str:
    """The metric names behind a value, e.g. ``video+live``."""
    return program.derived("metric_of", value_key, lambda: _metric_of(program, value_key))


def _metric_of(program: Program, value_key: str) -> str:
    seen: list[str] = []

    def walk(key: str) -> None:
        spec = program.value_spec(key)
        if isinstance(spec, AggregateSpec):
            seen.extend(m for m in spec.metric if m not in seen)
        else:
            for dep in sorted(dependencies(spec)):
                walk(dep)

    walk(value_key)
    return "+".join(seen)


def window_of(program: Program, value_key: str) -> str | None:
    return program.derived("window_of", value_key, lambda: _window_of(program, value_key))


def _window_of(program: Program, value_key: str) -> str | None:
    spec = program.value_spec(value_key)
    if isinstance(spec, AggregateSpec):
        return "latest" if spec.agg == "latest" else spec.window
    windows = {window_of(program, d) for d in dependencies(spec)}
    return windows.pop() if len(windows) == 1 else None


def leaf_row(program: Program, level: str | None, req: Requirement, env: Env, group: list[str]) -> dict[str, Any]:
    key = req.value_key
    row = {
        "level": level,
        "key": req.key,
        "metric": metric_of(program, key),
        "actual": number(env.get(key, 0.0)),
        "op": req.op,
        "required": number(req.required),
        "met": compare(env.get(key, 0.0), req.op, req.required),  # type: ignore[arg-type]
        "window": window_of(program, key),
    }
    if key != req.key:
        row["value"] = key
    if group:
        row["group"] = "/".join(group)  # rows() sets group_mode from the innermost group
    return row


def rows(program: Program, level: str | None, reqs: list[Requirement], env: Env, group: list[str] | None = None) -> list[dict[str, Any]]:
    """Flatten requirements into rows; conditional ones that do not apply now are left out."""
    out: list[dict[str, Any]] = []
    for req in reqs:
        if not applies(req, env):
            continue
        if req.children:
            inner = rows(program, level, req.children, env, (group or []) + [req.key])
            mode = "any" if req.any is not None else "all"
            for r in inner:
                r.setdefault("group_mode", mode)
            out += inner
        else:
            out.append(leaf_row(program, level, req, env, group or []))
    return out


def failed(program: Program, level: str | None, reqs: list[Requirement], env: Env) -> list[dict[str, Any]]:
    """Rows of every failed requirement (for an unmet any-group: each of its options)."""
    out: list[dict[str, Any]] = []
    for req in reqs:
        if met(req, env):
            continue
        if req.children:
            out += failed(program, level, req.children, env)
        else:
            out.append(leaf_row(program, level, req, env, []))
    return out


def band_row(program: Program, level: LevelSpec, env: Env) -> dict[str, Any] | None:
    band = level.band
    if band is None or band.min is None:
        return None
    key = program.band_of or ""
    actual = env.get(key, 0.0)
    return {
        "level": level.key,
        "key": key,
        "metric": metric_of(program, key),
        "actual": number(actual),
        "op": band.min_op,
        "required": number(band.min),
        "met": compare(actual, band.min_op, band.min),
        "window": window_of(program, key),
    }


def level_rows(program: Program, level_key: str, env: Env) -> list[dict[str, Any]]:
    level = program.level(level_key)
    if level is None:
        return []
    if program.selection == "bands":
        row = band_row(program, level, env)
        return [row] if row else []
    return rows(program, level.key, level.requires, env)


def next_level(program: Program, level_key: str | None) -> str | None:
    keys = program.level_keys
    if level_key is None:
        return program.prerequisite or keys[0]
    i = keys.index(level_key) if level_key in keys else -1
    return keys[i + 1] if 0 <= i < len(keys) - 1 else None


def requirements(program: Program, level_key: str | None, env: Env) -> list[dict[str, Any]]:
    """The requirements of the current level and of the next one, as shown to the member."""
    out: list[dict[str, Any]] = []
    if level_key is not None:
        out += level_rows(program, level_key, env)
    nxt = next_level(program, level_key)
    if nxt is not None:
        out += level_rows(program, nxt, env)
    return out


def downgrade_reasons(program: Program, old: str | None, new: str | None, env: Env) -> list[dict[str, Any]]:
    """Every failed requirement of the levels lost, from the lowest lost level up."""
    lo, hi = program.rank(new), program.rank(old)
    out: list[dict[str, Any]] = []
    for level in program.levels[lo + 1 : hi + 1]:
        if program.selection == "bands":
            row = band_row(program, level, env)
            if row and not row["met"]:
                out.append(row)
        else:
            out += failed(program, level.key, level.requires, env)
    return out
