"""The `portal` command as CONTRACT.md states it, on a migrated database."""

from __future__ import annotations

import json

from sqlalchemy import func, inspect, select, text

from portal.models import EvaluationRun, LevelChange, MetricRow, ProgramVersion, Standing

from .conftest import write

MEMBERS = """member,name,email,role,password,programs,industry
c1,Creator One,c1@example.com,member,secret-1,creator,tech
m1,Member One,,member,secret-2,member scorecard,
boss,Staff,boss@example.com,staff,secret-3,,
"""

METRICS = """member,metric,date,value,kind,id
c1,profile_complete,2026-10-01,1,,
c1,task_hall_visited,2026-10-01,1,,
c1,tasks_enabled,2026-10-01,1,,
c1,courses_completed,2026-10-01,3,,
c1,video,2026-10-20,100,,v1
c1,video,2026-10-21,100,,v2
c1,live,2026-10-22,100,,l1
c1,video,2026-10-23,100,,v3
c1,video,2026-10-24,100,,v4
m1,verified,2026-01-01,1,,
m1,purchase,2026-10-01,600,,p1
"""


def db_session(app):
    return app.extensions["portal.db"].factory()


def count(app, model) -> int:
    with db_session(app) as s:
        return s.scalar(select(func.count()).select_from(model))


def loaded(ready, tmp_path):
    assert ready("import", "members", write(tmp_path, "m.csv", MEMBERS)).exit_code == 0
    assert ready("import", "metrics", write(tmp_path, "x.csv", METRICS)).exit_code == 0
    return ready


def test_init_migrates_and_is_idempotent(cli, app):
    first = cli("init")
    assert first.exit_code == 0
    assert "program creator: version 1 (published)" in first.output
    second = cli("init")
    assert second.exit_code == 0
    assert "program creator: version 1 (unchanged)" in second.output
    tables = set(inspect(app.extensions["portal.db"].engine).get_table_names())
    assert {"alembic_version", "members", "metric_rows", "standings", "level_changes", "evaluation_runs",
            "program_versions", "enrolments", "programs", "audit_log"} <= tables
    assert count(app, ProgramVersion) == 4


def test_import_counts_new_and_duplicate_rows(ready, tmp_path):
    assert "3 members created" in ready("import", "members", write(tmp_path, "m.csv", MEMBERS)).output
    path = write(tmp_path, "x.csv", METRICS)
    assert "11 new rows, 0 duplicates skipped" in ready("import", "metrics", path).output
    # rows with an id are duplicates the second time; rows without one are new events
    assert "5 new rows, 6 duplicates skipped" in ready("import", "metrics", path).output


def test_bad_metrics_file_lists_every_bad_row_and_stores_nothing(ready, tmp_path, app):
    ready("import", "members", write(tmp_path, "m.csv", MEMBERS))
    bad = write(tmp_path, "bad.csv", "member,metric,date,value\nc1,video,2026-10-01,5\nnobody,video,2026-10-01,5\n"
                "c1,nosuch,2026-10-01,5\nc1,video,2026-13-01,5\nc1,video,2026-10-01,abc\nc1,video,2026-10-01\n")
    result = ready("import", "metrics", bad)
    assert result.exit_code == 1
    out = result.output
    assert "line 3: unknown member 'nobody'" in out
    assert "line 4: unknown metric 'nosuch'" in out
    assert "line 5: bad date '2026-13-01'" in out
    assert "line 6: bad number 'abc'" in out
    assert "line 7: missing column value" in out
    assert "5 bad rows; nothing was stored" in out
    assert count(app, MetricRow) == 0


def test_missing_file_is_a_clear_error(ready):
    result = ready("import", "metrics", "/nonexistent/file.csv")
    assert result.exit_code == 1
    assert "no such file: /nonexistent/file.csv" in result.output


def test_evaluate_prints_summary_and_dry_run_writes_nothing(ready, tmp_path, app):
    loaded(ready, tmp_path)
    dry = ready("evaluate", "--as-of", "2026-10-31", "--dry-run")
    assert dry.exit_code == 0
    assert "[dry run]" in dry.output and "c1: - -> LV1 up" in dry.output
    assert count(app, Standing) == 0 and count(app, LevelChange) == 0 and count(app, EvaluationRun) == 0
    real = ready("evaluate", "--as-of", "2026-10-31")
    assert "creator as of 2026-10-31: evaluated 1, upgraded 1, downgraded 0, unchanged 0, blacklisted 0" in real.output
    # creator LV1: identity_tag, extra_dispatch, square_booth; member silver: 5; scorecard D: 1
    assert "evaluated 3, upgraded 3, downgraded 0, unchanged 0, blacklisted 0, benefits issued 9" in real.output
    again = ready("evaluate", "--as-of", "2026-10-31", "--program", "creator")
    assert "evaluated 1, upgraded 0, downgraded 0, unchanged 1" in again.output


def test_evaluate_rejects_unknown_program_and_bad_date(ready):
    result = ready("evaluate", "--program", "nope")
    assert result.exit_code == 1 and "unknown program 'nope'" in result.output
    result = ready("evaluate", "--as-of", "31/10/2026")
    assert result.exit_code == 1 and "bad date '31/10/2026'" in result.output


