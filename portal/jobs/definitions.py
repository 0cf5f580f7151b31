"""Jobs as data: what runs, on which cadence, as of which date."""

from __future__ import annotations

import datetime as dt
from dataclasses import dataclass

from ..engine.windows import month_end

MAX_CATCH_UP = 400  # periods a scheduler back from downtime replays at most, oldest first


@dataclass(frozen=True)
class JobSpec:
    id: str
    kind: str  # evaluate | expire
    program: str | None
    cadence: str  # daily | monthly
    hour: int = 1  # UTC hour after which the period's run is due

    def latest_due(self, now: dt.datetime) -> dt.date:
        """The newest as-of date due by ``now``. Daily: yesterday (a whole day of data) once
        the hour has come; monthly: the previous month's last day, from the 1st's hour."""
        today = now.date()
        if now.hour < self.hour:
            today -= dt.timedelta(days=1)
        if self.cadence == "monthly":
            return month_end(today, 1)
        return today - dt.timedelta(days=1)

    def previous(self, as_of: dt.date) -> dt.date:
        if self.cadence == "monthly":
            return month_end(as_of, 1)
        return as_of - dt.timedelta(days=1)

    def following(self, as_of: dt.date) -> dt.date:
        if self.cadence == "monthly":
            return month_end(as_of + dt.timedelta(days=1))
        return as_of + dt.timedelta(days=1)

    def due_dates(self, last_done: dt.date | None, now: dt.datetime) -> list[dt.date]:
        """Every as-of date after the last done one up to the newest due, in order, so
        protection periods and consecutive-period rules see every period."""
        latest = self.latest_due(now)
        if last_done is None:
            return [latest]
        out: list[dt.date] = []
        day = self.following(last_done)
        while day <= latest and len(out) < MAX_CATCH_UP:
            out.append(day)
            day = self.following(day)
        return out


def jobs_for(programs: dict[str, str]) -> list[JobSpec]:
    """One evaluation job per program on its cadence ({key: cadence}), and a daily expiry pass
    so the items of monthly programs expire on time too."""
    specs = [JobSpec(f"evaluate:{key}", "evaluate", key, cadence) for key, cadence in sorted(programs.items())]
    specs.append(JobSpec("benefits:expire", "expire", None, "daily", hour=2))
    return specs
