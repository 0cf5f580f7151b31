"""The scheduler: APScheduler 3.11 ticking once a minute; each tick runs every job's due
as-of dates in order (catching up after downtime), each (job, as-of) exactly once.

Runs inside the web process (PORTAL_SCHEDULER=on, the demo) or alone (`portal scheduler`).
A run is claimed by inserting its job_runs row (unique per job and as-of date); a run whose
process died is taken over once its heartbeat is stale, and - the evaluation being
idempotent - completes with no duplicate level change or benefit.
"""

from __future__ import annotations

import datetime as dt
import logging
import os
import socket
import traceback
from collections.abc import Callable
from typing import TYPE_CHECKING

from sqlalchemy import func, select, update
from sqlalchemy.dialects import postgresql, sqlite
from sqlalchemy.orm import Session, sessionmaker

from ..models import EvaluationRun, JobRun
from .definitions import JobSpec, jobs_for
from .lock import LeaderLock

if TYPE_CHECKING:  # APScheduler is imported where a scheduler starts, not by `portal evaluate`
    from apscheduler.schedulers.background import BackgroundScheduler

log = logging.getLogger("portal.scheduler")
JR = JobRun.__table__
STALE = dt.timedelta(minutes=10)  # a running job without a heartbeat this long is dead
MAX_ATTEMPTS = 3


def holder_name() -> str:
    return f"{socket.gethostname()}:{os.getpid()}"


class Scheduler:
    """The job logic, independent of APScheduler (tests call ``tick`` with their own clock)."""

    def __init__(self, factory: sessionmaker[Session], holder: str | None = None,
                 clock: Callable[[], dt.datetime] | None = None):
        self.factory = factory
        self.holder = holder or holder_name()
        self.clock = clock or (lambda: dt.datetime.now(dt.UTC))
        self.lock = LeaderLock(factory.kw["bind"], self.holder)
        self.batch_size: int | None = None
        self.fault: Callable[[], None] | None = None  # tests: called after each committed batch

    def jobs(self) -> list[JobSpec]:
        from ..services import programs as ps

        with self.factory() as s:
            return jobs_for({k: p.cadence for k, (p, _) in ps.all_current(s).items()})

    def tick(self) -> list[tuple[str, dt.date, str]]:
        """Run what is due; returns (job, as_of, outcome) for each run attempted."""
        now = self.clock()
        if not self.lock.acquire(now):
            return []
        done: list[tuple[str, dt.date, str]] = []
        self.deliver_webhooks(now)
        for spec in self.jobs():
            self._settle(spec, now)
            for as_of in spec.due_dates(self._last_done(spec), now):
                outcome = self._run(spec, as_of)
                done.append((spec.id, as_of, outcome))
                if outcome in ("failed", "busy"):
                    break  # later dates wait: rules need every period in order
        return done

    def deliver_webhooks(self, now: dt.datetime) -> dict[str, int]:
        from ..services.webhooks import deliver_due

        with self.factory() as s:
            out = deliver_due(s, now)
            s.commit()
        return out

    def _settle(self, spec: JobSpec, now: dt.datetime) -> None:
        """A process that died after its evaluation committed but before it recorded the job
        done leaves the job 'running' - and the evaluation counts as done, so no takeover would
        come. Finish such jobs: queue the run's webhooks (deduplicated) and record them done."""
        if spec.kind != "evaluate":
            return
        runs = EvaluationRun.__table__
        with self.factory() as s:
            stale = s.execute(select(JR.c.id, JR.c.as_of).where(
                JR.c.job == spec.id, JR.c.status == "running", JR.c.heartbeat_at < now - STALE)).all()
            for job_run in stale:
                run = s.execute(select(runs).where(runs.c.program_key == spec.program, runs.c.as_of == job_run.as_of,
                                                   runs.c.status == "done").order_by(runs.c.id.desc()).limit(1)).first()
                if run is None:
                    continue  # not finished: the normal takeover runs it again
                counts = {k: getattr(run, k) for k in ("evaluated", "upgraded", "downgraded", "unchanged", "blacklisted")}
                settled = s.execute(update(JR).where(JR.c.id == job_run.id, JR.c.status == "running")
                                    .values(status="done", finished_at=now, counts=counts)).rowcount
                if settled:
                    from ..services.webhooks import enqueue_run

                    enqueue_run(s, run.id, spec.program, job_run.as_of, now)
            s.commit()

    def _last_done(self, spec: JobSpec) -> dt.date | None:
        """The newest completed as-of date, counting evaluations run by hand (`portal
        evaluate`): the scheduler never goes back before them (that would rewrite history)."""
        with self.factory() as s:
            last = s.scalar(select(func.max(JR.c.as_of)).where(JR.c.job == spec.id, JR.c.status == "done"))
            if spec.kind == "evaluate":
                runs = EvaluationRun.__table__
                manual = s.scalar(select(func.max(runs.c.as_of)).where(runs.c.program_key == spec.program,
                                                                       runs.c.status == "done"))
                if manual is not None and (last is None or manual > last):
                    last = manual
            return last

    def _claim(self, job: str, as_of: dt.date) -> int | None:
        """Our run id if we may run (job, as_of) now, else None."""
        now = self.clock()
        with self.factory() as s:
            dialect = sqlite if s.get_bind().dialect.name == "sqlite" else postgresql
            new = s.execute(
                dialect.insert(JR).values(job=job, as_of=as_of, status="running", holder=self.holder, started_at=now,
                                          heartbeat_at=now, attempts=1)
                .on_conflict_do_nothing(index_elements=["job", "as_of"]).returning(JR.c.id)
            ).scalar()
            if new is not None:
                s.commit()
                return new
            taken = s.execute(
                update(JR)
                .where(JR.c.job == job, JR.c.as_of == as_of, JR.c.attempts < MAX_ATTEMPTS,
                       (JR.c.status == "failed") | ((JR.c.status == "running") & (JR.c.heartbeat_at < now - STALE)))
                .values(status="running", holder=self.holder, heartbeat_at=now, attempts=JR.c.attempts + 1, error=None)
                .returning(JR.c.id)
            ).scalar()
            s.commit()
            return taken

    def _run(self, spec: JobSpec, as_of: dt.date) -> str:
        run_id = self._claim(spec.id, as_of)
        if run_id is None:
            with self.factory() as s:
                status = s.scalar(select(JR.c.status).where(JR.c.job == spec.id, JR.c.as_of == as_of))
            return "skipped" if status == "done" else "busy"
        try:
            counts = self._execute(spec, as_of, run_id)
        except Exception as exc:  # recorded on the run; the scheduler keeps going
            log.exception("job %s as of %s failed", spec.id, as_of)
            with self.factory() as s:
                message = f"{type(exc).__name__}: {exc}"
                s.execute(update(JR).where(JR.c.id == run_id).values(
                    status="failed", finished_at=self.clock(), error=f"{message}\n{traceback.format_exc(limit=5)}"))
                _abandon_runs(s, spec, as_of, message, self.clock())
                s.commit()
            return "failed"
        with self.factory() as s:
            s.execute(update(JR).where(JR.c.id == run_id).values(status="done", finished_at=self.clock(), counts=counts))
            s.commit()
        log.info("job %s as of %s done: %s", spec.id, as_of, counts)
        return "done"

    def _execute(self, spec: JobSpec, as_of: dt.date, run_id: int) -> dict:
        from ..engine.run import BATCH, evaluate, expire_items
        from ..services import programs as ps

        with self.factory() as s:
            _abandon_runs(s, spec, as_of, "abandoned: the process running it stopped; taken over", self.clock())
            s.commit()
            if spec.kind == "expire":
                n = sum(expire_items(s, key, as_of, self.clock()) for key in ps.keys(s))
                s.commit()
                return {"expired": n}
            program, version = ps.definition(s, spec.program)

            def batch_done() -> None:
                s.execute(update(JR).where(JR.c.id == run_id).values(heartbeat_at=self.clock()))
                s.commit()
                if self.fault:
                    self.fault()

            summary = evaluate(s, program, version, as_of, on_batch=batch_done, batch_size=self.batch_size or BATCH)
            s.commit()
            queue_webhooks(s, summary)
            s.commit()
            return {k: getattr(summary, k) for k in ("evaluated", "upgraded", "downgraded", "unchanged", "blacklisted",
                                                     "benefits_issued")}


