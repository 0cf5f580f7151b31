"""The evaluation is set-based: the number of SQL statements does not grow with members."""

from __future__ import annotations

import pytest

from portal.engine.definition import BUILTIN_KEYS

from ..helpers import recording


def statements_for(world, program: str, as_of: str) -> int:
    with recording(world.s.get_bind()) as seen:
        world.evaluate(program, as_of)
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
    assert large < 40  # a few dozen: a run's aggregates go to scratch tables (2 statements each)


# -- incremental same-day re-runs --------------------------------------------------------------


def test_a_same_day_rerun_reexamines_only_members_with_new_rows(world):
    populate(world, "a", 30, "creator")
    first = world.evaluate("creator", "2026-10-31")
    assert first.reexamined is None and first.evaluated == 30
    world.add("a3", "video", "2026-10-25", 50_000)
    world.add("a7", "video", "2026-10-26", 50_000)
    again = world.evaluate("creator", "2026-10-31")
    assert again.reexamined == 2
    assert (again.evaluated, again.unchanged + again.upgraded + again.downgraded) == (30, 30)
    assert world.values("a3", "creator")["posts_30d"] == 2
    nothing = world.evaluate("creator", "2026-10-31")
    assert nothing.reexamined == 0 and nothing.evaluated == 30


def test_a_new_enrolment_and_a_staff_action_are_reexamined(world):
    from portal.services import staff

    populate(world, "a", 5, "creator")
    world.evaluate("creator", "2026-10-31")
    world.member("late", "creator")
    world.member("ops", role="staff")
    staff.override_level(world.s, "ops", "a1", "creator", "LV2", "a test", world_day("2026-10-31"))
    world.s.commit()
    again = world.evaluate("creator", "2026-10-31")
    assert again.reexamined == 2
    assert world.stored("late", "creator").as_of.isoformat() == "2026-10-31"


def test_population_ranked_programs_and_new_versions_always_run_in_full(world):
    populate(world, "a", 5, "scorecard")
    world.evaluate("scorecard", "2026-10-31")
    assert world.evaluate("scorecard", "2026-10-31").reexamined is None
    populate(world, "b", 5, "creator")
    world.evaluate("creator", "2026-10-31")
    assert world.evaluate("creator", "2026-10-31", full=True).reexamined is None
    assert world.evaluate("creator", "2026-11-01").reexamined is None  # a new date: everyone's windows moved


@pytest.mark.parametrize("edit", [
    "DELETE FROM metric_rows WHERE id = (SELECT min(id) FROM metric_rows)",
    "UPDATE metric_rows SET value = value + 1 WHERE id = (SELECT min(id) FROM metric_rows)",
    "DELETE FROM members WHERE key = 'a4'",  # its rows go by the foreign key's cascade
])
def test_an_edited_or_deleted_metric_row_makes_the_next_same_day_run_full(world, edit):
    """Rows the earlier run read have changed: nothing marks who is affected, so everyone is
    looked at again - whoever made the change (the counter is kept by database triggers)."""
    from sqlalchemy import text

    populate(world, "a", 5, "creator")
    world.evaluate("creator", "2026-10-31")
    assert world.evaluate("creator", "2026-10-31").reexamined == 0
    world.s.execute(text(edit))
    world.s.commit()
    again = world.evaluate("creator", "2026-10-31")
    assert again.reexamined is None
    assert world.evaluate("creator", "2026-10-31").reexamined == 0  # and then incremental again


def test_an_incremental_rerun_reads_the_changed_members_once(world):
    """The changed members are collected into a temporary table once; the scans join it
    (as a subquery each scan would compute the set again)."""
    populate(world, "a", 5, "creator")
    world.evaluate("creator", "2026-10-31")
    world.add("a2", "video", "2026-10-25", 50_000)
    with recording(world.s.get_bind()) as seen:
        assert world.evaluate("creator", "2026-10-31").reexamined == 1
    assert sum("metric_rows.id >" in s for s in seen) == 1
    assert sum("FROM changed_members" in s for s in seen) >= 2