def test_standing_json_has_the_contract_shape(ready, tmp_path):
    loaded(ready, tmp_path)
    ready("evaluate", "--as-of", "2026-10-31")
    result = ready("standing", "c1", "--program", "creator", "--json")
    assert result.exit_code == 0
    data = json.loads(result.output)
    assert set(data) >= {"member", "program", "as_of", "level", "rank", "sub_class", "category", "score", "status",
                         "requirements", "next_level", "reward_tasks_met", "last_change", "benefits"}
    assert (data["member"], data["program"], data["as_of"], data["level"], data["rank"]) == ("c1", "creator", "2026-10-31", "LV1", 1)
    assert data["next_level"] == "LV2" and data["status"] == "active"
    row = next(r for r in data["requirements"] if r["level"] == "LV2" and r["key"] == "posts_30d")
    assert row == {"level": "LV2", "key": "posts_30d", "metric": "video+live", "actual": 5, "op": ">=",
                   "required": 8, "met": False, "window": "30d"}
    assert data["last_change"]["from"] is None and data["last_change"]["to"] == "LV1"
    everything = json.loads(ready("standing", "m1", "--json").output)
    assert [s["program"] for s in everything] == ["member", "scorecard"]


def test_standing_errors_are_clear(ready, tmp_path):
    loaded(ready, tmp_path)
    result = ready("standing", "ghost")
    assert result.exit_code == 1 and "unknown member 'ghost'" in result.output
    result = ready("standing", "c1", "--program", "nope")
    assert result.exit_code == 1 and "unknown program 'nope'" in result.output
    result = ready("standing", "c1", "--program", "music")
    assert result.exit_code == 1 and "member 'c1' is not enrolled in program 'music'" in result.output


def test_programs_list_show_and_lint(ready, tmp_path):
    listing = ready("programs", "list").output
    for key in ("creator", "member", "scorecard", "music"):
        assert key in listing
    show = ready("programs", "show", "creator").output
    assert "posts_30d >= 30" in show and "quote_set = 1  (only while followers >= 100,000)" in show
    lint = ready("programs", "lint", "scorecard")
    assert lint.exit_code == 0
    assert "level S is unreachable" in lint.output and "level A is unreachable" in lint.output
    assert "0 errors, 2 warnings" in lint.output
    bad = write(tmp_path, "bad.yaml", "key: x\nname: X\ncadence: daily\nselection: ladder\nmetrics: {}\n"
                "values: {a: {metric: nosuch, agg: count}}\nlevels: [{key: L1}]\n")
    result = ready("programs", "lint", bad)
    assert result.exit_code == 1
    assert "error: values.a.metric: unknown metric 'nosuch'" in result.output


def test_programs_load_publishes_a_new_version_and_keeps_the_old(ready, tmp_path, app):
    source = ready("programs", "show", "scorecard", "--source").output
    same = ready("programs", "load", write(tmp_path, "same.yaml", source))
    assert "version 1 unchanged" in same.output
    fixed = source.replace("band: {min: 90, min_op: \">=\"}", "band: {min: 70, min_op: \">=\"}").replace(
        "band: {min: 75, min_op: \">=\", max: 90, max_op: \"<\"}", "band: {min: 65, min_op: \">=\", max: 70, max_op: \"<\"}").replace(
        "band: {min: 60, min_op: \">=\", max: 75, max_op: \"<\"}", "band: {min: 60, min_op: \">=\", max: 65, max_op: \"<\"}")
    assert fixed != source
    result = ready("programs", "load", write(tmp_path, "fixed.yaml", fixed), "--by", "alice")
    assert result.exit_code == 0, result.output
    assert "program scorecard: version 2 published" in result.output
    with db_session(app) as s:
        versions = s.execute(select(ProgramVersion.version, ProgramVersion.published_by)
                             .where(ProgramVersion.program_key == "scorecard").order_by(ProgramVersion.version)).all()
    assert [tuple(v) for v in versions] == [(1, "system"), (2, "alice")]
    assert "level S is unreachable" not in ready("programs", "lint", "scorecard").output


def test_an_sqlite_older_than_3_35_is_refused_with_a_message(tmp_path):
    """RETURNING and aggregate FILTER need SQLite 3.35: an older library is named, not met
    with a traceback on the first run (Python's own sqlite3 decides the version)."""
    import os
    import subprocess
    import sys

    from portal.db import check_sqlite

    check_sqlite((3, 35, 0))  # the oldest it accepts
    code = ("import sys, sqlite3; sqlite3.sqlite_version_info = (3, 34, 1); "
            "from portal.cli import main; sys.argv = ['portal', 'init']; main()")
    env = {**os.environ, "PORTAL_DATABASE_URL": f"sqlite:///{tmp_path}/p.db"}
    r = subprocess.run([sys.executable, "-c", code], env=env, capture_output=True, text=True, timeout=120)
    assert r.returncode == 1
    assert "needs SQLite 3.35.0 or newer" in r.stderr and "links SQLite 3.34.1" in r.stderr
    assert "Traceback" not in r.stderr
    assert not (tmp_path / "p.db").exists()