def _abandon_runs(session: Session, spec: JobSpec, as_of: dt.date, error: str, now: dt.datetime) -> None:
    """Evaluation runs of this job and date left 'running' by a failure or a dead process."""
    if spec.kind != "evaluate":
        return
    runs = EvaluationRun.__table__
    session.execute(update(runs).where(runs.c.program_key == spec.program, runs.c.as_of == as_of,
                                       runs.c.status == "running")
                    .values(status="failed", finished_at=now, error=error[:2000]))


def queue_webhooks(session: Session, summary) -> int:
    """Level changes and benefits of a finished run, queued for the configured webhooks."""
    from ..services.webhooks import enqueue_run

    if summary.run_id is None or summary.started_at is None:
        return 0
    return enqueue_run(session, summary.run_id, summary.program, summary.as_of, dt.datetime.now(dt.UTC))


def _scheduler_for(app) -> Scheduler:
    from ..database import db

    return Scheduler(db.factory)


def _add_tick(aps, app) -> None:
    from apscheduler.triggers.interval import IntervalTrigger

    scheduler = _scheduler_for(app)

    def tick() -> None:
        with app.app_context():
            scheduler.tick()

    aps.add_job(tick, IntervalTrigger(seconds=60), id="portal-tick", coalesce=True, max_instances=1,
                next_run_time=dt.datetime.now(dt.UTC), replace_existing=True)


def start_background(app) -> BackgroundScheduler:
    from apscheduler.schedulers.background import BackgroundScheduler

    aps = BackgroundScheduler(timezone="UTC")
    _add_tick(aps, app)
    aps.start()
    app.extensions["portal.scheduler"] = aps
    return aps


def run_blocking(app) -> None:
    from apscheduler.schedulers.blocking import BlockingScheduler

    aps = BlockingScheduler(timezone="UTC")
    _add_tick(aps, app)
    log.info("scheduler started (%s)", holder_name())
    aps.start()
