"""The migrations create exactly the schema the models describe, on both databases."""

from __future__ import annotations

from alembic.autogenerate import compare_metadata
from alembic.migration import MigrationContext
from sqlalchemy import func, select

from portal.db import make_engine
from portal.migrate import current_revision, include_object_for, upgrade
from portal.models import Base


def test_migrations_match_the_models(db_url):
    engine = make_engine(db_url)
    upgrade(engine)
    assert current_revision(engine) is not None
    with engine.connect() as conn:
        context = MigrationContext.configure(conn, opts={"include_object": include_object_for(conn.dialect.name)})
        diff = compare_metadata(context, Base.metadata)
    engine.dispose()
    assert diff == []


def test_upgrade_is_idempotent(db_url):
    engine = make_engine(db_url)
    upgrade(engine)
    first = current_revision(engine)
    upgrade(engine)
    assert current_revision(engine) == first
    engine.dispose()


def test_a_database_of_the_previous_release_upgrades_without_loss(db_url):
    """Release 0.1 shipped migration 0001: create that schema, fill it as 0.1 did (programs,
    members, metrics, an evaluation, an audit entry), upgrade to head, and find every row intact
    and the new tables (login sessions, security events, evidence files) working."""
    import datetime as dt

    from sqlalchemy import inspect, text

    from portal.db import session_factory
    from portal.engine.definition import builtin_path, checksum
    from portal.engine.run import evaluate
    from portal.models import EvidenceFile, SecurityEvent, Standing
    from portal.services import audit, login_sessions, security_log
    from portal.services import programs as programs_service
    from portal.services.imports import import_members_csv, import_metrics_csv
    from portal.services.programs import BUILTIN_KEYS

    engine = make_engine(db_url)
    upgrade(engine, "0001")
    assert current_revision(engine) == "0001"
    assert "security_events" not in inspect(engine).get_table_names()
    today = dt.date(2026, 11, 1)
    # The services fill the tables as 0.1 did (columns added later are deferred or not set).
    with engine.begin() as conn:  # the programs as 0.1 published them (its columns only)
        for key in BUILTIN_KEYS:
            source = builtin_path(key).read_text(encoding="utf-8")
            conn.execute(text("INSERT INTO programs (key, name, current_version) VALUES (:k, :k, 1)"), {"k": key})
            conn.execute(text("INSERT INTO program_versions (program_key, version, source, checksum, published_at, "
                              "published_by) VALUES (:k, 1, :s, :c, :t, 'system')"),
                         {"k": key, "s": source, "c": checksum(source), "t": dt.datetime(2026, 10, 1, tzinfo=dt.UTC)})
    with session_factory(engine)() as s:
        import_members_csv(s, "member,name,email,role,password,programs\n"
                              "c001,小美,c001@x.test,member,,creator\nc002,Ann,,member,,creator member\n", today)
        import_metrics_csv(s, "member,metric,date,value\nc001,followers,2026-10-31,120000\n"
                              "c001,video,2026-10-20,9000\nc002,purchase,2026-10-10,300\n")
        audit.record(s, "ops", "benefit.grant", reason="kept")
        s.commit()
    with engine.begin() as conn:  # a finished run as 0.1 recorded it (its columns only)
        conn.execute(text("INSERT INTO evaluation_runs (program_key, program_version, as_of, started_at, "
                          "finished_at, status, evaluated, upgraded, downgraded, unchanged, blacklisted) VALUES "
                          "('creator', 1, '2026-10-31', :t, :t, 'done', 2, 1, 0, 1, 0)"),
                     {"t": dt.datetime(2026, 10, 31, 2, tzinfo=dt.UTC)})
    before = _rows(engine)
    assert len(before["evaluation_runs"]) == 1 and len(before["metric_rows"]) == 3 and len(before["members"]) == 2
    upgrade(engine)
    assert current_revision(engine) == "0005"
    after = _rows(engine)
    for table, rows in before.items():  # every old row, every old column, unchanged
        columns = rows[0].keys() if rows else ()
        assert [{c: r[c] for c in columns} for r in after[table]] == rows, table
    assert [r["metric_mark"] for r in after["evaluation_runs"]] == ["None"]
    with engine.connect() as conn:  # 0004: each program's latest finished run, for the pages
        latest = dict(conn.execute(text("SELECT key, evaluated_as_of FROM programs")).all())
    assert str(latest.pop("creator")) == "2026-10-31" and set(latest.values()) == {None}
    assert set(after) - set(before) == {"evidence_files", "login_sessions", "security_events", "metric_edits"}
    assert all(r["added_at"] != "None" for r in after["enrolments"])  # 0003 rebuilt the table on SQLite
    # 0005: SQLite drops the (metric, date) index no statement reads there; PostgreSQL keeps it.
    indexes = {i["name"] for i in inspect(engine).get_indexes("metric_rows")}
    assert ("ix_metric_rows_metric_date_member" in indexes) == (engine.dialect.name == "postgresql")
    assert {"ix_metric_rows_member_metric_date", "uq_metric_rows_event"} <= indexes
    with engine.begin() as conn:  # 0003's triggers count edits of metric rows
        conn.execute(text("UPDATE metric_rows SET value = value + 1 WHERE metric = 'video'"))
        assert conn.scalar(text("SELECT edits FROM metric_edits")) == 1
    with session_factory(engine)() as s:  # 0005: a stored event is still a duplicate; a row without an id never is
        rows = "member,metric,date,value,kind,id\nc001,video,2026-10-21,5,,e1\nc001,video,2026-10-21,5,,\n"
        first, again = import_metrics_csv(s, rows), import_metrics_csv(s, rows)
        s.commit()
    assert (first.new, first.duplicates, again.new, again.duplicates) == (2, 0, 1, 1)
    with session_factory(engine)() as s:
        program, version = programs_service.definition(s, "creator")
        assert evaluate(s, program, version, today).evaluated == 2  # the upgraded database evaluates
        s.commit()
        member_id = s.scalar(select(Standing.member_id).limit(1))
        token = login_sessions.start(s, member_id, "127.0.0.1")
        security_log.record(s, "login_succeeded", method="POST", route="/login", status=302, member_id=member_id)
        s.add(EvidenceFile(member_id=member_id, program_key="creator", filename="a.pdf", stored_name="x.pdf",
                           content_type="application/pdf", size=1, sha256="0" * 64,
                           uploaded_at=dt.datetime.now(dt.UTC)))
        s.commit()
        assert login_sessions.member_of(s, member_id, token).id == member_id
        assert s.scalar(select(func.count()).select_from(SecurityEvent)) == 1
    engine.dispose()


