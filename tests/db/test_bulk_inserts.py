"""db.bulk_inserts, the engine of the metric import's transaction: on SQLite it inserts with no
foreign-key lookup per row (the import resolves every member itself, in that transaction),
and the pooled connection it used enforces the checks again for whoever takes it next. On
PostgreSQL the constraint holds whatever the session."""

from __future__ import annotations

import pytest
from sqlalchemy import exc, text

from portal.db import bulk_inserts, make_engine, session_factory

ORPHAN = text("INSERT INTO child (parent_id) VALUES (42)")


def _engine(url: str):
    engine = make_engine(url, pool_size=1, max_overflow=0)  # one pooled connection for all sessions
    with engine.begin() as conn:
        conn.execute(text("CREATE TABLE parent (id INTEGER PRIMARY KEY)"))
        conn.execute(text("CREATE TABLE child (id INTEGER PRIMARY KEY, parent_id INTEGER NOT NULL REFERENCES parent (id))"))
    return engine


@pytest.fixture
def engine(db_url):
    engine = _engine(db_url)
    yield engine
    engine.dispose()


@pytest.fixture
def sqlite_engine(tmp_path):
    engine = _engine(f"sqlite:///{tmp_path / 'bulk.db'}")
    yield engine
    engine.dispose()


def _driver(session):
    return session.connection().connection.driver_connection


def test_a_bulk_transaction_on_sqlite_skips_the_checks_and_the_next_one_has_them(engine, backend):
    with session_factory(bulk_inserts(engine))() as s:
        bulk = _driver(s)
        if backend == "postgres":  # the constraint holds whatever the session
            with pytest.raises(exc.IntegrityError):
                s.execute(ORPHAN)
            return
        assert s.scalar(text("PRAGMA foreign_keys")) == 0
        s.execute(ORPHAN)  # not looked up: the caller vouches for its ids
        s.rollback()
    with session_factory(engine)() as s:
        assert _driver(s) is bulk  # the same pooled connection
        assert s.scalar(text("PRAGMA foreign_keys")) == 1
        with pytest.raises(exc.IntegrityError):
            s.execute(ORPHAN)


def test_a_bulk_session_keeps_its_setting_over_several_transactions(sqlite_engine):
    engine = sqlite_engine
    with session_factory(bulk_inserts(engine))() as s:
        s.execute(text("INSERT INTO parent (id) VALUES (1)"))
        s.commit()
        assert s.scalar(text("PRAGMA foreign_keys")) == 0
        s.rollback()
    raw = engine.raw_connection()  # no transaction begun through SQLAlchemy: back on at check-in
    try:
        assert raw.driver_connection.execute("PRAGMA foreign_keys").fetchone() == (1,)
    finally:
        raw.close()


def test_a_connection_switched_back_within_one_checkout_checks_again(sqlite_engine):
    with sqlite_engine.connect() as conn:
        conn.execution_options(sqlite_foreign_keys=False)
        with conn.begin():
            assert conn.scalar(text("PRAGMA foreign_keys")) == 0
        conn.execution_options(sqlite_foreign_keys=True)
        with conn.begin():
            assert conn.scalar(text("PRAGMA foreign_keys")) == 1
