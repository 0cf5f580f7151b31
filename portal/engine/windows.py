"""Date arithmetic of windows and periods. ``as_of`` is always given, never today()."""

from __future__ import annotations

import calendar
import datetime as dt


def month_start(d: dt.date, back: int = 0) -> dt.date:
    """First day of the month ``back`` months before d's month."""
    index = d.year * 12 + (d.month - 1) - back
    return dt.date(index // 12, index % 12 + 1, 1)


def month_end(d: dt.date, back: int = 0) -> dt.date:
    start = month_start(d, back)
    return start.replace(day=calendar.monthrange(start.year, start.month)[1])


def bounds(window: str, as_of: dt.date) -> tuple[dt.date | None, dt.date]:
    """Inclusive (start, end) of a window as of a date.

    ``Nd``: the last N days, D-N+1 .. D. ``Nm``: the N calendar months ending with D's month,
    up to D (rows dated after D do not exist yet as of D). ``all``: everything up to D.
    """
    if window == "all":
        return None, as_of
    n = int(window[:-1])
    if window.endswith("d"):
        return as_of - dt.timedelta(days=n - 1), as_of
    return month_start(as_of, n - 1), as_of


def previous_period_end(as_of: dt.date, period: str, back: int) -> dt.date:
    """The as-of date of the period ``back`` periods before the one containing as_of."""
    if back == 0:
        return as_of
    if period == "day":
        return as_of - dt.timedelta(days=back)
    return month_end(as_of, back)


def add_days(d: dt.date, days: int) -> dt.date:
    return d + dt.timedelta(days=days)