def _portal(url: str, *args: str):
    import os
    import subprocess
    import sys

    env = {**os.environ, "PORTAL_DATABASE_URL": url}
    code = f"import sys; from portal.cli import main; sys.argv = ['portal', *{list(args)!r}]; main()"
    return subprocess.run([sys.executable, "-c", code], env=env, capture_output=True, text=True, timeout=120)


def test_a_command_before_init_names_portal_init_instead_of_a_traceback(db_url, tmp_path):
    for args in (("import", "metrics", write(tmp_path, "x.csv", METRICS)), ("evaluate",), ("programs", "list")):
        r = _portal(db_url, *args)
        assert r.returncode == 1, args
        assert "error: the database has no Portal schema yet: run `portal init` first" in r.stderr, (args, r.stderr)
        assert "Traceback" not in r.stderr


def test_an_unreachable_database_is_named_not_a_traceback(tmp_path):
    r = _portal("postgresql://portal@127.0.0.1:9/portal?connect_timeout=5", "programs", "list")
    assert r.returncode == 1
    assert r.stderr.startswith("error: cannot use the database: ") and "127.0.0.1" in r.stderr, r.stderr
    assert "Traceback" not in r.stderr


def test_help_lists_the_commands_without_building_the_app(tmp_path):
    """`portal --help` needs no app: it works even with a database the app would refuse, and
    offers no third-party plugin commands (flask-limiter's)."""
    r = _portal("mysql://nobody@127.0.0.1/portal", "--help")
    assert r.returncode == 0, r.stderr
    commands = {line.split()[0] for line in r.stdout.split("Commands:")[1].splitlines() if line.strip()}
    assert {"init", "demo", "import", "programs", "evaluate", "standing", "scheduler", "run", "tokens", "grant",
            "webhooks", "backup", "restore", "routes", "shell"} <= commands
    assert "limiter" not in commands


_LOADED = ("import atexit, sys; atexit.register(lambda: print('LOADED', sorted({m.split('.')[0] + "
           "('.web' if m.startswith('portal.web') else '') for m in sys.modules}), file=sys.stderr)); ")


def _modules_loaded(url: str, *args: str) -> tuple[int, str]:
    import os
    import subprocess
    import sys

    code = _LOADED + f"from portal.cli import main; sys.argv = ['portal', *{list(args)!r}]; main()"
    r = subprocess.run([sys.executable, "-c", code], env={**os.environ, "PORTAL_DATABASE_URL": url},
                       capture_output=True, text=True, timeout=120)
    return r.returncode, r.stderr.split("LOADED")[-1] + r.stdout


def test_a_command_that_does_not_serve_the_site_imports_none_of_it(ready, app, tmp_path):
    """Start-up time (docs/performance.md, round 15): evaluate and import build an app without the
    site's blueprints and web extensions, and without APScheduler; `routes` still has them all."""
    url = app.config["DATABASE_URL"]
    for args in (("evaluate", "--as-of", "2026-10-31"), ("import", "members", write(tmp_path, "m.csv", MEMBERS))):
        rc, loaded = _modules_loaded(url, *args)
        assert rc == 0, (args, loaded)
        for web_only in ("'portal.web'", "'flask_limiter'", "'flask_wtf'", "'flask_login'", "'flask_babel'",
                         "'apscheduler'"):
            assert web_only not in loaded, (args, web_only, loaded)
    rc, out = _modules_loaded(url, "routes")
    assert rc == 0 and "'portal.web'" in out and "/api/v1/members/<member>/benefits" in out, out


def test_the_metric_import_inserts_without_foreign_key_lookups_on_sqlite(ready, tmp_path, app):
    """The import resolves every member itself inside its transaction (db.bulk_inserts): on
    SQLite that transaction is begun with the per-row checks off, and they are on again after."""
    from sqlalchemy import event

    ready("import", "members", write(tmp_path, "m.csv", MEMBERS))
    database = app.extensions["portal.db"]
    if database.engine.dialect.name != "sqlite":
        assert database.bulk_factory.kw["bind"] is database.engine  # PostgreSQL: the constraint as ever
        assert "11 new rows" in ready("import", "metrics", write(tmp_path, "x.csv", METRICS)).output
        return
    statements: list[str] = []
    database.engine.dispose()  # new connections, traced from their first statement
    event.listen(database.engine, "connect", lambda conn, _record: conn.set_trace_callback(statements.append))
    assert "11 new rows" in ready("import", "metrics", write(tmp_path, "x.csv", METRICS)).output
    off, begin = statements.index("PRAGMA foreign_keys=OFF"), statements.index("BEGIN IMMEDIATE")
    insert = next(i for i, s in enumerate(statements) if s.startswith("INSERT INTO metric_rows"))
    on = statements.index("PRAGMA foreign_keys=ON", off)
    assert off < begin < insert < statements.index("COMMIT") < on
    with db_session(app) as s:
        assert s.execute(text("PRAGMA foreign_key_check")).all() == []
