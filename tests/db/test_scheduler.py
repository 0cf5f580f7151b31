"""The scheduler (docs/scheduler.md): which as-of dates are due, ticks that run each job once
per (job, as-of), the leader lock, catch-up after downtime in order, takeover of a dead run and
retries of a failed one - on a real database, with the test's own clock.

Every test gets its own advisory-lock key (portal.jobs.lock.LOCK_KEY), so test runs sharing
one PostgreSQL database never see each other's scheduler.
"""

from __future__ import annotations

import datetime as dt
import os
import random
import threading
import uuid
from collections import Counter

import pytest
from sqlalchemy import Engine, func, select, text

from portal.db import make_engine, session_factory
from portal.jobs import lock as lock_module
from portal.jobs.definitions import MAX_CATCH_UP, JobSpec, jobs_for
from portal.jobs.lock import LeaderLock
from portal.jobs.runner import Scheduler
from portal.models import (
    Base,
    BenefitItem,
    EvaluationRun,
    JobRun,
    LevelChange,
    Member,
    Notification,
    Standing,
)
from portal.models import Program as ProgramRow
from portal.services.benefits import claim
from tests.helpers import World

UTC = dt.UTC
D = dt.date(2026, 6, 30)  # the as-of date of every job due on 2026-07-01 after 02:00 UTC
TICK = dt.datetime(2026, 7, 1, 3, 0, tzinfo=UTC)
PROGRAMS = ("creator", "member", "music", "scorecard")
EVALUATE_JOBS = [f"evaluate:{p}" for p in PROGRAMS]
GAUGES = ("profile_complete", "task_hall_visited", "tasks_enabled", "quote_set", "assistant_viewed")


def at(day: str, hour: int = 3, minute: int = 0) -> dt.datetime:
    return dt.datetime.combine(dt.date.fromisoformat(day), dt.time(hour, minute), tzinfo=UTC)


def d(text_: str) -> dt.date:
    return dt.date.fromisoformat(text_)


def naive(moment: dt.datetime) -> dt.datetime:
    """UTC without tzinfo (SQLite gives timestamps back naive, PostgreSQL aware)."""
    return moment.astimezone(UTC).replace(tzinfo=None) if moment.tzinfo else moment


# -- due dates (pure) ----------------------------------------------------------------------------

DAILY = JobSpec("evaluate:creator", "evaluate", "creator", "daily")
MONTHLY = JobSpec("evaluate:music", "evaluate", "music", "monthly")
EXPIRE = JobSpec("benefits:expire", "expire", None, "daily", hour=2)


@pytest.mark.parametrize(("spec", "now", "latest"), [
    (DAILY, at("2026-07-02", 0, 59), "2026-06-30"),  # before 01:00 yesterday is not complete yet
    (DAILY, at("2026-07-02", 1, 0), "2026-07-01"),
    (DAILY, at("2026-07-02", 23, 59), "2026-07-01"),
    (DAILY, at("2026-01-01", 0, 30), "2025-12-30"),
    (DAILY, at("2026-01-01", 1, 0), "2025-12-31"),
    (DAILY, at("2026-03-01", 1, 0), "2026-02-28"),
    (EXPIRE, at("2026-07-02", 1, 59), "2026-06-30"),  # the expiry pass is due from 02:00
    (EXPIRE, at("2026-07-02", 2, 0), "2026-07-01"),
    (MONTHLY, at("2026-07-01", 0, 59), "2026-05-31"),  # the 1st before the hour: still last month's turn
    (MONTHLY, at("2026-07-01", 1, 0), "2026-06-30"),
    (MONTHLY, at("2026-07-15", 12, 0), "2026-06-30"),
    (MONTHLY, at("2026-07-31", 23, 59), "2026-06-30"),
    (MONTHLY, at("2026-08-01", 1, 0), "2026-07-31"),
    (MONTHLY, at("2026-01-01", 1, 0), "2025-12-31"),
    (MONTHLY, at("2026-03-01", 0, 30), "2026-01-31"),
    (MONTHLY, at("2026-03-01", 1, 0), "2026-02-28"),
])
def test_latest_due(spec, now, latest):
    assert spec.latest_due(now) == d(latest)


def test_first_start_runs_only_the_latest_date():
    assert DAILY.due_dates(None, at("2026-07-02", 3)) == [d("2026-07-01")]
    assert MONTHLY.due_dates(None, at("2026-07-02", 3)) == [d("2026-06-30")]