@pytest.mark.parametrize("backend", ["postgres"], indirect=True)
def test_no_metric_mark_while_another_transaction_is_inserting_rows(world, engine):
    """PostgreSQL hands out ids before commit: a mark taken while an import is in flight could
    miss its rows, so there is none (the next same-day run is a full one)."""
    from sqlalchemy import insert

    from portal.engine.run import metric_mark
    from portal.models import MetricRow

    populate(world, "a", 2, "creator")
    assert (metric_mark(world.s).id, metric_mark(world.s).edits) == (8, 0)
    with engine.connect() as other:
        other.execute(insert(MetricRow.__table__).values(member_id=world._ids["a0"], metric="video",
                                                         date=world_day("2026-10-30"), value=1))
        assert metric_mark(world.s) is None
        other.commit()
    assert (metric_mark(world.s).id, metric_mark(world.s).edits) == (9, 0)


def world_day(text: str):
    import datetime as dt

    return dt.date.fromisoformat(text)


def _bulk_population(world, start: int, n: int, program: str) -> None:
    """n members with a row of each kind the programs read, inserted in bulk (executemany)."""
    import datetime as dt

    from sqlalchemy import insert, select

    from portal.models import Enrolment, Member, MetricRow

    world.load_programs()
    s = world.s
    now = dt.datetime(2026, 10, 1, tzinfo=dt.UTC)
    s.execute(insert(Member.__table__), [{"key": f"p{start + i}", "name": "", "role": "member", "created_at": now}
                                         for i in range(n)])
    ids = s.scalars(select(Member.id).where(Member.key.in_([f"p{start}", f"p{start + n - 1}"]))).all()
    first, last = min(ids), max(ids)
    s.execute(insert(Enrolment.__table__), [{"member_id": m, "program_key": program, "enrolled_on": dt.date(2020, 1, 1)}
                                            for m in range(first, last + 1)])
    day = dt.date(2026, 10, 20)
    rows = [{"member_id": m, "metric": metric, "date": day, "value": float(100 + (m * 37) % 5000), "kind": None,
             "event_id": None}
            for m in range(first, last + 1) for metric in ("video", "purchase", "transaction", "monthly_plays")]
    s.execute(insert(MetricRow.__table__), rows)
    s.commit()


@pytest.mark.parametrize("backend", ["sqlite"], indirect=True)
@pytest.mark.parametrize("program", BUILTIN_KEYS)
def test_statements_at_100k_members_are_at_most_1_1x_those_at_10k(world, program):
    """Issue 7: a full evaluation's SQL statement count does not grow with the population
    (batched writes add one executemany per 20,000 members at most)."""
    _bulk_population(world, 0, 10_000, program)
    world.evaluate(program, "2026-10-30")
    small = statements_for(world, program, "2026-10-31")
    _bulk_population(world, 10_000, 90_000, program)
    world.evaluate(program, "2026-11-01")
    large = statements_for(world, program, "2026-11-02")
    assert large <= 1.1 * small, (small, large)


def _analysed_rows(world, table: str) -> float | None:
    """What the planner's statistics say of a table's rows; None: never analysed."""
    from sqlalchemy import text

    s = world.s
    if s.get_bind().dialect.name == "sqlite":
        if not s.scalar(text("SELECT count(*) FROM sqlite_master WHERE name = 'sqlite_stat1'")):
            return None
        stat = s.scalar(text("SELECT stat FROM sqlite_stat1 WHERE tbl = :t AND idx IS NOT NULL LIMIT 1"), {"t": table})
        return float(stat.split()[0]) if stat else None
    rows = s.scalar(text("SELECT reltuples FROM pg_class WHERE oid = CAST(:t AS regclass)"), {"t": table})
    return None if rows < 0 else rows


