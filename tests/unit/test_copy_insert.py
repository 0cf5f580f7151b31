"""db.copy_insert: PostgreSQL's bulk INSERT through COPY (an evaluation's writes, the metrics
import) stores exactly what SQLAlchemy's INSERT of the same rows stores, in order, and counts
only the rows it inserted."""

from __future__ import annotations

import datetime as dt

import pytest
from sqlalchemy import insert, select, text

from portal.db import copy_insert
from portal.models import LevelChange, Notification

NT = Notification.__table__
LC = LevelChange.__table__
NOW = dt.datetime(2026, 12, 6, 8, 30, tzinfo=dt.UTC)


# copy_insert is PostgreSQL's (SQLite inserts through its own path): these tests run on it only.
pytestmark = pytest.mark.parametrize("backend", ["postgres"], indirect=True)


@pytest.fixture
def pg(world):
    world.load_programs()
    world.member("a", "member")
    world.member("b", "member")
    return world


def _ids(world) -> dict[str, int]:
    return dict(world.s.execute(text("SELECT key, id FROM members")).all())


def _note(member_id: int, dedup: str, payload) -> dict:
    # "on" is a keyword: the column list must be quoted.
    return {"member_id": member_id, "program_key": "member", "kind": "benefit_issued", "on": dt.date(2026, 12, 1),
            "payload": payload, "dedup_key": dedup, "created_at": NOW}


def test_rows_are_stored_as_sqlalchemy_stores_them(pg):
    ids = _ids(pg)
    payloads = [{"benefit": "卡券", "amount": 12.5, "level": None}, {}, None]
    pg.s.execute(insert(NT), [_note(ids["a"], f"k{i}", p) for i, p in enumerate(payloads)])
    rows = [_note(ids["b"], f"k{i}", p) for i, p in enumerate(payloads)]
    columns = list(rows[0])
    assert copy_insert(pg.s, NT, columns, ([r[c] for c in columns] for r in rows)) == 3
    stored = text('SELECT member_id, kind, "on", payload::text, dedup_key, created_at, read_at FROM notifications '
                  "WHERE member_id = :m ORDER BY id")
    by_sqlalchemy = [r[1:] for r in pg.s.execute(stored, {"m": ids["a"]})]
    by_copy = [r[1:] for r in pg.s.execute(stored, {"m": ids["b"]})]
    assert by_copy == by_sqlalchemy
    assert by_copy[2][2] == "null"  # a None payload is JSON null, as SQLAlchemy's JSON type stores it


def test_conflicting_rows_are_skipped_and_not_counted_and_the_first_of_repeats_wins(pg):
    ids = _ids(pg)
    columns = list(_note(0, "", {}))
    first = [_note(ids["a"], "same", {"n": 1}), _note(ids["a"], "other", {"n": 2}), _note(ids["a"], "same", {"n": 3})]
    conflict = "ON CONFLICT (member_id, dedup_key) DO NOTHING"
    assert copy_insert(pg.s, NT, columns, ([r[c] for c in columns] for r in first), conflict) == 2
    again = [_note(ids["a"], "other", {"n": 4}), _note(ids["a"], "new", {"n": 5})]
    assert copy_insert(pg.s, NT, columns, ([r[c] for c in columns] for r in again), conflict) == 1
    stored = pg.s.execute(select(NT.c.dedup_key, NT.c.payload).where(NT.c.member_id == ids["a"]).order_by(NT.c.id)).all()
    assert [(k, p["n"]) for k, p in stored] == [("same", 1), ("other", 2), ("new", 5)]


def test_a_failed_copy_leaves_nothing_and_the_next_one_works(pg):
    ids = _ids(pg)
    columns = ["member_id", "program_key", "on", "from_level", "to_level", "direction", "cause", "reasons",
               "program_version", "created_at"]

    def change(member_id: int) -> list:
        return [member_id, "member", dt.date(2026, 12, 1), None, "silver", "up", "evaluation", [{"key": "spend"}], 1, NOW]

    pg.s.commit()
    with pytest.raises(Exception, match="foreign key"):
        copy_insert(pg.s, LC, columns, [change(ids["a"]), change(999_999)])
    pg.s.rollback()
    assert pg.s.scalar(select(LC.c.id).limit(1)) is None
    assert copy_insert(pg.s, LC, columns, [change(ids["b"])]) == 1
    assert pg.s.execute(select(LC.c.member_id, LC.c.reasons)).all() == [(ids["b"], [{"key": "spend"}])]
