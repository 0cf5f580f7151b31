"""The SQL sift (engine/quiet.py): a run decides in Python only the members whose outcome may
change and leaves the others exactly as stored. Every run here is made twice - with the sift
and with everyone decided in Python (the reference) - and must leave the same database."""

from __future__ import annotations

import datetime as dt
from typing import Any

import yaml
from hypothesis import event, given
from hypothesis import strategies as st
from sqlalchemy import literal_column, select
from sqlalchemy.dialects import postgresql

from portal.engine import quiet
from portal.engine.definition import builtin_path, load_file
from portal.engine.run import STORED_COLUMNS, evaluate
from portal.models import BenefitItem, EvaluationRun, LevelChange, Notification, Standing
from portal.models import Program as ProgramRow
from portal.services import programs as programs_service
from portal.services import staff as staff_service

from ..helpers import NOW, recording
from .test_properties import (
    BASE,
    PROPERTY,
    _insert,
    _load_population,
    _population,
    _program,
    _reset,
)

SKIP = {"id", "run_id", "created_at", "started_at", "finished_at", "marked_at", "duration_ms", "evaluated_run_id",
        "evaluated_at", "read_at"}


def _tables(session) -> dict[str, list[dict[str, Any]]]:
    """Everything a run writes, without ids and clocks."""
    session.expire_all()
    out = {}
    for model in (Standing, LevelChange, BenefitItem, Notification, EvaluationRun, ProgramRow):
        t = model.__table__
        cols = [c for c in t.c if c.name not in SKIP]
        out[t.name] = sorted((dict(r) for r in session.execute(select(*cols)).mappings()), key=repr)
    return out


def _summary(s) -> dict[str, Any]:
    return {k: v for k, v in vars(s).items() if k not in ("run_id", "duration_ms", "started_at", "decided")}


def both_ways(world, key: str, as_of: dt.date, full: bool = False):
    """Run the reference (everyone in Python), remember what it wrote, roll it back; run with
    the sift and compare. Returns the sifted run's summary."""
    program, version = programs_service.definition(world.s, key)
    reference = evaluate(world.s, program, version, as_of, now=NOW, full=full, skip_quiet=False)
    expected = _tables(world.s)
    world.s.rollback()
    sifted = evaluate(world.s, program, version, as_of, now=NOW, full=full)
    got = _tables(world.s)
    world.s.commit()
    for name in expected:
        assert got[name] == expected[name], f"{key} as of {as_of}: {name} differs"
    assert _summary(sifted) == _summary(reference)
    # The reference decides everyone (a same-day re-run: everyone with new data).
    assert reference.decided == (reference.evaluated if reference.reexamined is None else reference.reexamined)
    return sifted


SIFTED = ("creator", "member", "music", "scorecard")


@PROPERTY
@given(data=st.data())
def test_the_sift_leaves_what_deciding_everyone_in_python_leaves(world, data):
    _reset(world)
    world._ids.clear()
    key = data.draw(st.sampled_from(SIFTED), label="program")
    program = _program(world, key)
    _load_population(world, key, _population(data, program))
    # A history of runs: consecutive days (standings left alone), a gap, month ends (music,
    # scorecard), a same-day re-run after new rows, and now and then a staff action between.
    offsets = sorted(data.draw(st.lists(st.sampled_from([-61, -31, -30, -2, -1, 0, 1, 29, 30, 31, 92]),
                                        min_size=2, max_size=6, unique=True), label="run days"))
    decided = 0
    for i, off in enumerate(offsets):
        as_of = BASE + dt.timedelta(days=off)
        both_ways(world, key, as_of)
        if data.draw(st.booleans(), label=f"new rows after run {i}"):
            member = data.draw(st.sampled_from(sorted(world._ids)), label="who")
            rows = _population(data, program).get("m0", [])
            _insert(world, member, [{**r, "date": min(r["date"], as_of)} for r in rows])
            decided += both_ways(world, key, as_of).decided  # the same day again
        if data.draw(st.integers(0, 5), label=f"staff action after run {i}") == 0:
            _staff_action(world, data, key, as_of)
    event(f"{key}: {len(offsets)} runs")