def test_a_run_that_inserts_many_rows_refreshes_the_planner_statistics(world, monkeypatch):
    """Until autovacuum comes by, PostgreSQL would plan the next runs with an empty table's row
    counts; a run that inserts at least ANALYZE_AFTER standings or items analyses them itself."""
    from portal.engine import run

    populate(world, "a", 6, "creator")
    world.evaluate("creator", "2026-10-30")  # 6 new standings: below the default threshold
    assert _analysed_rows(world, "standings") is None
    populate(world, "b", 6, "creator")
    monkeypatch.setattr(run, "ANALYZE_AFTER", 6)
    world.evaluate("creator", "2026-10-31")  # 6 more new standings
    assert _analysed_rows(world, "standings") == 12


def test_a_run_analyses_a_table_only_when_its_new_rows_are_a_tenth_of_what_the_statistics_know(world, monkeypatch):
    """Autovacuum's own analyze threshold: a daily run's few percent more rows stay under it
    (analysing every large table it wrote cost the member program's daily run about 1 s)."""
    from portal.engine import run

    monkeypatch.setattr(run, "ANALYZE_AFTER", 1)
    populate(world, "a", 20, "creator")
    world.evaluate("creator", "2026-10-29")  # 20 new standings, never analysed: analysed
    assert _analysed_rows(world, "standings") == 20
    populate(world, "b", 1, "creator")
    world.evaluate("creator", "2026-10-30")  # 1 new standing: 5% of 20
    assert _analysed_rows(world, "standings") == 20
    populate(world, "c", 2, "creator")
    world.evaluate("creator", "2026-10-31")  # 2 more: 10% of the 20 the statistics know
    assert _analysed_rows(world, "standings") == 23


@pytest.mark.parametrize("program", BUILTIN_KEYS)
def test_a_run_reads_the_metric_rows_in_at_most_two_scans(world, program):
    """One scan over all history (``all`` windows and the latest gauge readings, which ride on
    it) and one over the bounded windows: a third pass would read rows again."""
    populate(world, "a", 5, program)
    world.add("a1", "verified", "2026-10-01", 1)
    world.add("a1", "followers", "2026-10-01", 10)
    world.evaluate(program, "2026-10-30")
    with recording(world.s.get_bind()) as seen:
        world.evaluate(program, "2026-10-31")
    scans = [s for s in seen if "metric_rows" in s and "GROUP BY" in s]
    # member: purchases over every window and the gauges are all read by the history scan
    assert len(scans) == {"creator": 2, "member": 1, "scorecard": 2, "music": 2}[program], scans


@pytest.mark.parametrize("backend", ["postgres"], indirect=True)
def test_scratch_tables_are_analysed_from_a_small_sample_that_still_shows_member_id_unique(world):
    """A run's scratch tables get statistics from 300 x SCRATCH_STATISTICS sampled rows (the
    default 30,000 made each ANALYZE 0.2 s); the planner still learns that member_id is unique
    (n_distinct -1), which the driver's hash joins rely on."""
    from sqlalchemy import event

    from portal.engine.aggregates import SCRATCH_STATISTICS

    _bulk_population(world, 0, 500, "member")  # 500 distinct purchase sums: a histogram of every bucket
    world.evaluate("member", "2026-10-30")
    seen: dict[str, list] = {}

    def stats(conn, cursor, statement, parameters, context, executemany):
        if statement.startswith("ANALYZE run_window"):
            table = statement.split()[1]
            with cursor.connection.cursor() as c:
                c.execute("SELECT attname, n_distinct, coalesce(array_length(histogram_bounds, 1), 0) FROM pg_stats "
                          "WHERE tablename = %s", (table,))
                seen[table] = c.fetchall()

    engine = world.s.get_bind()
    event.listen(engine, "after_cursor_execute", stats)
    try:
        world.evaluate("member", "2026-10-31")
    finally:
        event.remove(engine, "after_cursor_execute", stats)
    assert seen, "no scratch table was analysed"
    for table, columns in seen.items():
        by_name = {name: (distinct, bounds) for name, distinct, bounds in columns}
        assert by_name["member_id"][0] == -1, (table, by_name)  # unique
        widest = max(bounds for _, bounds in by_name.values())
        assert 2 <= widest <= SCRATCH_STATISTICS + 1, (table, by_name)  # the default target would keep 101