def test_nothing_is_due_when_up_to_date():
    assert DAILY.due_dates(d("2026-07-01"), at("2026-07-02", 3)) == []
    assert DAILY.due_dates(d("2026-07-01"), at("2026-07-03", 0, 30)) == []  # the next day's run waits for 01:00
    assert MONTHLY.due_dates(d("2026-06-30"), at("2026-07-31", 23)) == []


def test_catch_up_after_three_days_down_lists_the_missed_days_in_order():
    # last run on 2026-06-29 (as of 06-28); down on 06-30, 07-01 and until 07-02 01:05
    assert DAILY.due_dates(d("2026-06-28"), at("2026-07-02", 1, 5)) == [d("2026-06-29"), d("2026-06-30"), d("2026-07-01")]
    # across a month and a year end
    assert DAILY.due_dates(d("2025-12-30"), at("2026-01-02", 1)) == [d("2025-12-31"), d("2026-01-01")]


def test_monthly_catch_up_lists_every_missed_month_end():
    assert MONTHLY.due_dates(d("2026-03-31"), at("2026-07-01", 2)) == [d("2026-04-30"), d("2026-05-31"), d("2026-06-30")]
    assert MONTHLY.due_dates(d("2025-12-31"), at("2026-04-01", 1)) == [d("2026-01-31"), d("2026-02-28"), d("2026-03-31")]


def test_catch_up_is_capped_oldest_first():
    dates = DAILY.due_dates(d("2020-01-01"), at("2026-07-02", 3))
    assert len(dates) == MAX_CATCH_UP
    assert dates[0] == d("2020-01-02") and dates == sorted(dates)
    assert all((b - a).days == 1 for a, b in zip(dates, dates[1:], strict=False))


def test_jobs_for_declares_one_evaluation_per_program_and_an_expiry_pass():
    specs = jobs_for({"music": "monthly", "creator": "daily"})
    assert [(s.id, s.kind, s.program, s.cadence, s.hour) for s in specs] == [
        ("evaluate:creator", "evaluate", "creator", "daily", 1),
        ("evaluate:music", "evaluate", "music", "monthly", 1),
        ("benefits:expire", "expire", None, "daily", 2),
    ]


# -- fixtures and helpers for the database tests --------------------------------------------------


class Clock:
    def __init__(self, now: dt.datetime):
        self.now = now

    def __call__(self) -> dt.datetime:
        return self.now

    def advance(self, **delta: float) -> dt.datetime:
        self.now += dt.timedelta(**delta)
        return self.now


class Died(BaseException):
    """The process dying: not an Exception, so nothing in the scheduler records it."""


@pytest.fixture(autouse=True)
def private_lock_key(monkeypatch):
    monkeypatch.setattr(lock_module, "LOCK_KEY", random.randrange(10**9, 2 * 10**9))


@pytest.fixture
def schedulers():
    """make(engine, holder, clock) -> Scheduler; every leader lock is released afterwards."""
    made: list[Scheduler] = []

    def make(engine: Engine, holder: str, clock: Clock) -> Scheduler:
        scheduler = Scheduler(session_factory(engine), holder=holder, clock=clock)
        made.append(scheduler)
        return scheduler

    yield make
    for scheduler in made:
        scheduler.lock.release()


@pytest.fixture
def twin(backend, tmp_path):
    """An identical second, empty database (tables created) for the uninterrupted run."""
    if backend == "sqlite":
        engine = make_engine(f"sqlite:///{tmp_path / 'twin.db'}")
        Base.metadata.create_all(engine)
        yield engine
        engine.dispose()
        return
    url = os.environ["PORTAL_TEST_POSTGRES_URL"]
    schema = "t_" + uuid.uuid4().hex[:12]
    admin = make_engine(url)
    with admin.begin() as conn:
        conn.execute(text(f'CREATE SCHEMA "{schema}"'))
    engine = make_engine(url, connect_args={"options": f"-csearch_path={schema}"})
    Base.metadata.create_all(engine)
    yield engine
    engine.dispose()
    with admin.begin() as conn:
        conn.execute(text(f'DROP SCHEMA "{schema}" CASCADE'))
    admin.dispose()


