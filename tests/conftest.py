"""Fixtures: a real database per test - a SQLite file always, PostgreSQL too when
PORTAL_TEST_POSTGRES_URL is set (CI sets it; then no PostgreSQL test is skipped)."""

from __future__ import annotations

import os
import uuid

import pytest
from sqlalchemy import text

from portal.db import make_engine, session_factory
from portal.models import Base

from .helpers import World

PG_URL = os.environ.get("PORTAL_TEST_POSTGRES_URL")
BACKENDS = ["sqlite", "postgres"]


def _pg_engine():
    """A private schema per test, dropped afterwards, so tests never see each other's rows."""
    schema = "t_" + uuid.uuid4().hex[:12]
    admin = make_engine(PG_URL)
    with admin.begin() as conn:
        conn.execute(text(f'CREATE SCHEMA "{schema}"'))
    admin.dispose()
    engine = make_engine(PG_URL, connect_args={"options": f"-csearch_path={schema}"})
    return engine, schema


@pytest.fixture(params=BACKENDS)
def backend(request) -> str:
    if request.param == "postgres" and not PG_URL:
        pytest.skip("PORTAL_TEST_POSTGRES_URL is not set")
    return request.param


@pytest.fixture
def db_url(backend, tmp_path):
    """A database URL with an empty schema (tables created by the caller)."""
    if backend == "sqlite":
        yield f"sqlite:///{tmp_path / 'portal.db'}"
        return
    engine, schema = _pg_engine()
    engine.dispose()
    sep = "&" if "?" in PG_URL else "?"
    yield f"{PG_URL}{sep}options=-csearch_path%3D{schema}"
    admin = make_engine(PG_URL)
    with admin.begin() as conn:
        conn.execute(text(f'DROP SCHEMA "{schema}" CASCADE'))
    admin.dispose()


@pytest.fixture
def engine(db_url):
    engine = make_engine(db_url)
    Base.metadata.create_all(engine)
    yield engine
    engine.dispose()


@pytest.fixture
def session(engine):
    with session_factory(engine)() as s:
        yield s


@pytest.fixture
def world(session) -> World:
    return World(session)
