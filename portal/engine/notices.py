"""Notifications an evaluation sends: level up/down with reasons, benefits, blacklisting, and
warnings *before* a downgrade - saying what must be done by when to keep the level."""

from __future__ import annotations

import datetime as dt
from typing import Any

from .definition import Program
from .rules import Env, downgrade_reasons
from .transitions import Held, decide, eligible, protected_until
from .windows import month_end


def note(kind: str, program: str, on: dt.date, dedup: str, **payload: Any) -> dict[str, Any]:
    return {"kind": kind, "program_key": program, "on": on, "dedup_key": dedup[:160], "payload": payload}


def level_notes(program: Program, stored: Held, outcome: Any, as_of: dt.date) -> list[dict[str, Any]]:
    out: list[dict[str, Any]] = []
    key = program.key
    if outcome.status == "blacklisted" and stored.status != "blacklisted":
        out.append(note("blacklisted", key, as_of, f"blacklisted:{key}:{as_of}", reasons=outcome.blacklist_reasons))
        return out
    before, after = program.rank(stored.level), program.rank(outcome.level)
    if after > before:
        out.append(note("level_up", key, as_of, f"level:{key}:{as_of}:{outcome.level}",
                        **{"from": stored.level, "to": outcome.level}))
    elif after < before:
        out.append(note("level_down", key, as_of, f"level:{key}:{as_of}:{outcome.level}",
                        **{"from": stored.level, "to": outcome.level, "reasons": outcome.reasons}))
    return out


def warnings(program: Program, outcome: Any, candidate: str | None, as_of: dt.date,
             forecast_env: Env | None) -> list[dict[str, Any]]:
    """Warnings before a downgrade: a protection period about to end while the data supports a
    lower level; a first period below the level under an N-consecutive-periods rule; or (a
    forecast) the data as it stands would lose the level within ``warn_days``."""
    if outcome.status == "blacklisted" or outcome.level is None:
        return []
    key, level = program.key, outcome.level
    warn_days = program.transitions.warn_days
    if outcome.held_back_by == "protection":
        last = protected_until(program, outcome.promoted_on)
        if last is not None and (last - as_of).days < max(warn_days, 1):
            return [note("downgrade_warning", key, as_of, f"warn:{key}:protection:{level}@{outcome.promoted_on}",
                         reason="protection_ends", level=level, to=candidate, by=(last + dt.timedelta(days=1)).isoformat(),
                         failing=downgrade_reasons(program, level, candidate, outcome.env))]
        return []
    if outcome.held_back_by == "consecutive" and program.rank(candidate) < program.rank(level):
        by = month_end(as_of, -1) if program.transitions.period == "month" else as_of + dt.timedelta(days=1)
        return [note("downgrade_warning", key, as_of, f"warn:{key}:consecutive:{as_of}", reason="consecutive",
                     level=level, to=candidate, by=by.isoformat(),
                     failing=downgrade_reasons(program, level, candidate, outcome.env))]
    if forecast_env is None or not warn_days:
        return []
    on = as_of + dt.timedelta(days=warn_days)
    held = Held(level, outcome.sub_class, outcome.status, outcome.level_since, outcome.promoted_on)
    target = eligible(program, forecast_env)
    decision = decide(program, held, target, [], on)
    if decision.direction != "down":
        return []
    year, week, _ = as_of.isocalendar()
    return [note("downgrade_warning", key, as_of, f"warn:{key}:forecast:{level}@{outcome.level_since}:{year}W{week}",
                 reason="forecast", level=level, to=decision.level, by=on.isoformat(),
                 failing=downgrade_reasons(program, level, decision.level, forecast_env))]
