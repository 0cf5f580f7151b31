"""Webhooks for integrators (the CRMs of seed 002): on a level change or a benefit issued, a
signed JSON POST to each configured URL, retried with back-off, every attempt logged."""

from __future__ import annotations

import datetime as dt
import hashlib
import hmac
import json
import secrets
import urllib.error
import urllib.request
from typing import Any

from sqlalchemy import func, select
from sqlalchemy.orm import Session

from ..db import dialect_insert
from ..models import (
    BenefitItem,
    EvaluationRun,
    LevelChange,
    Member,
    WebhookDelivery,
    WebhookEndpoint,
)
from . import ServiceError

EVENTS = ("level_change", "benefit_issued")
BACKOFF = (60, 300, 1800, 7200, 21600)  # seconds after attempts 1..5; then failed
TIMEOUT = 10


def add_endpoint(session: Session, url: str, events: list[str], secret: str | None = None,
                 now: dt.datetime | None = None) -> tuple[WebhookEndpoint, str]:
    if not (url.startswith("https://") or url.startswith("http://")) or len(url) > 500:
        raise ServiceError("the URL must be http(s)://... (at most 500 characters)")
    unknown = [e for e in events if e not in EVENTS]
    if unknown or not events:
        raise ServiceError(f"events are {', '.join(EVENTS)}")
    secret = secret or secrets.token_hex(24)
    ep = WebhookEndpoint(url=url, secret=secret, events=" ".join(events), active=True,
                         created_at=now or dt.datetime.now(dt.UTC))
    session.add(ep)
    session.flush()
    return ep, secret


def sign(secret: str, body: bytes) -> str:
    return "sha256=" + hmac.new(secret.encode(), body, hashlib.sha256).hexdigest()


def enqueue_run(session: Session, run_id: int, program_key: str, as_of: dt.date, now: dt.datetime) -> int:
    """Queue the level changes and benefits of a program's evaluation of ``as_of`` (set-based
    reads; nothing when no endpoint). Everything of that date is considered, so a run resumed
    after a crash also sends what the interrupted attempt had written; each event has a key,
    so queueing again adds only what is new. Returns how many deliveries were added."""
    endpoints = list(session.scalars(select(WebhookEndpoint).where(WebhookEndpoint.active.is_(True))))
    if not endpoints:
        return 0
    events: list[tuple[str, str, dict[str, Any]]] = []
    if any("level_change" in e.events.split() for e in endpoints):
        for c, key in session.execute(select(LevelChange, Member.key).join(Member, Member.id == LevelChange.member_id)
                                      .where(LevelChange.program_key == program_key, LevelChange.on == as_of)):
            dedup = f"level_change:{c.id}:{c.to_level}:{c.to_sub_class}:{c.to_status}"
            events.append(("level_change", dedup, {
                "event": "level_change", "member": key, "program": program_key, "from": c.from_level,
                "to": c.to_level, "on": c.on.isoformat(), "direction": c.direction, "status": c.to_status,
                "reasons": c.reasons}))
    if any("benefit_issued" in e.events.split() for e in endpoints):
        since = session.scalar(select(func.min(EvaluationRun.started_at)).where(
            EvaluationRun.program_key == program_key, EvaluationRun.as_of == as_of))
        if since is not None:
            for i, key in session.execute(
                    select(BenefitItem, Member.key).join(Member, Member.id == BenefitItem.member_id)
                    .where(BenefitItem.program_key == program_key, BenefitItem.created_at >= since,
                           BenefitItem.tier != "grant")):
                events.append(("benefit_issued", f"benefit_issued:{i.id}", {
                    "event": "benefit_issued", "member": key, "program": program_key, "benefit": i.benefit_key,
                    "item": i.id, "state": i.state, "quantity": i.quantity, "amount": i.amount,
                    "due_on": i.due_on.isoformat()}))
    rows = [{"endpoint_id": e.id, "event": name, "payload": payload, "status": "pending", "attempts": 0,
             "next_attempt_at": now, "created_at": now, "dedup_key": dedup}
            for e in endpoints for name, dedup, payload in events if name in e.events.split()]
    if not rows:
        return 0
    stmt = dialect_insert(session, WebhookDelivery.__table__).on_conflict_do_nothing(
        index_elements=["endpoint_id", "dedup_key"])
    return len(session.execute(stmt.returning(WebhookDelivery.__table__.c.id), rows).all())


def deliver_due(session: Session, now: dt.datetime, limit: int = 500) -> dict[str, int]:
    """Send what is due; each attempt's outcome is stored on the delivery (the log)."""
    due = list(session.scalars(select(WebhookDelivery).where(WebhookDelivery.status == "pending",
                                                              WebhookDelivery.next_attempt_at <= now)
                               .order_by(WebhookDelivery.id).limit(limit)))
    out = {"delivered": 0, "retry": 0, "failed": 0}
    endpoints = {e.id: e for e in session.scalars(select(WebhookEndpoint))}
    for d in due:
        ep = endpoints[d.endpoint_id]
        body = json.dumps({"id": d.id, **d.payload}, ensure_ascii=False, sort_keys=True).encode()
        req = urllib.request.Request(ep.url, data=body, method="POST", headers={
            "Content-Type": "application/json", "X-Portal-Event": d.event, "X-Portal-Delivery": str(d.id),
            "X-Portal-Signature": sign(ep.secret, body)})
        d.attempts += 1
        try:
            # bandit B310: register() allows only http(s) URLs
            with urllib.request.urlopen(req, timeout=TIMEOUT) as resp:  # noqa: S310  # nosec B310
                d.last_status_code, d.last_error = resp.status, None
                ok = 200 <= resp.status < 300
        except urllib.error.HTTPError as exc:
            d.last_status_code, d.last_error, ok = exc.code, f"HTTP {exc.code}", False
        except (urllib.error.URLError, OSError, ValueError) as exc:
            d.last_status_code, d.last_error, ok = None, f"{type(exc).__name__}: {exc}"[:500], False
        if ok:
            d.status, d.delivered_at = "delivered", now
            out["delivered"] += 1
        elif d.attempts > len(BACKOFF):
            d.status = "failed"
            out["failed"] += 1
        else:
            d.next_attempt_at = now + dt.timedelta(seconds=BACKOFF[d.attempts - 1])
            out["retry"] += 1
    return out
