"""portal backup / restore on the embedded SQLite database: a round trip loses nothing."""

from __future__ import annotations

import pytest
from sqlalchemy import func, select

from portal.models import BenefitItem, LevelChange, Member, MetricRow, Standing

from .conftest import write
from .test_cli import MEMBERS, METRICS

TABLES = (Member, MetricRow, Standing, LevelChange, BenefitItem)


def counts(app) -> dict[str, int]:
    with app.extensions["portal.db"].factory() as s:
        return {m.__tablename__: s.scalar(select(func.count()).select_from(m)) for m in TABLES}


SQLITE = pytest.mark.parametrize("backend", ["sqlite"], indirect=True)  # SQLite's own feature
POSTGRES = pytest.mark.parametrize("backend", ["postgres"], indirect=True)


@pytest.fixture
def filled(ready, tmp_path):
    ready("import", "members", write(tmp_path, "m.csv", MEMBERS))
    ready("import", "metrics", write(tmp_path, "x.csv", METRICS))
    ready("evaluate", "--as-of", "2026-10-31")
    return ready


@SQLITE
def test_backup_then_restore_round_trip(filled, app, tmp_path):
    before = counts(app)
    assert before["standings"] == 3 and before["benefit_items"] > 0
    target = tmp_path / "backups" / "portal-1.db"
    assert "backed up to" in filled("backup", str(target)).output
    filled("import", "metrics", write(tmp_path, "more.csv", "member,metric,date,value\nc1,video,2026-11-01,9\n"))
    filled("evaluate", "--as-of", "2026-11-01")
    assert counts(app) != before
    result = filled("restore", str(target), "--yes")
    assert result.exit_code == 0, result.output
    assert counts(app) == before


@SQLITE
def test_backup_refuses_to_overwrite_and_restore_refuses_a_foreign_file(filled, tmp_path):
    target = tmp_path / "b.db"
    filled("backup", str(target))
    again = filled("backup", str(target))
    assert again.exit_code == 1 and "exists already" in again.output
    junk = write(tmp_path, "junk.db", "not a database")
    result = filled("restore", junk, "--yes")
    assert result.exit_code == 1 and "not a" in result.output
    missing = filled("restore", str(tmp_path / "nope.db"), "--yes")
    assert missing.exit_code == 1 and "no such file" in missing.output


@POSTGRES
def test_backup_on_postgresql_points_to_pg_dump(ready):
    result = ready("backup", "/tmp/x.db")
    assert result.exit_code == 1 and "pg_dump" in result.output