def creator_rows(world: World, key: str, on: dt.date, level: str, plays: float | None = None) -> None:
    """Rows dated `on` meeting the basic tasks of LV2 or LV3 (valid 30 days from `on`)."""
    for gauge in GAUGES:
        world.add(key, gauge, on, 1)
    if level == "LV2":
        world.add(key, "courses_completed", on, 5)
        world.add(key, "live", on, plays or 15_000, times=8)
        world.add(key, "submission_task", on, 1)
        return
    world.add(key, "courses_completed", on, 8)
    world.add(key, "live", on, plays or 60_000, times=20)
    world.add(key, "submission_task", on, 1)
    world.add(key, "order", on, 1)
    world.add(key, "followers", on, 300_001)
    world.add(key, "likes", on, 10_001)
    world.add(key, "credit_score", on, 50)


def one_of_each(world: World) -> None:
    """A member in every program: creator LV3, member silver, music B, scorecard D."""
    world.load_programs()
    world.member("c1", "creator")
    creator_rows(world, "c1", D - dt.timedelta(days=5), "LV3")
    world.member("m1", "member")
    world.add("m1", "verified", "2026-01-01", 1)
    world.add("m1", "purchase", D - dt.timedelta(days=10), 600)
    world.member("u1", "music")
    world.add("u1", "monthly_plays", D - dt.timedelta(days=3), 20_000_000)
    world.member("k1", "scorecard")


def build(engine: Engine, story, *args) -> None:
    """Tell a data story on a database through its own session (both databases alike)."""
    with session_factory(engine)() as s:
        story(World(s), *args)


def population(world: World, before: dt.date = D - dt.timedelta(days=1)) -> None:
    """Creators and members evaluated by hand as of `before`, with changes as of D: downgrades
    that revoke and expire items, an upgrade, a claimed item, unchanged members."""
    world.load_programs()
    world.member("boss", role="staff")
    for key in ("c0", "c1", "c2", "c3", "c4"):
        world.member(key, "creator")
    creator_rows(world, "c0", before - dt.timedelta(days=3), "LV3")
    world.add("c0", "courses_completed", D, 5)  # down to LV2 as of D
    creator_rows(world, "c1", before - dt.timedelta(days=3), "LV3")  # unchanged
    creator_rows(world, "c2", before - dt.timedelta(days=3), "LV2")
    creator_rows(world, "c2", D, "LV3", plays=100_000)  # up to LV3 as of D
    creator_rows(world, "c4", before - dt.timedelta(days=3), "LV3")
    world.add("c4", "courses_completed", D, 5)  # down as of D, with its card claimed before
    for key, spend in (("m0", 2500), ("m1", 600), ("m2", 600), ("m3", 10)):
        world.member(key, "member")
        world.add(key, "verified", "2026-01-01", 1)
        world.add(key, "purchase", before - dt.timedelta(days=5), spend)
    world.add("m2", "purchase", D, 1500)  # silver -> gold as of D
    world.add("m3", "verified", D, 0)  # regular, protected: no change
    world.evaluate("creator", before)
    world.evaluate("member", before)
    card = world.s.scalars(select(BenefitItem).join(Member, Member.id == BenefitItem.member_id)
                           .where(Member.key == "c4", BenefitItem.benefit_key == "guarantee_card")).one()
    claim(world.s, card.member_id, card.id, before)
    world.s.commit()


def snapshot(engine: Engine, notifications: bool = False) -> dict[str, list]:
    """Standings, level changes and benefit items (and notifications), by member key, without
    ids, run ids and creation times."""
    with session_factory(engine)() as s:
        keys = dict(s.execute(select(Member.id, Member.key)).all())

        def rows(model, skip: set[str]) -> list[dict]:
            cols = [c for c in model.__table__.columns if c.name not in skip]
            out = []
            for r in s.execute(select(*cols)):
                row = dict(r._mapping)
                row["member_id"] = keys[row["member_id"]]
                out.append(row)
            return sorted(out, key=repr)

        shot = {
            "standings": rows(Standing, set()),
            "level_changes": rows(LevelChange, {"id", "run_id", "created_at"}),
            "benefit_items": rows(BenefitItem, {"id", "created_at", "change_id"}),
        }
        if notifications:
            shot["notifications"] = rows(Notification, {"id", "created_at", "read_at"})
        return shot


