"""Only one scheduler acts at a time: a PostgreSQL advisory lock held on a dedicated
connection for the scheduler's life, or on SQLite a lease row renewed on every tick.

This saves work; correctness does not depend on it: each (job, as-of) run is claimed through
a unique row in job_runs, so even two active schedulers run every job once."""

from __future__ import annotations

import datetime as dt

from sqlalchemy import Connection, Engine, text, update
from sqlalchemy.dialects import sqlite

from ..models import SchedulerLease

LOCK_KEY = 727_001  # pg_try_advisory_lock key of the portal scheduler
LEASE_SECONDS = 180


class LeaderLock:
    def __init__(self, engine: Engine, holder: str):
        self.engine, self.holder = engine, holder
        self._conn: Connection | None = None

    def acquire(self, now: dt.datetime | None = None) -> bool:
        """True when this process is (still) the leader."""
        if self.engine.dialect.name == "postgresql":
            if self._conn is not None:
                return True
            conn = self.engine.connect().execution_options(isolation_level="AUTOCOMMIT")
            # keyed by schema too, so two deployments sharing one database do not block each other
            if conn.execute(text("SELECT pg_try_advisory_lock(:k, hashtext(current_schema()))"), {"k": LOCK_KEY}).scalar():
                self._conn = conn
                return True
            conn.close()
            return False
        return self._lease(now or dt.datetime.now(dt.UTC))

    def _lease(self, now: dt.datetime) -> bool:
        table = SchedulerLease.__table__
        until = now + dt.timedelta(seconds=LEASE_SECONDS)
        with self.engine.begin() as conn:
            conn.execute(sqlite.insert(table).values(name="scheduler", holder=self.holder, expires_at=until)
                         .on_conflict_do_nothing(index_elements=["name"]))
            taken = conn.execute(
                update(table).where(table.c.name == "scheduler",
                                    (table.c.holder == self.holder) | (table.c.expires_at < now))
                .values(holder=self.holder, expires_at=until)
            ).rowcount
        return taken == 1

    def release(self) -> None:
        if self._conn is not None:
            self._conn.execute(text("SELECT pg_advisory_unlock(:k, hashtext(current_schema()))"), {"k": LOCK_KEY})
            self._conn.close()
            self._conn = None
        elif self.engine.dialect.name == "sqlite":
            table = SchedulerLease.__table__
            with self.engine.begin() as conn:
                conn.execute(update(table).where(table.c.name == "scheduler", table.c.holder == self.holder)
                             .values(expires_at=dt.datetime(1970, 1, 1, tzinfo=dt.UTC)))