def _staff_action(world, data, key: str, as_of: dt.date) -> None:
    if "boss" not in world._ids:
        world.member("boss", role="staff")
    member = data.draw(st.sampled_from(sorted(k for k in world._ids if k != "boss")), label="member")
    st_row = world.stored(member, key)
    if st_row is None:
        return
    program = _program(world, key)
    if st_row.status == "blacklisted":
        staff_service.set_blacklist(world.s, "boss", member, key, False, "lifted", as_of)
    elif st_row.locked_level is not None:
        staff_service.lift_lock(world.s, "boss", member, key, "lifted")
    else:
        level = data.draw(st.sampled_from([None, *program.level_keys]), label="override to")
        staff_service.override_level(world.s, "boss", member, key, level, "test", as_of,
                                     until=as_of + dt.timedelta(days=data.draw(st.integers(0, 40), label="lock days")))
    world.s.commit()


# -- what the sift saves, and where it must look -------------------------------------------------

CREATOR_LV1 = [("profile_complete", 1), ("task_hall_visited", 1), ("tasks_enabled", 1), ("courses_completed", 3)]


def _lv1_creator(world, key: str, first_post: dt.date) -> None:
    world.member(key, "creator")
    for metric, value in CREATOR_LV1:
        world.add(key, metric, first_post, value)
    for i in range(80):  # a post a day: LV1 every day of the runs below
        world.add(key, "video", first_post + dt.timedelta(days=i), 100)


def test_a_quiet_day_decides_nobody_in_python_and_writes_nothing(world):
    world.load_programs()
    for i in range(5):
        _lv1_creator(world, f"c{i}", BASE - dt.timedelta(days=35))
    first = both_ways(world, "creator", BASE - dt.timedelta(days=1))
    assert (first.upgraded, first.decided) == (5, 5)
    written = {s.member_id: s.as_of for s in world.s.scalars(select(Standing))}

    quiet = both_ways(world, "creator", BASE)

    assert (quiet.evaluated, quiet.unchanged, quiet.decided) == (5, 5, 0)
    world.s.expire_all()
    assert {s.member_id: s.as_of for s in world.s.scalars(select(Standing))} == written
    # The program's latest evaluation moved on: pages explain the standings as of it.
    assert world.s.get(ProgramRow, "creator").evaluated_as_of == BASE
    assert world.standing("c0", "creator")["as_of"] == BASE.isoformat()


def test_the_day_a_dispatch_period_begins_the_members_are_decided_and_get_it(world):
    """extra_dispatch is due every 30 days of a tenure: on day 30 the sift must send the
    creator to Python (nothing else about it changes)."""
    world.load_programs()
    _lv1_creator(world, "c", BASE - dt.timedelta(days=40))
    start = BASE - dt.timedelta(days=5)
    both_ways(world, "creator", start)
    periods = set()
    for day in range(1, 32):
        summary = both_ways(world, "creator", start + dt.timedelta(days=day))
        if summary.decided:
            periods.add(day)
    items = world.s.scalars(select(BenefitItem).where(BenefitItem.benefit_key == "extra_dispatch")).all()
    assert sorted(i.period for i in items) == [f"LV1@{start.isoformat()}#0", f"LV1@{start.isoformat()}#1"]
    assert 30 in periods  # the new period
    assert 29 in periods  # the day before it: the make-up check of the period ending


