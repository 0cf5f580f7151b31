"""`portal grant MEMBER BENEFIT --program KEY --reason TEXT [--quantity N] [--amount X] --by STAFF`
(README, docs/benefits.md): a manual reward - an issued `grant` ledger item with who and why,
audited - on a migrated database."""

from __future__ import annotations

import datetime as dt
import json
import re

import pytest
from sqlalchemy import func, select

from portal.models import AuditEntry, BenefitItem, Notification

from .conftest import write

MEMBERS = """member,name,email,role,password,programs
c1,Creator One,c1@example.com,member,secret-1,creator
m1,Member One,,member,secret-2,member scorecard
boss,Staff,boss@example.com,staff,secret-3,
root,Admin,root@example.com,admin,secret-4,
"""


def db_session(app):
    return app.extensions["portal.db"].factory()


def count(app, model) -> int:
    with db_session(app) as s:
        return s.scalar(select(func.count()).select_from(model))


def written(app) -> tuple[int, int, int]:
    return count(app, BenefitItem), count(app, AuditEntry), count(app, Notification)


@pytest.fixture
def staffed(ready, tmp_path):
    assert ready("import", "members", write(tmp_path, "m.csv", MEMBERS)).exit_code == 0
    return ready


def test_staff_grant_prints_the_item_and_writes_it_audited(staffed, app):
    result = staffed("grant", "c1", "bonus_card", "--program", "creator", "--reason", "Launch month star",
                     "--quantity", "2", "--amount", "88.5", "--by", "boss")
    assert result.exit_code == 0, result.output
    found = re.fullmatch(r"granted bonus_card x2 to c1 in creator \(item (\d+)\), by boss\n", result.output)
    assert found, result.output
    item_id = int(found.group(1))

    with db_session(app) as s:
        item = s.get(BenefitItem, item_id)
        assert (item.benefit_key, item.program_key, item.tier, item.mode, item.state) == (
            "bonus_card", "creator", "grant", "auto", "issued")
        assert (item.quantity, item.amount, item.granted_by, item.reason) == (2, 88.5, "boss", "Launch month star")
        assert item.issued_on == item.due_on == dt.date.today()
        audit = s.scalars(select(AuditEntry)).one()
        assert (audit.actor, audit.action, audit.member_id, audit.program_key, audit.reason) == (
            "boss", "benefit.grant", item.member_id, "creator", "Launch month star")
        assert audit.after == {"item": item_id, "benefit": "bonus_card", "quantity": 2, "amount": 88.5}


def test_defaults_one_item_without_amount_and_an_admin_may_grant(staffed, app):
    result = staffed("grant", "m1", "gift_box", "--program", "member", "--reason", "Apology for a late order", "--by", "root")
    assert result.exit_code == 0, result.output
    assert "granted gift_box x1 to m1 in member" in result.output and "by root" in result.output
    with db_session(app) as s:
        item = s.scalars(select(BenefitItem)).one()
        assert (item.quantity, item.amount, item.granted_by) == (1, None, "root")


def test_the_grant_shows_in_the_standing_json(staffed):
    assert staffed("grant", "c1", "bonus_card", "--program", "creator", "--reason", "Launch month star",
                   "--quantity", "2", "--amount", "88.5", "--by", "boss").exit_code == 0
    result = staffed("standing", "c1", "--json")
    assert result.exit_code == 0, result.output
    (creator,) = json.loads(result.output)
    assert creator["program"] == "creator" and creator["level"] is None  # a grant needs no level
    (benefit,) = creator["benefits"]
    assert {k: benefit[k] for k in ("key", "tier", "mode", "state", "quantity", "amount", "granted_by", "reason", "level")} == {
        "key": "bonus_card", "tier": "grant", "mode": "auto", "state": "issued", "quantity": 2, "amount": 88.5,
        "granted_by": "boss", "reason": "Launch month star", "level": None}
    assert benefit["issued_on"] == dt.date.today().isoformat()
    one = json.loads(staffed("standing", "c1", "--program", "creator", "--json").output)
    assert [b["state"] for b in one["benefits"]] == ["issued"]


REFUSALS = [
    (("c1", "bonus", "--program", "creator", "--reason", "r", "--by", "m1"), "'m1' is not a staff member"),
    (("c1", "bonus", "--program", "creator", "--reason", "r", "--by", "nobody"), "'nobody' is not a staff member"),
    (("ghost", "bonus", "--program", "creator", "--reason", "r", "--by", "boss"), "unknown member 'ghost'"),
    (("c1", "bonus", "--program", "nope", "--reason", "r", "--by", "boss"), "unknown program 'nope'"),
    (("c1", "bonus", "--program", "creator", "--reason", "   ", "--by", "boss"), "a grant needs a reason"),
    (("c1", "bonus", "--program", "creator", "--reason", "r", "--quantity", "0", "--by", "boss"),
     "quantity must be at least 1"),
    (("c1", "bonus", "--program", "creator", "--reason", "r", "--amount=-5", "--by", "boss"), "amount cannot be negative"),
]


@pytest.mark.parametrize(("args", "message"), REFUSALS, ids=["non-staff-by", "unknown-by", "unknown-member",
                                                             "unknown-program", "blank-reason", "zero-quantity",
                                                             "negative-amount"])
def test_a_refused_grant_exits_1_with_a_clear_message_and_writes_nothing(staffed, app, args, message):
    before = written(app)
    result = staffed("grant", *args)
    assert result.exit_code == 1, result.output
    assert f"error: {message}" in result.output
    assert "Traceback" not in result.output
    assert written(app) == before


def test_a_missing_reason_is_refused_with_a_clear_message(staffed, app):
    before = written(app)
    result = staffed("grant", "c1", "bonus", "--program", "creator", "--by", "boss")
    assert result.exit_code != 0
    assert "error: missing --reason" in result.output
    assert written(app) == before


def test_a_missing_reason_exits_1(staffed):
    result = staffed("grant", "c1", "bonus", "--program", "creator", "--by", "boss")
    assert result.exit_code == 1, (result.exit_code, result.output)


def test_a_grant_in_a_program_the_member_is_not_in_is_refused_or_shown(staffed, app):
    result = staffed("grant", "m1", "bonus", "--program", "creator", "--reason", "r", "--by", "boss")
    if result.exit_code == 1:
        assert count(app, BenefitItem) == 0
        return
    standings = json.loads(staffed("standing", "m1", "--json").output)
    assert any(b["key"] == "bonus" for st in standings for b in st["benefits"]), standings
