"""Staff search by key, e-mail or name prefix: the same answers on both databases (SQLite
serves prefixes from indexes as ranges, PostgreSQL with LIKE), wildcards taken literally."""

from __future__ import annotations

from portal.models import Member
from portal.services.staff import SearchFilter, search

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