def test_population_ranks_are_sifted_in_sql_and_a_rank_move_sends_the_moved_to_python(world):
    """Scorecard ranks the population (amount and repurchase rank scores): SQL ranks it too
    (RANK() over the run's aggregates), so a quiet day decides nobody, and a customer whose
    purchase pushes the others down a rank cut sends those others to Python as well."""
    world.load_programs()
    day = BASE - dt.timedelta(days=40)
    for i in range(10):
        world.member(f"s{i}", "scorecard")
        world.add(f"s{i}", "consultation", day, 1)
        for _ in range(i % 3 + 1):
            world.add(f"s{i}", "transaction", day, 1000 * (i + 1))
    first = both_ways(world, "scorecard", BASE - dt.timedelta(days=1))
    assert first.decided == first.evaluated == 10
    quiet = both_ways(world, "scorecard", BASE)
    assert (quiet.evaluated, quiet.decided) == (10, 0)
    scores = {f"s{i}": world.stored(f"s{i}", "scorecard").score for i in range(10)}

    # s0 (the smallest) outspends everyone: every other customer's amount rank drops by one.
    world.add("s0", "transaction", BASE, 1_000_000)
    moved = both_ways(world, "scorecard", BASE + dt.timedelta(days=1))
    after = {f"s{i}": world.stored(f"s{i}", "scorecard").score for i in range(10)}
    changed = {k for k in scores if after[k] != scores[k]}
    assert "s0" in changed and len(changed) > 1  # others moved down a cut without new rows
    assert len(changed) <= moved.decided < moved.evaluated  # the customers whose ranks held stay quiet


def test_a_sifted_ranked_run_takes_each_decided_customers_rank_from_sql(world):
    """Where the sift ranked the population in SQL, a decided customer's rank comes with its
    row: no pass reads every customer's values into Python (1.2 s of the scorecard's daily
    run at 1M), and the ranks, ties at a cut included, score as Python's table does."""
    world.load_programs()
    day = BASE - dt.timedelta(days=40)
    # 20 customers, one purchase each: s1 and s2 tie at rank 2 - the last rank the top cut
    # (share 0.1 of 20) admits - so both are in it (ranks 1, 2, 2, 4, ...).
    amounts = [9000, 8000, 8000, 7000] + [100 * (i + 1) for i in range(16)]
    for i, amount in enumerate(amounts):
        world.member(f"s{i}", "scorecard")
        world.add(f"s{i}", "consultation", day, 1)
        world.add(f"s{i}", "transaction", day, amount)
    with recording(world.s.get_bind()) as seen:
        first = both_ways(world, "scorecard", BASE - dt.timedelta(days=1))
    assert first.decided == first.evaluated == 20
    values = {f"s{i}": world.stored(f"s{i}", "scorecard").values for i in range(4)}
    assert [values[f"s{i}"]["amount_rank_score"] for i in range(4)] == [100, 100, 100, 80]
    # The reference ran the pass (its statement: every enrolled customer's values, no
    # standings); the sifted run did not.
    passes = [s for s in seen if s.startswith("SELECT enrolments.member_id,") and "standings" not in s
              and "rank()" not in s.lower()]
    assert len(passes) == 1, passes


def test_a_ranked_program_rewrites_a_standing_whose_values_moved_while_level_and_score_held(world):
    """Ranked programs store every value: a consultation leaving the 365-day window moves
    ``consultations_365d`` (the activity score is capped, so level and score hold) and the
    standing must be rewritten, as deciding in Python would (found by the property test)."""
    world.load_programs()
    world.member("s0", "scorecard")
    world.add("s0", "consultation", BASE - dt.timedelta(days=350), 1)
    for _ in range(5):
        world.add("s0", "consultation", BASE, 1)
    both_ways(world, "scorecard", BASE)
    assert world.stored("s0", "scorecard").values["consultations_365d"] == 6
    later = both_ways(world, "scorecard", BASE + dt.timedelta(days=30))
    stored = world.stored("s0", "scorecard")
    assert stored.values["consultations_365d"] == 5
    assert (stored.score, stored.prev_score, later.decided) == (18.0, 18.0, 1)


def test_a_ranked_value_computed_with_round_is_decided_in_python(world):
    """round() may differ between SQL and Python near a tie, and a ranked value's error would
    move everyone's rank: such a program is decided wholly in Python."""
    data = yaml.safe_load(builtin_path("scorecard").read_text())
    data["values"]["repurchases_365d"]["expr"] = "round(max(0, transactions_365d - 1))"
    world.publish(yaml.safe_dump(data, allow_unicode=True))
    for i in range(3):
        world.member(f"s{i}", "scorecard")
        world.add(f"s{i}", "transaction", BASE - dt.timedelta(days=3), 100 * (i + 1))
    both_ways(world, "scorecard", BASE - dt.timedelta(days=1))
    again = both_ways(world, "scorecard", BASE)
    assert again.decided == again.evaluated == 3


