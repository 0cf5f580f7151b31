"""The scheduler: APScheduler 3.11 running the jobs declared in definitions.py.

Runs inside the web process (PORTAL_SCHEDULER=on, the demo) or alone (`portal scheduler`).
"""

from __future__ import annotations

import datetime as dt
import logging

from apscheduler.schedulers.background import BackgroundScheduler
from apscheduler.schedulers.blocking import BlockingScheduler
from apscheduler.triggers.cron import CronTrigger
from flask import Flask

from .definitions import JobSpec, evaluation_jobs

log = logging.getLogger("portal.scheduler")


def run_evaluation(app: Flask, job: JobSpec, today: dt.date | None = None) -> None:
    from ..engine.run import evaluate
    from ..extensions import db
    from ..services import programs as ps

    as_of = job.as_of(today or dt.date.today())
    with app.app_context(), db.factory() as session:
        program, version = ps.definition(session, job.program)
        summary = evaluate(session, program, version, as_of, on_batch=session.commit)
        session.commit()
        log.info("%s", summary.line())


def _jobs(app: Flask) -> list[JobSpec]:
    from ..extensions import db
    from ..services import programs as ps

    with app.app_context(), db.factory() as session:
        return evaluation_jobs({k: p.cadence for k, (p, _) in ps.all_current(session).items()})


def _add_jobs(scheduler, app: Flask) -> None:
    for job in _jobs(app):
        trigger = (
            CronTrigger(day=1, hour=job.hour, minute=job.minute)
            if job.cadence == "monthly"
            else CronTrigger(hour=job.hour, minute=job.minute)
        )
        scheduler.add_job(run_evaluation, trigger, args=(app, job), id=job.id, coalesce=True,
                          max_instances=1, misfire_grace_time=3600, replace_existing=True)


def start_background(app: Flask) -> BackgroundScheduler:
    scheduler = BackgroundScheduler(timezone="UTC")
    _add_jobs(scheduler, app)
    scheduler.start()
    app.extensions["portal.scheduler"] = scheduler
    return scheduler


def run_blocking(app: Flask) -> None:
    scheduler = BlockingScheduler(timezone="UTC")
    _add_jobs(scheduler, app)
    log.info("scheduler started with %d jobs", len(scheduler.get_jobs()))
    scheduler.start()