def job_runs(engine: Engine) -> list[JobRun]:
    with session_factory(engine)() as s:
        return list(s.scalars(select(JobRun).order_by(JobRun.job, JobRun.as_of)))


def runs_per_program_date(engine: Engine) -> Counter:
    with session_factory(engine)() as s:
        return Counter((r.program_key, r.as_of) for r in s.execute(select(EvaluationRun.program_key, EvaluationRun.as_of)))


def evaluation_dates(engine: Engine, program: str) -> list[dt.date]:
    """As-of dates of a program's evaluation runs in the order they were started."""
    with session_factory(engine)() as s:
        return list(s.scalars(select(EvaluationRun.as_of).where(EvaluationRun.program_key == program).order_by(EvaluationRun.id)))


def levels(engine: Engine, program: str) -> dict[str, tuple]:
    """Each member's level, and the date it stands as of (the program's latest evaluation)."""
    with session_factory(engine)() as s:
        return {k: (lvl, as_of) for k, lvl, as_of in s.execute(
            select(Member.key, Standing.level, ProgramRow.evaluated_as_of).join(Member, Member.id == Standing.member_id)
            .join(ProgramRow, ProgramRow.key == Standing.program_key).where(Standing.program_key == program))}


def written_on(engine: Engine, program: str) -> dict[str, dt.date]:
    """The date each standing was last written (a run writes a standing when it changes)."""
    with session_factory(engine)() as s:
        return dict(s.execute(select(Member.key, Standing.as_of).join(Member, Member.id == Standing.member_id)
                              .where(Standing.program_key == program)).all())


def seed_done(engine: Engine, job: str, as_of: dt.date) -> None:
    """A job run recorded as done (what an earlier scheduler left)."""
    with session_factory(engine)() as s:
        s.add(JobRun(job=job, as_of=as_of, status="done", holder="earlier", started_at=at("2026-01-01"),
                     heartbeat_at=at("2026-01-01"), finished_at=at("2026-01-01"), attempts=1))
        s.commit()


def tick_together(*schedulers: Scheduler) -> list[list[tuple]]:
    barrier = threading.Barrier(len(schedulers))
    results: list = [None] * len(schedulers)

    def run(i: int) -> None:
        barrier.wait(timeout=30)
        try:
            results[i] = schedulers[i].tick()
        except Exception as exc:  # noqa: BLE001 - asserted below
            results[i] = exc

    threads = [threading.Thread(target=run, args=(i,), daemon=True) for i in range(len(schedulers))]
    for t in threads:
        t.start()
    for t in threads:
        t.join(timeout=300)
    assert not any(t.is_alive() for t in threads), "a scheduler hung"
    for r in results:
        assert not isinstance(r, Exception), repr(r)
    return results


# -- ticks -----------------------------------------------------------------------------------------


def test_a_tick_runs_every_programs_evaluation_and_records_the_runs(engine, world, schedulers):
    one_of_each(world)
    scheduler = schedulers(engine, "a", Clock(TICK))
    outcomes = scheduler.tick()
    assert outcomes == [(job, D, "done") for job in EVALUATE_JOBS] + [("benefits:expire", D, "done")]

    runs = {r.job: r for r in job_runs(engine)}
    assert set(runs) == {*EVALUATE_JOBS, "benefits:expire"}
    for run in runs.values():
        assert (run.as_of, run.status, run.holder, run.attempts, run.error) == (D, "done", "a", 1, None)
        assert run.started_at is not None and run.finished_at is not None
    assert runs["evaluate:creator"].counts == {"evaluated": 1, "upgraded": 1, "downgraded": 0, "unchanged": 0,
                                               "blacklisted": 0, "benefits_issued": 9}
    for job in EVALUATE_JOBS:
        assert runs[job].counts["evaluated"] == 1 and runs[job].counts["upgraded"] == 1
    assert runs["benefits:expire"].counts == {"expired": 0}

    assert runs_per_program_date(engine) == {(p, D): 1 for p in PROGRAMS}
    with session_factory(engine)() as s:
        assert set(s.scalars(select(EvaluationRun.status))) == {"done"}
    assert levels(engine, "creator") == {"c1": ("LV3", D)}
    assert levels(engine, "member") == {"m1": ("silver", D)}
    assert levels(engine, "music") == {"u1": ("B", D)}
    assert levels(engine, "scorecard") == {"k1": ("D", D)}


