"""db.read_only, the engine the web's GET and HEAD requests read through: on PostgreSQL its
statements run in autocommit (no BEGIN and ROLLBACK round trips), and the pooled connection
it used goes back to transactions for the next writer."""

from __future__ import annotations

import os

import pytest
from sqlalchemy import text

from portal.db import make_engine, read_only, session_factory

PG_URL = os.environ.get("PORTAL_TEST_POSTGRES_URL")
# The first statement of a transaction starts it: its start time is the transaction's. A later
# statement inside a transaction block started after the block did.
OWN_TRANSACTION = text("SELECT now() = statement_timestamp()")


@pytest.fixture
def engine():
    if not PG_URL:
        pytest.skip("PORTAL_TEST_POSTGRES_URL is not set")
    engine = make_engine(PG_URL, pool_size=1, max_overflow=0)  # one connection, shared by both
    yield engine
    engine.dispose()


def test_postgres_reads_run_each_statement_in_its_own_transaction(engine):
    with session_factory(read_only(engine))() as s:
        s.execute(text("SELECT 1"))
        assert s.scalar(OWN_TRANSACTION)


def test_the_same_pooled_connection_then_writes_in_a_transaction_block(engine):
    with session_factory(read_only(engine))() as s:
        reader = s.scalar(text("SELECT pg_backend_pid()"))
    with session_factory(engine)() as s:
        assert s.scalar(text("SELECT pg_backend_pid()")) == reader
        assert not s.scalar(OWN_TRANSACTION)
        s.rollback()