def test_a_value_on_a_rounding_tie_is_decided_in_python(world):
    """round() rounds half to even in Python, half away from zero in SQL. January: 12 likes
    / 4 = 3 -> rated. February: 10 / 4 = 2.5, which Python rounds to 2 (unrated: a first month
    below, so a warning) and SQL to 3 (still rated: quiet, were it not for the tie)."""
    data = yaml.safe_load(builtin_path("music").read_text())
    data["values"]["rounded"] = {"expr": "round(monthly_likes / 4)"}
    data["rated_when"] = [{"key": "rounded", "op": ">=", "required": 3}]
    world.publish(yaml.safe_dump(data, allow_unicode=True))
    world.member("c", "music")
    world.add("c", "monthly_plays", "2026-01-15", 5_000_000)
    world.add("c", "monthly_likes", "2026-01-15", 12)
    world.add("c", "monthly_plays", "2026-02-15", 5_000_000)
    world.add("c", "monthly_likes", "2026-02-15", 10)
    both_ways(world, "music", dt.date(2026, 1, 31))
    february = both_ways(world, "music", dt.date(2026, 2, 28))
    assert february.decided == 1
    warned = world.s.scalars(select(Notification).where(Notification.kind == "downgrade_warning")).all()
    assert [n.payload["reason"] for n in warned] == ["consecutive"]


def test_on_postgresql_the_condition_computes_each_value_once_per_member():
    """SQL writes a value out wherever it is compared; the scorecard's score (a round() of
    ranks and buckets) stood in the condition about ten times, and each stored value was
    parsed from its JSON again. On PostgreSQL the condition refers to a LATERAL subquery's
    columns instead: the score's round() is written there once, the stored values parsed once."""
    program = load_file(builtin_path("scorecard"))
    ctx = quiet.Context(program, 1, BASE, None, "postgresql", None)

    def raw(target: int, key: str):
        return literal_column(f"w.{key}_{target}")

    def ranked(target: int, key: str, value):
        return literal_column(f"r.{key}_{target}"), literal_column("r.n")

    def compiled(shared):
        look = quiet.compile_look(ctx, STORED_COLUMNS, raw, 1, ranked, shared)
        return str(look.compile(dialect=postgresql.dialect()))

    written_out = compiled(None)
    assert written_out.count("round(") > 5 and written_out.count("->>") > 10

    shared = quiet.Shared()
    condition = compiled(shared)
    assert "round(" not in condition and "CAST(standings.values AS JSONB)" not in condition
    assert "sift.x" in condition and condition.count("->>") == len(program.values)
    computed = " ".join(str(c.compile(dialect=postgresql.dialect())) for c in shared.columns)
    assert computed.count("round(") == 1 and computed.count("CAST(standings.values AS JSONB)") == 1


def test_a_run_on_postgresql_reads_the_shared_values_with_its_driver(world):
    """The run joins the shared values to its driver query (PostgreSQL; SQLite has no LATERAL)
    and decides exactly as Python does (both_ways)."""
    world.load_programs()
    day = BASE - dt.timedelta(days=40)
    for i in range(6):
        world.member(f"s{i}", "scorecard")
        world.add(f"s{i}", "consultation", day, 1 + i)
        world.add(f"s{i}", "transaction", day, 1000 * (i + 1))
    both_ways(world, "scorecard", BASE - dt.timedelta(days=1))
    world.add("s0", "transaction", BASE - dt.timedelta(days=1), 50_000)
    with recording(world.s.get_bind()) as seen:
        again = both_ways(world, "scorecard", BASE)
    assert again.decided >= 1
    drivers = [s for s in seen if "FROM enrolments JOIN members" in s and "standings.prev_level" in s]
    assert len(drivers) == 2  # the reference's (no condition) and the sifted run's
    postgresql = world.s.get_bind().dialect.name == "postgresql"
    assert ("JOIN LATERAL" in drivers[1]) is postgresql
    rounds = drivers[1].count("round(")  # the score's one round(), written out per comparison on SQLite
    assert (rounds == 1) if postgresql else (rounds > 5)