def test_a_second_tick_runs_nothing_new(engine, world, schedulers):
    one_of_each(world)
    clock = Clock(TICK)
    scheduler = schedulers(engine, "a", clock)
    scheduler.tick()
    before = (len(job_runs(engine)), runs_per_program_date(engine))
    clock.advance(minutes=1)
    assert scheduler.tick() == []
    # a restarted process (same holder, new instance) finds nothing due either
    assert schedulers(engine, "a", clock).tick() == []
    assert (len(job_runs(engine)), runs_per_program_date(engine)) == before


def test_the_next_day_runs_only_the_daily_jobs(engine, world, schedulers):
    one_of_each(world)
    clock = Clock(TICK)
    scheduler = schedulers(engine, "a", clock)
    scheduler.tick()
    clock.now = at("2026-07-02", 1, 30)  # daily evaluations due, the expiry pass not before 02:00
    nxt = D + dt.timedelta(days=1)
    assert scheduler.tick() == [("evaluate:creator", nxt, "done"), ("evaluate:member", nxt, "done")]
    clock.now = at("2026-07-02", 2, 0)
    assert scheduler.tick() == [("benefits:expire", nxt, "done")]
    assert levels(engine, "creator") == {"c1": ("LV3", nxt)}
    assert levels(engine, "music") == {"u1": ("B", D)}


def test_a_hand_run_evaluation_counts_as_done(engine, world, schedulers):
    one_of_each(world)
    world.evaluate("creator", D)
    outcomes = schedulers(engine, "a", Clock(TICK)).tick()
    assert ("evaluate:creator", D, "done") not in outcomes
    assert runs_per_program_date(engine)[("creator", D)] == 1


def test_a_job_whose_process_died_after_its_evaluation_committed_is_settled_not_left_running(
        engine, world, schedulers):
    """Killed between the evaluation's commit and the job's 'done': the evaluation counts as
    done, so no takeover comes; the next tick records the job done and queues the run's
    webhooks instead of leaving it 'running' forever."""
    from sqlalchemy import insert

    from portal.models import WebhookDelivery
    from portal.services.webhooks import add_endpoint

    one_of_each(world)
    add_endpoint(world.s, "http://127.0.0.1:9/hook", ["level_change", "benefit_issued"])
    world.s.commit()
    world.evaluate("creator", D)  # what the dead process had committed
    stamp = dt.datetime.combine(D, dt.time(0, 5), tzinfo=dt.UTC)
    with session_factory(engine)() as s:
        s.execute(insert(JobRun.__table__).values(job="evaluate:creator", as_of=D, status="running", holder="dead",
                                                  started_at=stamp, heartbeat_at=stamp, attempts=1))
        s.commit()
    schedulers(engine, "a", Clock(TICK)).tick()
    with session_factory(engine)() as s:
        job = s.execute(select(JobRun).where(JobRun.job == "evaluate:creator", JobRun.as_of == D)).scalar_one()
        queued = s.scalar(select(func.count()).select_from(WebhookDelivery))
    assert job.status == "done" and job.counts["evaluated"] == 1
    assert queued >= 1
    assert runs_per_program_date(engine)[("creator", D)] == 1


# -- two schedulers ----------------------------------------------------------------------------------


def test_two_schedulers_at_once_only_the_leader_acts(engine, world, schedulers):
    one_of_each(world)
    a, b = schedulers(engine, "a", Clock(TICK)), schedulers(engine, "b", Clock(TICK))
    first, second = tick_together(a, b)
    assert sorted([bool(first), bool(second)]) == [False, True]  # one acts, the other does nothing
    acted = first or second
    assert {(job, as_of) for job, as_of, _ in acted} == {(job, D) for job in [*EVALUATE_JOBS, "benefits:expire"]}
    assert runs_per_program_date(engine) == {(p, D): 1 for p in PROGRAMS}
    assert {r.holder for r in job_runs(engine)} == {"a" if first else "b"}


