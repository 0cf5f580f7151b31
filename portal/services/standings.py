"""A member's standing as shown to members, staff and the API (CONTRACT.md's JSON shape).

Reads stored standings, never evaluates: requirements are explained with the values the
latest evaluation decided on (services/explain.py).
"""

from __future__ import annotations

import datetime as dt
from typing import Any

from sqlalchemy import select
from sqlalchemy.orm import Session

from ..engine import rules
from ..engine.definition import Program
from ..models import Enrolment, LevelChange, Member, Standing
from . import NotFound, explain
from . import programs as programs_service


def member_by_key(session: Session, key: str) -> Member:
    member = session.scalar(select(Member).where(Member.key == key))
    if member is None:
        raise NotFound(f"unknown member '{key}'")
    return member


def standing_json(program: Program, member: Member, standing: Standing | None, last_change: LevelChange | None,
                  items: list | None = None, values: dict[str, Any] | None = None,
                  as_of: dt.date | None = None) -> dict[str, Any]:
    """``values``/``as_of``: what the standing is explained with (explain.values_of / as_of)."""
    from .benefits import item_json

    level = standing.level if standing else None
    as_of = as_of or (standing.as_of if standing else None)
    return {
        "member": member.key,
        "program": program.key,
        "as_of": as_of.isoformat() if as_of else None,
        "level": level,
        "rank": program.rank(level) + 1 if level is not None else None,
        "sub_class": standing.sub_class if standing else None,
        "category": standing.category if standing else None,
        "score": standing.score if standing else None,
        "status": standing.status if standing else "active",
        "requirements": rules.requirements(program, level, values) if standing is not None and values is not None else [],
        "next_level": rules.next_level(program, level),
        "reward_tasks_met": standing.reward_met if standing else None,
        "last_change": change_json(last_change) if last_change else None,
        "benefits": [item_json(i) for i in items or []],
    }


def change_json(change: LevelChange) -> dict[str, Any]:
    out: dict[str, Any] = {
        "from": change.from_level,
        "to": change.to_level,
        "on": change.on.isoformat(),
        "direction": change.direction,
        "cause": change.cause,
        "reasons": change.reasons,
    }
    if change.from_sub_class != change.to_sub_class:
        out["from_sub_class"], out["to_sub_class"] = change.from_sub_class, change.to_sub_class
    if change.from_status != change.to_status:
        out["from_status"], out["to_status"] = change.from_status, change.to_status
    return out


def enrolled_programs(session: Session, member: Member) -> list[str]:
    return list(
        session.scalars(select(Enrolment.program_key).where(Enrolment.member_id == member.id).order_by(Enrolment.program_key))
    )


def member_standings(session: Session, member_key: str, program_key: str | None = None) -> list[dict[str, Any]]:
    """The member's standing in one program, or in every program it is enrolled in."""
    member = member_by_key(session, member_key)
    enrolled = enrolled_programs(session, member)
    if program_key is not None:
        programs_service.definition(session, program_key)  # unknown program -> NotFound
        if program_key not in enrolled:
            raise NotFound(f"member '{member_key}' is not enrolled in program '{program_key}'")
        enrolled = [program_key]
    stored = {
        s.program_key: s
        for s in session.scalars(select(Standing).where(Standing.member_id == member.id, Standing.program_key.in_(enrolled)))
    }
    latest: dict[str, LevelChange] = {}
    for change in session.scalars(
        select(LevelChange)
        .where(LevelChange.member_id == member.id, LevelChange.program_key.in_(enrolled))
        .order_by(LevelChange.on.desc(), LevelChange.id.desc())
    ):
        latest.setdefault(change.program_key, change)
    from .benefits import items_of

    items = items_of(session, member.id, enrolled)
    out = []
    for key in enrolled:
        program, _ = programs_service.definition(session, key)
        st, evaluated = stored.get(key), explain.evaluated(session, key)
        out.append(standing_json(program, member, st, latest.get(key), items[key],
                                 explain.values_of(session, program, member.id, st, evaluated), explain.as_of(st, evaluated)))
    return out
