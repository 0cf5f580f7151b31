"""The member's side of the ledger: list, claim, submit for review; staff review and grants.

Every state change is one conditional UPDATE (``... WHERE state = 'available'``), so of many
concurrent claims of one item exactly one succeeds, and a claim racing a revocation ends in
one state or the other, never both.
"""

from __future__ import annotations

import datetime as dt
import uuid
from typing import Any

from sqlalchemy import func, select, update
from sqlalchemy.orm import Session

from ..models import BenefitItem, Member, Notification
from . import NotFound, ServiceError
from . import programs as programs_service
from .audit import record

BI = BenefitItem.__table__


class Conflict(ServiceError):
    status = 409


def item_json(item: BenefitItem) -> dict[str, Any]:
    return {
        "id": item.id,
        "key": item.benefit_key,
        "level": item.level,
        "tier": item.tier,
        "mode": item.mode,
        "state": item.state,
        "quantity": item.quantity,
        "amount": item.amount,
        "value": item.value,
        "due_on": item.due_on.isoformat(),
        "issued_on": item.issued_on.isoformat() if item.issued_on else None,
        "claimed_on": item.claimed_on.isoformat() if item.claimed_on else None,
        "expires_on": item.expires_on.isoformat() if item.expires_on else None,
        "review_note": item.review_note,
        "granted_by": item.granted_by,
        "reason": item.reason,
    }


def items_of(session: Session, member_id: int, program_keys: list[str]) -> dict[str, list[BenefitItem]]:
    """All ledger rows of a member, by program, newest first (one query)."""
    out: dict[str, list[BenefitItem]] = {k: [] for k in program_keys}
    for item in session.scalars(
        select(BenefitItem)
        .where(BenefitItem.member_id == member_id, BenefitItem.program_key.in_(program_keys))
        .order_by(BenefitItem.due_on.desc(), BenefitItem.id.desc())
    ):
        out[item.program_key].append(item)
    return out


def _own_item(session: Session, member_id: int, item_id: int) -> BenefitItem:
    item = session.get(BenefitItem, item_id)
    if item is None or item.member_id != member_id:
        raise NotFound(f"no benefit item {item_id} for this member")  # same answer for another's item
    return item


def _transition(session: Session, member_id: int, item_id: int, expect: str, mode: str, **values: Any) -> BenefitItem:
    result = session.execute(
        update(BI)
        .where(BI.c.id == item_id, BI.c.member_id == member_id, BI.c.state == expect, BI.c.mode == mode)
        .values(**values)
    )
    item = _own_item(session, member_id, item_id)
    if result.rowcount != 1:
        if item.mode != mode:
            raise Conflict(f"benefit '{item.benefit_key}' is not a {mode} item", {"state": item.state})
        raise Conflict(f"benefit '{item.benefit_key}' is no longer available (it is {item.state})", {"state": item.state})
    session.refresh(item)
    return item


def claim(session: Session, member_id: int, item_id: int, today: dt.date) -> BenefitItem:
    """Claim one's own available claim item, once."""
    return _transition(session, member_id, item_id, "available", "claim", state="claimed", claimed_on=today)


def submit_review(session: Session, member_id: int, item_id: int, text: str, today: dt.date) -> BenefitItem:
    """Send a review item (e.g. the case showcase) to staff."""
    text = (text or "").strip()
    if not text:
        raise ServiceError("describe your request for the reviewers")
    if len(text) > 4000:
        raise ServiceError("the request is longer than 4,000 characters")
    item = _own_item(session, member_id, item_id)
    program, _ = programs_service.definition(session, item.program_key)
    spec = next((b for b in program.benefits_of(item.level or "") if b.key == item.benefit_key and b.tier == item.tier), None)
    if spec is not None and spec.limit:
        # Serialise a member's submissions (PostgreSQL row lock; SQLite's write lock does it).
        session.get(Member, member_id, with_for_update=True, populate_existing=True)
        used = session.scalar(
            select(func.count()).select_from(BI).where(
                BI.c.member_id == member_id, BI.c.program_key == item.program_key, BI.c.benefit_key == item.benefit_key,
                BI.c.state.in_(("pending_review", "issued")), BI.c.id != item_id))
        if used >= spec.limit:
            raise Conflict(f"benefit '{item.benefit_key}' can be used {spec.limit} time(s) per member; it already was")
    return _transition(session, member_id, item_id, "available", "review", state="pending_review", request_text=text,
                       claimed_on=today)