def test_without_the_lock_each_job_and_date_still_runs_once(engine, world, schedulers, twin, monkeypatch):
    """Both schedulers act (the lock bypassed) over five days of catch-up: the job_runs key
    lets each (job, as-of) run once, in date order, with the result of a single scheduler."""
    monkeypatch.setattr(LeaderLock, "acquire", lambda self, now=None: True)
    start = D - dt.timedelta(days=5)
    for target in (engine, twin):
        build(target, population, start)  # evaluated by hand as of D-5: catch-up from D-4
        seed_done(target, "benefits:expire", start)
        for job in ("evaluate:music", "evaluate:scorecard"):
            seed_done(target, job, d("2026-03-31"))

    a, b = schedulers(engine, "a", Clock(TICK)), schedulers(engine, "b", Clock(TICK))
    results = tick_together(a, b)
    done = Counter((job, as_of) for result in results for job, as_of, outcome in result if outcome == "done")
    others = {outcome for result in results for _, _, outcome in result if outcome != "done"}
    daily = [start + dt.timedelta(days=k) for k in range(1, 6)]
    monthly = [d("2026-04-30"), d("2026-05-31"), D]
    expected = {(job, day): 1 for job in ("evaluate:creator", "evaluate:member", "benefits:expire") for day in daily}
    expected |= {(job, day): 1 for job in ("evaluate:music", "evaluate:scorecard") for day in monthly}
    assert dict(done) == expected
    assert others <= {"skipped", "busy"}

    runs = [r for r in job_runs(engine) if r.holder != "earlier"]
    assert Counter((r.job, r.as_of) for r in runs) == expected
    assert all(r.status == "done" and r.attempts == 1 for r in runs)
    per = runs_per_program_date(engine)
    assert all(n == 1 for n in per.values()), per
    assert {k for k in per if k[0] in ("creator", "member")} == {
        (p, day) for p in ("creator", "member") for day in [start, *daily]}  # start: the hand-run evaluation
    for program in ("creator", "member"):
        assert evaluation_dates(engine, program) == sorted(evaluation_dates(engine, program))

    alone = schedulers(twin, "alone", Clock(TICK))
    alone.tick()
    assert snapshot(engine) == snapshot(twin)


# -- catch-up ------------------------------------------------------------------------------------


def protection_story(world: World) -> None:
    """Member m: gold from 2026-03-01 (protected until 05-29), unverified from 05-27 - so down
    on 05-30, when the protection ends - and verified again on 05-31: gold again.
    Member n: silver, then gold from a purchase on 05-29."""
    world.load_programs()
    world.member("m", "member")
    world.add("m", "verified", "2026-01-01", 1)
    world.add("m", "purchase", "2026-03-01", 2500)
    world.add("m", "verified", "2026-05-27", 0)
    world.add("m", "verified", "2026-05-31", 1)
    world.member("n", "member")
    world.add("n", "verified", "2026-01-01", 1)
    world.add("n", "purchase", "2026-03-01", 600)
    world.add("n", "purchase", "2026-05-29", 1500)
    world.evaluate("member", "2026-03-01")


def test_a_scheduler_down_three_days_catches_up_in_order_like_daily_runs(engine, schedulers, twin):
    build(engine, protection_story)
    build(twin, protection_story)
    for target in (engine, twin):
        seed_done(target, "evaluate:member", d("2026-05-24"))

    daily_clock, down_clock = Clock(at("2026-05-26")), Clock(at("2026-05-26"))
    daily, down = schedulers(twin, "daily", daily_clock), schedulers(engine, "down", down_clock)
    for day in range(26, 32 + 3):  # ticks 05-26 .. 06-03 (as of 05-25 .. 06-02)
        daily_clock.now = at("2026-05-26") + dt.timedelta(days=day - 26)
        assert ("evaluate:member", daily_clock.now.date() - dt.timedelta(days=1), "done") in daily.tick()
    daily.lock.release()  # (PostgreSQL: both databases are schemas of one database, and the lock key is per database)

    for day in ("2026-05-26", "2026-05-27", "2026-05-28"):
        down_clock.now = at(day)
        assert ("evaluate:member", down_clock.now.date() - dt.timedelta(days=1), "done") in down.tick()
    # down on 05-29, 05-30 and 05-31; back on 06-01 at 03:00
    down_clock.now = at("2026-06-01")
    outcomes = [(as_of, outcome) for job, as_of, outcome in down.tick() if job == "evaluate:member"]
    assert outcomes == [(d(x), "done") for x in ("2026-05-28", "2026-05-29", "2026-05-30", "2026-05-31")]
    for day in ("2026-06-02", "2026-06-03"):
        down_clock.now = at(day)
        assert ("evaluate:member", down_clock.now.date() - dt.timedelta(days=1), "done") in down.tick()

    expected_dates = [d("2026-03-01")] + [d("2026-05-25") + dt.timedelta(days=k) for k in range(9)]
    assert evaluation_dates(engine, "member") == expected_dates  # as_of ascending: in order
    assert evaluation_dates(twin, "member") == expected_dates

    with session_factory(engine)() as s:
        story = [(k, c.on.isoformat(), c.from_level, c.to_level, c.direction) for k, c in s.execute(
            select(Member.key, LevelChange).join(Member, Member.id == LevelChange.member_id)
            .order_by(LevelChange.on, Member.key))]
    assert story == [
        ("m", "2026-03-01", None, "gold", "up"),
        ("n", "2026-03-01", None, "silver", "up"),
        ("n", "2026-05-29", "silver", "gold", "up"),
        ("m", "2026-05-30", "gold", None, "down"),  # the first day after the 90-day protection
        ("m", "2026-05-31", None, "gold", "up"),
    ]
    assert snapshot(engine, notifications=True) == snapshot(twin, notifications=True)


