"""Jobs as data: what runs, on which cadence, as of which date."""

from __future__ import annotations

import datetime as dt
from dataclasses import dataclass

from ..engine.windows import month_end


@dataclass(frozen=True)
class JobSpec:
    id: str
    program: str
    cadence: str  # daily | monthly
    hour: int = 1
    minute: int = 0

    def as_of(self, today: dt.date) -> dt.date:
        """Daily programs are evaluated as of the day before the run (a whole day of data);
        monthly ones on the 1st, as of the previous month's last day."""
        if self.cadence == "monthly":
            return month_end(today, 1)
        return today - dt.timedelta(days=1)


def evaluation_jobs(programs: dict[str, str]) -> list[JobSpec]:
    """One evaluation job per program, from its cadence ({key: cadence})."""
    return [JobSpec(f"evaluate:{key}", key, cadence) for key, cadence in sorted(programs.items())]
