"""Which level a member is eligible for, and how the held level moves towards it."""

from __future__ import annotations

import datetime as dt
from dataclasses import dataclass

from .definition import LevelSpec, Program
from .rules import Env, all_met, band_contains, compare, met


def eligible(program: Program, env: Env) -> str | None:
    """The level the data supports right now, before any transition policy."""
    if program.rated_when and not all_met(program.rated_when, env):
        return None
    if program.selection == "ladder":
        reached = None
        for level in program.levels:
            if not all_met(level.requires, env):
                break
            reached = level.key
        return reached
    if program.selection == "highest_met":
        prerequisite = program.level(program.prerequisite)
        if prerequisite is not None and not all_met(prerequisite.requires, env):
            return None
        for level in reversed(program.levels):
            if all_met(level.requires, env):
                return level.key
        return None
    value = env[program.band_of]  # type: ignore[index]
    for level in reversed(program.levels):
        if level.band is not None and band_contains(level.band, value):
            return level.key
    return None


@dataclass(frozen=True)
class Held:
    """What the standing says before this evaluation."""

    level: str | None
    sub_class: str | None = None
    status: str = "active"
    level_since: dt.date | None = None
    promoted_on: dt.date | None = None
    locked: bool = False  # staff set the level; evaluation does not move it
    blacklist_exempt: bool = False  # staff lifted a blacklisting; its signals are ignored for now


@dataclass(frozen=True)
class Decision:
    level: str | None
    level_since: dt.date | None
    promoted_on: dt.date | None
    direction: str  # up | down | same
    held_back_by: str | None = None  # protection | consecutive | blacklisted


def decide(program: Program, held: Held, candidate: str | None, earlier: list[str | None], as_of: dt.date) -> Decision:
    """Apply the transition policy.

    ``earlier`` are the eligible levels of the previous periods, most recent first (only
    needed when the program asks for N consecutive periods).
    """
    current = held.level
    keep = Decision(current, held.level_since, held.promoted_on, "same")
    if held.status == "blacklisted":
        return Decision(current, held.level_since, held.promoted_on, "same", "blacklisted")
    if held.locked:
        return Decision(current, held.level_since, held.promoted_on, "same", "locked")
    if candidate == current:
        return keep
    if current is None:  # first rating: immediate, counts as a promotion
        return Decision(candidate, as_of, as_of, "up")
    policy = program.transitions
    needed = policy.consecutive_periods - 1
    if needed and (len(earlier) < needed or any(e != candidate for e in earlier[:needed])):
        return Decision(current, held.level_since, held.promoted_on, "same", "consecutive")
    if program.rank(candidate) > program.rank(current):
        return Decision(candidate, as_of, as_of, "up")
    protected = policy.protection_days and held.promoted_on is not None
    if protected and as_of < held.promoted_on + dt.timedelta(days=policy.protection_days):  # type: ignore[operator]
        return Decision(current, held.level_since, held.promoted_on, "same", "protection")
    return Decision(candidate, as_of, held.promoted_on, "down")


def protected_until(program: Program, promoted_on: dt.date | None) -> dt.date | None:
    """Last day on which a downgrade is still held back."""
    days = program.transitions.protection_days
    if not days or promoted_on is None:
        return None
    return promoted_on + dt.timedelta(days=days - 1)


def sub_class(level: LevelSpec | None, value: float, held: Held) -> str | None:
    """Sub-class within the held level; a retained sub-class is kept while its rule holds."""
    if level is None or not (level.sub_classes or level.default_sub_class):
        return None
    if held.level == level.key and held.sub_class is not None:
        for rule in level.retention:
            if rule.sub_class == held.sub_class and compare(value, rule.op, rule.value):
                return held.sub_class
    for sc in level.sub_classes:
        if compare(value, sc.op, sc.value):
            return sc.key
    return level.default_sub_class


def blacklist_hits(program: Program, env: Env) -> list:
    return [r for r in program.blacklist if met(r, env)]