# -- a run that dies, a run that fails -----------------------------------------------------------


def test_a_run_that_died_mid_way_is_taken_over_and_completes_like_an_uninterrupted_one(engine, schedulers, twin):
    build(engine, population)
    build(twin, population)

    clock = Clock(TICK)
    dying = schedulers(engine, "dying", clock)
    dying.batch_size = 2
    calls = []

    def die_after_the_first_batch() -> None:
        calls.append(1)
        raise Died()

    dying.fault = die_after_the_first_batch
    with pytest.raises(Died):
        dying.tick()
    assert len(calls) == 1
    dying.lock.release()  # its process is gone, and with it the advisory lock's connection

    (run,) = [r for r in job_runs(engine) if r.job == "evaluate:creator"]
    assert (run.as_of, run.status, run.holder, run.attempts, run.finished_at) == (D, "running", "dying", 1, None)
    # the first batch (two of the members whose outcome changes) was committed as of D; the
    # others still stand as the run of D-1 left them
    before = written_on(engine, "creator")
    assert sorted(before.values()).count(D) == 2 and len(before) == 5
    assert all(d < D for d in before.values() if d != D)

    nxt = schedulers(engine, "next", clock)
    nxt.batch_size = 2
    clock.advance(minutes=5)  # heartbeat not yet stale: the run is left alone
    outcomes = nxt.tick()
    assert ("evaluate:creator", D, "busy") in outcomes
    assert [o for o in outcomes if o[0] != "evaluate:creator"] == [
        (job, D, "done") for job in ("evaluate:member", "evaluate:music", "evaluate:scorecard", "benefits:expire")]
    clock.advance(minutes=6)  # 11 minutes since the last heartbeat
    assert nxt.tick() == [("evaluate:creator", D, "done")]
    (run,) = [r for r in job_runs(engine) if r.job == "evaluate:creator"]
    assert (run.status, run.holder, run.attempts, run.error) == ("done", "next", 2, None)
    clock.advance(minutes=1)
    assert nxt.tick() == []
    nxt.lock.release()  # (PostgreSQL: the twin is a schema of the same database, with the same lock key)

    uninterrupted = schedulers(twin, "alone", Clock(TICK))
    uninterrupted.batch_size = 2
    uninterrupted.tick()
    mine, theirs = snapshot(engine), snapshot(twin)
    for table in ("standings", "level_changes", "benefit_items"):
        assert mine[table] == theirs[table], table
    assert levels(engine, "creator") == {"c0": ("LV2", D), "c1": ("LV3", D), "c2": ("LV3", D), "c3": (None, D),
                                         "c4": ("LV2", D)}
    with session_factory(engine)() as s:
        done = s.scalar(select(func.count()).select_from(EvaluationRun).where(
            EvaluationRun.program_key == "creator", EvaluationRun.as_of == D, EvaluationRun.status == "done"))
    assert done == 1


def failing_once(scheduler: Scheduler) -> list[int]:
    calls: list[int] = []

    def fault() -> None:
        calls.append(1)
        if len(calls) == 1:
            raise RuntimeError("boom: the database went away")

    scheduler.fault = fault
    scheduler.batch_size = 2
    return calls