def _rows(engine) -> dict[str, list[dict[str, str]]]:
    from sqlalchemy import MetaData

    meta = MetaData()
    meta.reflect(engine)
    with engine.connect() as conn:
        return {name: sorted(({k: repr(v) for k, v in row._mapping.items()} for row in conn.execute(table.select())),
                             key=repr)
                for name, table in meta.tables.items() if name != "alembic_version"}


def test_the_latest_migration_downgrades_and_upgrades_again(db_url):
    """0005 undone: the full event constraint and the (metric, date) index come back (and
    SQLite's rebuilt table keeps its edit triggers); upgrading again matches the models."""
    from alembic import command
    from sqlalchemy import inspect, text

    from portal.migrate import alembic_config

    engine = make_engine(db_url)
    upgrade(engine)
    with engine.begin() as conn:
        conn.execute(text("INSERT INTO members (key, name, role, created_at) VALUES ('k1', 'K', 'member', :t)"),
                     {"t": "2026-11-01 00:00:00"})
        member_id = conn.scalar(text("SELECT id FROM members WHERE key = 'k1'"))
        conn.execute(text("INSERT INTO metric_rows (member_id, metric, date, value, event_id) "
                          "VALUES (:m, 'video', '2026-10-01', 1, 'e1')"), {"m": member_id})
    cfg = alembic_config()
    with engine.begin() as conn:
        cfg.attributes["connection"] = conn
        command.downgrade(cfg, "0004")
    assert current_revision(engine) == "0004"
    inspector = inspect(engine)
    assert "ix_metric_rows_metric_date_member" in {i["name"] for i in inspector.get_indexes("metric_rows")}
    assert "uq_metric_rows_event" in {u["name"] for u in inspector.get_unique_constraints("metric_rows")}
    with engine.begin() as conn:
        assert conn.scalar(text("SELECT count(*) FROM metric_rows WHERE event_id = 'e1'")) == 1
        conn.execute(text("UPDATE metric_rows SET value = 2"))
        assert conn.scalar(text("SELECT edits FROM metric_edits")) == 1
    test_migrations_match_the_models(db_url)
