"""The values a standing is explained with (actual vs required) on pages, in the API and the CLI.

A run stores a member's state - level, sub-class, status, dates - and writes it only when it
changes. The values behind it are not stored for programs whose values one member's metric
rows determine: they are recomputed here, for one member, as of the program's latest
evaluation and from the rows that evaluation read (ids up to its metric mark), so they are the
numbers the decision was made on. Programs with population ranks keep their values on the
standing (a rank cannot be recomputed for one member alone).
"""

from __future__ import annotations

import datetime as dt
import threading
from collections import OrderedDict
from dataclasses import dataclass
from typing import Any

from sqlalchemy import select
from sqlalchemy.orm import Session

from ..engine import aggregates
from ..engine.definition import Program
from ..engine.rules import number
from ..engine.scores import Calculator, population_ranked
from ..models import Program as ProgramRow
from ..models import Standing


@dataclass(frozen=True)
class Evaluated:
    """A program's latest finished evaluation: its date, the metric mark it read up to, its run
    and when that ended (with the run id, what identifies the values it decided on)."""

    as_of: dt.date | None = None
    mark: int | None = None
    run_id: int | None = None
    at: dt.datetime | None = None


LATEST = (ProgramRow.evaluated_as_of, ProgramRow.evaluated_mark, ProgramRow.evaluated_run_id,
          ProgramRow.evaluated_at)


def evaluated(session: Session, program_key: str) -> Evaluated:
    row = session.execute(select(*LATEST).where(ProgramRow.key == program_key)).first()
    return Evaluated(*row) if row else Evaluated()


# Recomputed values per (database, member, program, run): a run's values never change, so a
# worker answers the next page of the same member from memory until the next run. Bounded.
CACHE_SIZE = 20_000
_cache: OrderedDict[tuple, tuple[Program, dict[str, Any]]] = OrderedDict()
_lock = threading.Lock()


def as_of(standing: Standing | None, latest: Evaluated) -> dt.date | None:
    """The date a standing holds as of: the program's latest evaluation (a standing is written
    only when it changes, so its own date may be older)."""
    if standing is None:
        return None
    return max(standing.as_of, latest.as_of) if latest.as_of else standing.as_of


def values_of(session: Session, program: Program, member_id: int, standing: Standing | None,
              latest: Evaluated) -> dict[str, Any]:
    """Every value of ``program`` for the member, as the latest evaluation saw them; {} before
    the member's first evaluation. Two or three index-range statements for the member."""
    if standing is None:
        return {}
    if population_ranked(program):
        return dict(standing.values or {})
    day = as_of(standing, latest)
    key = (str(session.get_bind().url), member_id, program.key, day, latest.mark, latest.run_id, latest.at)
    with _lock:
        hit = _cache.get(key)
        if hit is not None and hit[0] is program:  # the same definition (version) too
            _cache.move_to_end(key)
            return dict(hit[1])
    plan = program.derived("explain", "plan", lambda: aggregates.plan(program))
    calc = program.derived("explain", "calculator", lambda: Calculator(program))
    conn = session.connection()
    merger = aggregates.Merger(aggregates.streams(conn, program.key, plan, day, members=member_id, upto=latest.mark))
    values = {k: number(v) for k, v in calc.compute(merger.take(member_id)).items()}
    if latest.at is not None:  # (no run recorded: nothing identifies these values)
        with _lock:
            _cache[key] = (program, values)
            if len(_cache) > CACHE_SIZE:
                _cache.popitem(last=False)
    return dict(values)