def test_a_failing_job_is_recorded_and_retried_on_a_later_tick(engine, schedulers):
    build(engine, population)
    clock = Clock(TICK)
    scheduler = schedulers(engine, "a", clock)
    failing_once(scheduler)
    outcomes = scheduler.tick()
    assert outcomes[0] == ("evaluate:creator", D, "failed")
    assert [o[2] for o in outcomes[1:]] == ["done"] * 4  # the other jobs go on
    (run,) = [r for r in job_runs(engine) if r.job == "evaluate:creator"]
    assert (run.status, run.attempts, run.counts) == ("failed", 1, None)
    assert run.error.startswith("RuntimeError: boom: the database went away")
    assert "Traceback" in run.error and naive(run.finished_at) == naive(TICK)

    clock.advance(minutes=1)  # a failed run is retried at once (no staleness wait)
    assert scheduler.tick() == [("evaluate:creator", D, "done")]
    (run,) = [r for r in job_runs(engine) if r.job == "evaluate:creator"]
    assert (run.status, run.attempts, run.error) == ("done", 2, None)
    assert run.counts["evaluated"] == 5
    assert levels(engine, "creator")["c0"] == ("LV2", D)


def test_a_failed_date_holds_back_later_dates_and_is_given_up_after_three_attempts(engine, schedulers):
    build(engine, population, D - dt.timedelta(days=3))  # evaluated by hand as of D-3: D-2, D-1, D are due
    clock = Clock(TICK)
    scheduler = schedulers(engine, "a", clock)
    scheduler.batch_size = 2

    def always() -> None:
        raise RuntimeError("always")

    scheduler.fault = always

    for attempt in (1, 2, 3):
        outcomes = [o for o in scheduler.tick() if o[0] == "evaluate:creator"]
        assert outcomes == [("evaluate:creator", D - dt.timedelta(days=2), "failed")]  # later dates wait
        (run,) = [r for r in job_runs(engine) if r.job == "evaluate:creator"]
        assert (run.status, run.attempts) == ("failed", attempt)
        clock.advance(minutes=1)
    scheduler.fault = None
    assert [o for o in scheduler.tick() if o[0] == "evaluate:creator"] == [
        ("evaluate:creator", D - dt.timedelta(days=2), "busy")]  # no fourth attempt
    assert [r.as_of for r in job_runs(engine) if r.job == "evaluate:creator"] == [D - dt.timedelta(days=2)]
    assert levels(engine, "creator")["c1"] != ("LV3", D)  # D-1 and D were never run


def test_a_failed_attempt_does_not_leave_an_evaluation_run_running(engine, schedulers):
    build(engine, population)
    clock = Clock(TICK)
    scheduler = schedulers(engine, "a", clock)
    failing_once(scheduler)
    scheduler.tick()
    clock.advance(minutes=1)
    scheduler.tick()
    with session_factory(engine)() as s:
        statuses = sorted(s.scalars(select(EvaluationRun.status).where(EvaluationRun.program_key == "creator",
                                                                       EvaluationRun.as_of == D)))
    assert "running" not in statuses, statuses


# -- the leader lock -------------------------------------------------------------------------------


def test_the_leader_lock_has_one_holder_at_a_time(engine):
    a, b = LeaderLock(engine, "a"), LeaderLock(engine, "b")
    try:
        assert a.acquire(TICK)
        assert not b.acquire(TICK)
        assert a.acquire(TICK + dt.timedelta(minutes=1))  # renewed
        assert not b.acquire(TICK + dt.timedelta(minutes=2))
        a.release()
        assert b.acquire(TICK + dt.timedelta(minutes=2))
        assert not a.acquire(TICK + dt.timedelta(minutes=3))
    finally:
        a.release()
        b.release()


def test_a_dead_leaders_lock_passes_on(engine, backend):
    """PostgreSQL: the advisory lock goes with the dead process's connection; SQLite: the
    lease runs out three minutes after its last renewal."""
    a, b = LeaderLock(engine, "a"), LeaderLock(engine, "b")
    try:
        assert a.acquire(TICK)
        if backend == "postgres":
            a._conn.invalidate()  # the connection is gone with the process
            a._conn = None
            assert b.acquire(TICK)
        else:
            assert not b.acquire(TICK + dt.timedelta(seconds=179))
            assert b.acquire(TICK + dt.timedelta(seconds=181))
        assert not a.acquire(TICK + dt.timedelta(seconds=182))
    finally:
        a.release()
        b.release()
