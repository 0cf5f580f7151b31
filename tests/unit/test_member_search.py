"""Staff search by key, e-mail or name prefix: the same answers on both databases (SQLite
serves prefixes from indexes as ranges, PostgreSQL with LIKE), wildcards taken literally."""

from __future__ import annotations

import inspect
import re
from typing import Any

import pytest
from sqlalchemy import select

from portal.models import Member
from portal.services.staff import RESULT_COLUMNS, SELECTIVE, SearchFilter, search
from portal.web.staff import member_rows

from ..helpers import NOW


def keys(world, text: str, after: int | None = None, limit: int = 50) -> list[str]:
    return [r.key for r in search(world.s, SearchFilter(text=text), after=after, limit=limit)]


def test_prefixes_of_key_email_and_name(world):
    world.load_programs()
    for key, name, email in [("m100", "王小明", "wang@x.io"), ("m101", "Ann_Lee", "ann@x.io"),
                             ("m2", "%Percent", "p@x.io"), ("zed", "m10 fan", None), ("M100", "Upper", "up@x.io")]:
        world.s.add(Member(key=key, name=name, email=email, role="member", created_at=NOW))
    world.s.commit()
    assert keys(world, "m10") == ["m100", "m101", "zed"]  # two keys, one name
    assert keys(world, "王") == ["m100"]
    assert keys(world, "ANN") == ["m101"]  # e-mail prefixes ignore case (stored lowered)
    assert keys(world, "Ann_") == ["m101"] and keys(world, "Ann%") == []  # no LIKE wildcards
    assert keys(world, "%") == ["m2"]
    assert keys(world, "M") == ["M100"]  # keys and names are case-sensitive
    first = search(world.s, SearchFilter(text="m"), limit=2)
    assert [r.key for r in first] == ["m100", "m101"]
    assert keys(world, "m", after=first[-1].id) == ["m2", "zed"]


def test_every_row_has_the_columns_the_staff_page_unpacks(world):
    """The staff page (web/staff.py member_rows) unpacks each row by position: the rows of every
    filter shape carry RESULT_COLUMNS in that order, and the page names the same columns."""
    world.load_programs()
    world.s.add(Member(key="m1", name="Wang", email="w@x.io", role="member", business_type="retail",
                       industry="food", scale="small", created_at=NOW))
    world.s.commit()
    for f in (SearchFilter(text="m1"), SearchFilter(), SearchFilter(business_type="retail")):
        rows = search(world.s, f)
        assert [tuple(r._mapping.keys()) for r in rows] == [RESULT_COLUMNS], f
        assert rows[0][:8] == (rows[0].id, "m1", "Wang", "w@x.io", "member", "retail", "food", "small")
        assert rows[0][8:] == (None, None, None, None)  # no program: no standing columns
    unpacked = re.search(r"for (.+?) in rows:", inspect.getsource(member_rows)).group(1)
    assert tuple(name.strip().rstrip("_") for name in unpacked.split(",")) == RESULT_COLUMNS  # id_: not the builtin


def _bulk_members(world, n: int, surname: str = "Wang") -> None:
    from sqlalchemy import insert

    world.load_programs()
    world.s.execute(insert(Member.__table__), [
        {"key": f"k{i:05d}", "name": f"{surname if i % 3 == 0 else 'Zhao'} {i}", "email": f"k{i:05d}@x.io",
         "role": "member", "created_at": NOW} for i in range(n)])
    world.s.commit()


def _statements(world, run) -> list[tuple[str, Any]]:
    from sqlalchemy import event

    engine = world.s.get_bind()
    seen: list[tuple[str, Any]] = []

    def grab(_conn, _cursor, statement, params, _context, _many):
        if not statement.startswith(("BEGIN", "EXPLAIN")):
            seen.append((statement, params))

    event.listen(engine, "before_cursor_execute", grab)
    try:
        run()
    finally:
        event.remove(engine, "before_cursor_execute", grab)
    return seen


def _sqlite_plans(world, run) -> list[str]:
    """EXPLAIN QUERY PLAN of every statement ``run`` issues (SQLite)."""
    conn = world.s.connection()
    return [" | ".join(r[-1] for r in conn.exec_driver_sql("EXPLAIN QUERY PLAN " + sql, params).all())
            for sql, params in _statements(world, run)]


@pytest.mark.parametrize("backend", ["sqlite"], indirect=True)  # the SQLite planner
def test_a_key_search_on_sqlite_finds_its_members_through_the_indexes(world):
    """W3: a selective prefix is looked up in the key / e-mail / name indexes, never a walk over
    every member (SQLite chose one with a bound LIMIT)."""
    _bulk_members(world, 3000)
    found: list[Any] = []
    plans = _sqlite_plans(world, lambda: found.extend(search(world.s, SearchFilter(text="k01234"), limit=51)))
    assert [r.key for r in found] == ["k01234"]
    assert plans and not any(re.search(r"SCAN members\b", p) for p in plans), plans
    assert any("sqlite_autoindex_members" in p for p in plans), plans


@pytest.mark.parametrize("backend", ["sqlite"], indirect=True)  # the SQLite planner
def test_a_broad_prefix_on_sqlite_walks_members_in_id_order_without_sorting_them_all(world):
    _bulk_members(world, 3000)  # "Wang": 1000 names, "k0": 3000 keys (more than SELECTIVE)
    plans = _sqlite_plans(world, lambda: search(world.s, SearchFilter(text="k0"), limit=51))
    assert not any("TEMP B-TREE" in p for p in plans), plans


def test_selective_and_broad_prefixes_page_through_the_same_members_as_a_plain_filter(world):
    _bulk_members(world, 2 * SELECTIVE + 300, surname="Li")
    everyone = world.s.execute(select(Member.id, Member.key, Member.name, Member.email).order_by(Member.id)).all()
    for text in ("k0", "k012", "k00042", "Li", "Li 1", "Zhao 2", "K0", "nobody"):
        expected = [m.id for m in everyone if m.key.startswith(text) or m.name.startswith(text)
                    or (m.email or "").startswith(text.lower())]
        got, after = [], None
        while True:
            page = search(world.s, SearchFilter(text=text), after=after, limit=500)
            got += [r.id for r in page]
            if len(page) < 500:
                break
            after = page[-1].id
        assert got == expected, text


@pytest.mark.parametrize("backend", ["sqlite"], indirect=True)  # the SQLite planner
def test_a_level_filter_walks_the_level_index_in_member_order(world):
    """W4: program + level is served by ix_standings_program_level_member in member order, so
    a page stops after its rows instead of sorting every member at that level."""
    _bulk_members(world, 50)
    for f in (SearchFilter(program="creator", level="LV1"), SearchFilter(program="creator"),
              SearchFilter(program="creator", level="-")):
        for after in (None, 10):
            plans = _sqlite_plans(world, lambda f=f, after=after: search(world.s, f, after=after, limit=51))
            assert not any("TEMP B-TREE" in p for p in plans), (f, after, plans)
            if f.level == "LV1":
                assert any("ix_standings_program_level_member" in p for p in plans), plans
