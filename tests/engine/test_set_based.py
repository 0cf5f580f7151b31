"""The evaluation is set-based: the number of SQL statements does not grow with members."""

from __future__ import annotations

import pytest
from sqlalchemy import event

from portal.engine.definition import BUILTIN_KEYS


def statements_for(world, program: str, as_of: str) -> int:
    engine = world.s.get_bind()
    seen: list[str] = []

    def count(conn, cursor, statement, parameters, context, executemany):
        seen.append(statement)

    event.listen(engine, "before_cursor_execute", count)
    try:
        world.evaluate(program, as_of)
    finally:
        event.remove(engine, "before_cursor_execute", count)
    return len(seen)


def populate(world, prefix: str, n: int, program: str) -> None:
    for i in range(n):
        key = f"{prefix}{i}"
        world.member(key, program)
        world.add(key, "video", "2026-10-20", 100 + i)
        world.add(key, "purchase", "2026-10-20", 100 + i)
        world.add(key, "transaction", "2026-10-20", 100 + i)
        world.add(key, "monthly_plays", "2026-10-20", 1e7 * (i + 1))


@pytest.mark.parametrize("program", BUILTIN_KEYS)
def test_statement_count_does_not_grow_with_members(world, program):
    populate(world, "a", 3, program)
    world.evaluate(program, "2026-10-31")  # first ratings: inserts
    small = statements_for(world, program, "2026-10-31")  # steady state: updates
    populate(world, "b", 30, program)
    world.evaluate(program, "2026-10-31")
    large = statements_for(world, program, "2026-10-31")
    assert small == large
    assert large < 25
