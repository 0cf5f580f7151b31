"""The values a standing is explained with (services/explain.py): recomputed for one member
from the rows the latest run read, as of that run's date - or stored, for ranked programs."""

from __future__ import annotations

import datetime as dt

from portal.models import Standing
from portal.services import explain

D = dt.date(2026, 10, 31)


def _likes_creator(world, key: str, likes: float) -> None:
    world.member(key, "creator")
    world.add(key, "likes", D - dt.timedelta(days=3), likes)


def test_values_are_those_of_the_latest_run_even_when_the_standing_did_not_change(world):
    _likes_creator(world, "c", 10)
    world.evaluate("creator", D - dt.timedelta(days=1))
    assert world.values("c", "creator")["likes_30d"] == 10
    world.add("c", "likes", D, 5)
    assert world.values("c", "creator")["likes_30d"] == 10  # not evaluated yet: what the run saw
    world.evaluate("creator", D)
    assert world.stored("c", "creator").as_of == D - dt.timedelta(days=1)  # nothing changed: not written
    assert world.values("c", "creator")["likes_30d"] == 15
    assert world.standing("c", "creator")["as_of"] == D.isoformat()


def test_rows_stored_after_a_run_wait_for_the_next_run_even_when_dated_before_it(world):
    _likes_creator(world, "c", 10)
    world.evaluate("creator", D)
    world.add("c", "likes", D - dt.timedelta(days=5), 7)  # a late row, dated inside the window
    assert world.values("c", "creator")["likes_30d"] == 10
    world.evaluate("creator", D)  # the same-day re-run takes it in
    assert world.values("c", "creator")["likes_30d"] == 17


def test_a_ranked_program_explains_with_the_values_its_run_stored(world):
    for i in range(3):
        world.member(f"s{i}", "scorecard")
        world.add(f"s{i}", "transaction", D - dt.timedelta(days=3), 100 * (i + 1))
    world.evaluate("scorecard", D)
    stored = world.stored("s2", "scorecard")
    assert stored.values and world.values("s2", "scorecard") == stored.values


def test_a_program_without_a_run_or_a_member_without_a_standing_has_no_values(world):
    world.member("new", "creator")
    assert world.values("new", "creator") == {}
    assert explain.evaluated(world.s, "creator") == explain.Evaluated()
    assert world.s.get(Standing, (world._ids["new"], "creator")) is None
