"""A small builder for test data on a real database, and readers of the results."""

from __future__ import annotations

import contextlib
import datetime as dt
from collections.abc import Iterator
from typing import Any

from sqlalchemy import select
from sqlalchemy.orm import Session

from portal.engine.run import Summary, evaluate
from portal.models import Enrolment, LevelChange, Member, MetricRow, Standing
from portal.services import programs as programs_service
from portal.services.standings import member_standings

NOW = dt.datetime(2026, 1, 1, tzinfo=dt.UTC)


def d(text: str) -> dt.date:
    return dt.date.fromisoformat(text)


class World:
    """Members, enrolments and metric rows, committed before each evaluation."""

    def __init__(self, session: Session):
        self.s = session
        self._ids: dict[str, int] = {}
        self._loaded = False
        self._event = 0

    def load_programs(self) -> None:
        if not self._loaded:
            programs_service.load_builtins(self.s)
            self.s.commit()
            self._loaded = True

    def publish(self, text: str) -> int:
        """Publish a custom definition (YAML text); returns its version."""
        self._loaded or self.load_programs()
        result = programs_service.publish(self.s, text, "test.yaml")
        self.s.commit()
        return result.version

    def member(self, key: str, *programs: str, role: str = "member") -> int:
        self.load_programs()
        m = Member(key=key, name=key, role=role, created_at=NOW)
        self.s.add(m)
        self.s.flush()
        for p in programs:
            self.s.add(Enrolment(member_id=m.id, program_key=p, enrolled_on=d("2020-01-01")))
        self.s.commit()
        self._ids[key] = m.id
        return m.id

    def add(self, member: str, metric: str, date: str | dt.date, value: float = 1, kind: str | None = None,
            event_id: str | None = None, times: int = 1) -> None:
        day = d(date) if isinstance(date, str) else date
        for _ in range(times):
            self.s.add(MetricRow(member_id=self._ids[member], metric=metric, date=day, value=value, kind=kind, event_id=event_id))
        self.s.commit()

    def rows(self, member: str, metric: str, dates: list[str | dt.date], value: float = 1, kind: str | None = None) -> None:
        for day in dates:
            self.s.add(MetricRow(member_id=self._ids[member], metric=metric, date=d(day) if isinstance(day, str) else day,
                                 value=value, kind=kind))
        self.s.commit()

    def evaluate(self, program: str, as_of: str | dt.date, dry_run: bool = False, full: bool = False) -> Summary:
        definition, version = programs_service.definition(self.s, program)
        day = d(as_of) if isinstance(as_of, str) else as_of
        summary = evaluate(self.s, definition, version, day, dry_run=dry_run, now=NOW, full=full)
        self.s.commit()
        return summary

    def standing(self, member: str, program: str) -> dict[str, Any]:
        self.s.expire_all()
        return member_standings(self.s, member, program)[0]

    def values(self, member: str, program: str) -> dict[str, Any]:
        """The values the member's standing is explained with (as the latest run saw them)."""
        from portal.services import explain

        definition, _ = programs_service.definition(self.s, program)
        return explain.values_of(self.s, definition, self._ids[member], self.stored(member, program),
                                 explain.evaluated(self.s, program))

    def level(self, member: str, program: str) -> str | None:
        return self.standing(member, program)["level"]

    def stored(self, member: str, program: str) -> Standing | None:
        self.s.expire_all()
        return self.s.get(Standing, (self._ids[member], program))

    def changes(self, member: str, program: str) -> list[LevelChange]:
        self.s.expire_all()
        return list(
            self.s.scalars(
                select(LevelChange)
                .where(LevelChange.member_id == self._ids[member], LevelChange.program_key == program)
                .order_by(LevelChange.on, LevelChange.id)
            )
        )


def req(standing: dict[str, Any], level: str, key: str) -> dict[str, Any]:
    """One requirement row of a standing."""
    for r in standing["requirements"]:
        if r["level"] == level and r["key"] == key:
            return r
    raise AssertionError(f"no requirement {level}/{key} in {standing['requirements']}")


def free_port() -> int:
    """A free TCP port on loopback (for a server a test starts)."""
    import socket

    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def wait_until_serving(base: str, proc=None, seconds: float = 60) -> None:
    """Poll ``base``/healthz until it answers 200; fail if ``proc`` exits or time runs out."""
    import time

    import pytest
    import requests

    deadline = time.monotonic() + seconds
    while True:
        try:
            if requests.get(base + "/healthz", timeout=5).status_code == 200:
                return
        except requests.RequestException:
            pass
        if time.monotonic() > deadline or (proc is not None and proc.poll() is not None):
            pytest.fail(f"the server at {base} did not start")
        time.sleep(0.2)


@contextlib.contextmanager
def recording(engine) -> Iterator[list[str]]:
    """The SQL statements ``engine`` issues inside the block (whitespace collapsed)."""
    from sqlalchemy import event

    seen: list[str] = []

    def record(_conn, _cursor, statement, _params, _context, _executemany):
        seen.append(" ".join(statement.split()))

    event.listen(engine, "before_cursor_execute", record)
    try:
        yield seen
    finally:
        event.remove(engine, "before_cursor_execute", record)


def page_statements(app, client, path: str) -> list[str]:
    """The SQL statements one GET of ``path`` issues (it must answer 200)."""
    with recording(app.extensions["portal.db"].engine) as seen:
        response = client.get(path)
    assert response.status_code == 200, (path, response.status_code)
    return seen
