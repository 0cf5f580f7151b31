"""What an evaluation outcome makes due in the benefit ledger, and what it tells the member.

Pure functions over one member's before/after state: the run turns the result into batched
inserts (idempotent: every item has a period key under a unique constraint) and updates.

Periods (the idempotency keys):
- basic benefits on entering a level: ``LV3@2026-10-01`` (the level and its tenure start);
- a benefit due every N days: ``LV3@2026-10-01#2`` (the third period of that tenure);
- reward benefits: ``LV3@2026-10-01/r0`` (once per reward cycle of that tenure);
- quarterly benefits: ``2026Q3``. A benefit limited per member (one case showcase) is
  enforced when the member uses it (services.benefits), so an unused one comes back.
"""

from __future__ import annotations

import datetime as dt
from dataclasses import dataclass, field
from typing import Any

from .definition import BenefitSpec, Program
from .windows import month_end


def level_perk(items):
    """SQL condition on benefit_items: a level perk - issued automatically, no money, no
    expiry of its own (a tag, a booth). Perks end with their tenure; money stays issued."""
    c = items.c
    return (c.state == "issued") & (c.mode == "auto") & c.amount.is_(None) & c.expires_on.is_(None)


@dataclass
class LedgerPlan:
    items: list[dict[str, Any]] = field(default_factory=list)
    notifications: list[dict[str, Any]] = field(default_factory=list)
    close_tenure: bool = False  # revoke open items / end auto items of other tenures
    reopen_tenure: bool = False  # a same-day re-run undid a tenure change: restore what it closed
    revoke_all: bool = False  # blacklisted: revoke everything not yet the member's


def _item(spec: BenefitSpec, level: str, tenure: dt.date, period: str, due: dt.date, *, tier: str | None = None,
          quantity: int | None = None, amount: float | None = None, key: str | None = None) -> dict[str, Any]:
    state = "issued" if spec.mode == "auto" else "available"
    return {
        "level": level,
        "tenure": tenure,
        "benefit_key": key or spec.key,
        "tier": tier or spec.tier,
        "mode": spec.mode,
        "state": state,
        "quantity": quantity if quantity is not None else spec.quantity,
        "amount": amount if amount is not None else (spec.value * spec.quantity if spec.value and spec.mode != "auto" else None),
        "value": spec.value,
        "due_on": due,
        "issued_on": due if state == "issued" else None,
        "expires_on": due + dt.timedelta(days=spec.validity_days) if spec.validity_days else None,
        "period": period,
    }


def quarter_of(day: dt.date) -> str:
    return f"{day.year}Q{(day.month - 1) // 3 + 1}"


def is_quarter_end(day: dt.date) -> bool:
    return day.month % 3 == 0 and day == month_end(day)


def plan(program: Program, before: Any, after: Any, as_of: dt.date, last_as_of: dt.date | None,
         values: dict[str, Any], reward_met_before: bool | None, stored: Any = None) -> LedgerPlan:
    """``before``/``after`` have level, level_since and status; ``last_as_of`` is the date
    the member was last evaluated (None: never). ``stored`` is the standing as stored when
    this is a same-day re-run: if that run changed the tenure and this one does not, its
    items are closed and what it closed is restored."""
    out = LedgerPlan()
    if stored is not None and (stored.level, stored.level_since) != (after.level, after.level_since) \
            and (stored.level, stored.level_since) != (before.level, before.level_since):
        out.close_tenure = True
        out.reopen_tenure = (after.level, after.level_since) == (before.level, before.level_since)
    level, since = after.level, after.level_since
    if after.status == "blacklisted":
        if before.status != "blacklisted":
            out.revoke_all = True
        return out
    new_tenure = (level, since) != (before.level, before.level_since)
    if new_tenure and before.level is not None:
        out.close_tenure = True
    if level is None or since is None:
        return out
    tenure_key = f"{level}@{since.isoformat()}"
    days_in = (as_of - since).days
    for spec in program.benefits_of(level):
        if spec.tier == "reward":
            continue
        if spec.schedule == "quarterly":
            if is_quarter_end(as_of) and spec.amount_of and spec.amount_percent:
                amount = round(float(values.get(spec.amount_of) or 0) * spec.amount_percent / 100, 2)
                if amount > 0:
                    out.items.append(_item(spec, level, since, quarter_of(as_of), as_of + dt.timedelta(days=1), amount=amount))
            continue
        if spec.period_days:
            idx = days_in // spec.period_days
            start = since + dt.timedelta(days=idx * spec.period_days)
            if new_tenure or last_as_of is None or last_as_of < start:
                out.items.append(_item(spec, level, since, f"{tenure_key}#{idx}", start))
            if spec.makeup and (days_in + 1) % spec.period_days == 0:
                done = float(values.get(spec.makeup.get("counted_by", ""), 0) or 0)
                missing = max(0, spec.quantity - int(done))
                if missing:
                    per = float(spec.makeup.get("per_missing", 0))
                    out.items.append(_item(spec, level, since, f"{tenure_key}#{idx}", as_of, quantity=missing,
                                           amount=missing * per, key=spec.makeup.get("benefit", spec.key + "_makeup"),
                                           tier="basic"))
                    out.items[-1].update(mode="auto", state="issued", issued_on=as_of, expires_on=None)
            continue
        if new_tenure:
            out.items.append(_item(spec, level, since, tenure_key, since if since <= as_of else as_of))
    if after.reward_met:
        cycle = program.transitions.reward_cycle_days
        idx = max(days_in, 0) // cycle
        start = since + dt.timedelta(days=idx * cycle)
        if new_tenure or not reward_met_before or last_as_of is None or last_as_of < start:
            for spec in program.benefits_of(level):
                if spec.tier == "reward":
                    out.items.append(_item(spec, level, since, f"{tenure_key}/r{idx}", as_of))
    return out