def review(session: Session, staff: Member, item_id: int, approve: bool, note: str, today: dt.date) -> BenefitItem:
    """Staff approve (issued) or reject (with a reason the member sees) a pending item."""
    if staff.role not in ("staff", "admin"):
        raise ServiceError("only staff review benefit requests", status=403)
    note = (note or "").strip()
    if not approve and not note:
        raise ServiceError("a rejection needs a reason the member will see")
    item = session.get(BenefitItem, item_id)
    if item is None:
        raise NotFound(f"no benefit item {item_id}")
    before = {"state": item.state}
    values = {"state": "issued", "issued_on": today} if approve else {"state": "rejected", "closed_on": today}
    item = _transition(session, item.member_id, item_id, "pending_review", "review", reviewed_by=staff.key,
                       review_note=note or None, **values)
    record(session, staff.key, "benefit.approve" if approve else "benefit.reject", member_id=item.member_id,
           program_key=item.program_key, reason=note or None, before=before, after={"state": item.state, "item": item.id})
    session.add(Notification(member_id=item.member_id, program_key=item.program_key, kind="review_result", on=today,
                             dedup_key=f"review:{item.id}", payload={"item": item.id, "benefit": item.benefit_key,
                                                                    "approved": approve, "note": note or None},
                             created_at=dt.datetime.now(dt.UTC)))
    return item


def grant(session: Session, member_key: str, benefit_key: str, program_key: str, reason: str, by: str,
          today: dt.date, quantity: int = 1, amount: float | None = None) -> BenefitItem:
    """A manual reward by staff: an issued ledger row with who and why, audited."""
    from .standings import member_by_key

    reason = (reason or "").strip()
    if not reason:
        raise ServiceError("a grant needs a reason")
    if quantity < 1:
        raise ServiceError("quantity must be at least 1")
    if amount is not None and amount < 0:
        raise ServiceError("amount cannot be negative")
    from .staff import require_staff

    staff = require_staff(session, by)
    member = member_by_key(session, member_key)
    programs_service.definition(session, program_key)  # unknown program -> NotFound
    from ..models import Enrolment

    if session.get(Enrolment, (member.id, program_key)) is None:
        raise NotFound(f"member '{member_key}' is not enrolled in program '{program_key}'")
    item = BenefitItem(member_id=member.id, program_key=program_key, level=None, tenure=None, benefit_key=benefit_key,
                       tier="grant", mode="auto", state="issued", quantity=quantity, amount=amount, value=None,
                       due_on=today, issued_on=today, period=f"grant:{uuid.uuid4().hex}", granted_by=staff.key, reason=reason,
                       created_at=dt.datetime.now(dt.UTC))
    session.add(item)
    session.flush()
    record(session, staff.key, "benefit.grant", member_id=member.id, program_key=program_key, reason=reason,
           after={"item": item.id, "benefit": benefit_key, "quantity": quantity, "amount": amount})
    session.add(Notification(member_id=member.id, program_key=program_key, kind="benefit_issued", on=today,
                             dedup_key=f"grant:{item.id}", payload={"benefit": benefit_key, "quantity": quantity,
                                                                   "amount": amount, "granted": True},
                             created_at=dt.datetime.now(dt.UTC)))
    return item


def revoke_open_items(session: Session, member_id: int, program_key: str, today: dt.date) -> int:
    """Blacklisting by staff: everything not yet the member's is revoked (money issued stays)."""
    from ..engine.ledger import level_perk

    perk = level_perk(BI)
    return session.execute(
        update(BI).where(BI.c.member_id == member_id, BI.c.program_key == program_key, BI.c.tier != "grant",
                         BI.c.state.in_(("available", "pending_review")) | perk)
        .values(state="revoked", closed_on=today)
    ).rowcount or 0
