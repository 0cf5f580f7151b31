"""The PostgreSQL pool tests a connection before use only after it sat idle (portal/db.py):
a connection the server dropped while idle is replaced unseen, and a connection reused at
once costs no extra round trip."""

from __future__ import annotations

import os

import pytest
from sqlalchemy import exc, text

from portal import db
from portal.db import make_engine

PG_URL = os.environ.get("PORTAL_TEST_POSTGRES_URL")


@pytest.fixture
def pool():
    if not PG_URL:
        pytest.skip("PORTAL_TEST_POSTGRES_URL is not set")
    engine = make_engine(PG_URL, pool_size=1, max_overflow=0)
    admin = make_engine(PG_URL)
    yield engine, admin
    engine.dispose()
    admin.dispose()


def _backend_pid(engine) -> int:
    with engine.connect() as conn:
        return conn.execute(text("SELECT pg_backend_pid()")).scalar_one()


def _drop(admin, pid: int) -> None:
    """The server ends the pooled connection's session, as a restart would."""
    # Autocommit: a transaction reads pg_stat_activity once and keeps that snapshot, so a wait
    # inside one only ever saw the backend go if it had gone before the first look (this race
    # failed twice in round 17, once in CI).
    with admin.connect().execution_options(isolation_level="AUTOCOMMIT") as conn:
        assert conn.execute(text("SELECT pg_terminate_backend(:p)"), {"p": pid}).scalar_one()
        # the backend is gone once pg_stat_activity no longer lists it; up to 10 s, because a
        # loaded host once took more than 2 s to reap one (a CI run of 17f0cb0)
        for _ in range(500):
            if not conn.execute(text("SELECT 1 FROM pg_stat_activity WHERE pid = :p"), {"p": pid}).first():
                return
            conn.execute(text("SELECT pg_sleep(0.02)"))
    raise AssertionError(f"backend {pid} still running")


def test_a_connection_dropped_while_idle_is_replaced_before_use(pool, monkeypatch):
    engine, admin = pool
    monkeypatch.setattr(db, "PING_AFTER_IDLE_S", 0.0)  # every pooled connection counts as idle
    first = _backend_pid(engine)
    _drop(admin, first)
    second = _backend_pid(engine)  # no error: the test found the dead connection
    assert second != first


def test_a_connection_reused_at_once_is_not_tested(pool, monkeypatch):
    """Without the idle time, no ping is sent: the dead connection surfaces in the request
    (which proves the busy path costs no round trip), and the pool recovers after it."""
    engine, admin = pool
    monkeypatch.setattr(db, "PING_AFTER_IDLE_S", 3600.0)
    first = _backend_pid(engine)
    _drop(admin, first)
    with pytest.raises(exc.OperationalError):
        _backend_pid(engine)
    assert _backend_pid(engine) != first


def test_an_explicit_pre_ping_is_left_to_sqlalchemy(pool):
    engine, admin = pool
    pinged = make_engine(PG_URL, pool_size=1, max_overflow=0, pool_pre_ping=True)
    try:
        first = _backend_pid(pinged)
        _drop(admin, first)
        assert _backend_pid(pinged) != first
    finally:
        pinged.dispose()
