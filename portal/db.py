"""Database engines and sessions, independent of Flask.

SQLite gets WAL, a busy timeout and foreign keys on every connection. Transactions are begun
by us (the driver's own implicit BEGIN is switched off): ``BEGIN IMMEDIATE`` by default, so a
transaction that reads and then writes never fails half-way with SQLITE_BUSY, and plain
``BEGIN`` on the read-only engine the web pages use, so readers never wait for a writer.
"""

from __future__ import annotations

import json
import sqlite3
import time
from collections.abc import Iterable, Sequence
from pathlib import Path

from sqlalchemy import JSON, Engine, Table, create_engine, event, exc
from sqlalchemy.engine import make_url
from sqlalchemy.orm import Session, sessionmaker

SQLITE_BUSY_TIMEOUT_MS = 30_000
# A pooled server connection idle at least this long is tested before use (see _ping_when_idle).
PING_AFTER_IDLE_S = 5.0
# RETURNING needs 3.35 (2021), aggregate FILTER 3.30: an older library fails on the first run.
SQLITE_MIN = (3, 35, 0)


class UnsupportedDatabase(RuntimeError):
    pass


def check_sqlite(version: tuple[int, ...] = sqlite3.sqlite_version_info) -> None:
    """Refuse, with a message saying why, a SQLite library older than SQLITE_MIN."""
    if tuple(version) < SQLITE_MIN:
        raise UnsupportedDatabase(
            f"Portal needs SQLite {'.'.join(map(str, SQLITE_MIN))} or newer; this Python's sqlite3 "
            f"links SQLite {'.'.join(map(str, version))}. Use a Python built with a newer SQLite, or "
            "PostgreSQL (PORTAL_DATABASE_URL).")


def normalize_url(url: str) -> str:
    """Accept plain ``postgresql://`` URLs and point them at psycopg 3."""
    if url.startswith("postgres://"):
        url = "postgresql://" + url[len("postgres://") :]
    if url.startswith("postgresql://"):
        url = "postgresql+psycopg://" + url[len("postgresql://") :]
    return url


def make_engine(url: str, **kwargs) -> Engine:
    url = normalize_url(url)
    parsed = make_url(url)
    if parsed.get_backend_name() == "sqlite":
        check_sqlite()
        if parsed.database and parsed.database != ":memory:":
            Path(parsed.database).parent.mkdir(parents=True, exist_ok=True)
        connect_args = kwargs.pop("connect_args", {})
        connect_args.setdefault("timeout", SQLITE_BUSY_TIMEOUT_MS / 1000)
        connect_args.setdefault("check_same_thread", False)
        engine = create_engine(url, connect_args=connect_args, **kwargs)
        _configure_sqlite(engine)
        return engine
    engine = create_engine(url, **kwargs)
    if not kwargs.get("pool_pre_ping"):
        _ping_when_idle(engine)
    return engine


def _ping_when_idle(engine: Engine) -> None:
    """Test a pooled connection (SELECT 1) before use only when it sat idle in the pool for
    ``PING_AFTER_IDLE_S``: a connection dropped while idle (a server restart, a firewall's
    timeout) is replaced unseen, while a busy worker, which reuses its connections within
    milliseconds, does not pay a round trip per request as ``pool_pre_ping`` would. A failed
    test invalidates the whole pool, as ``pool_pre_ping`` does; a restart in the middle of a
    burst fails the requests under way, as it would with any ping."""

    @event.listens_for(engine, "checkin")
    def _idle_from(_dbapi_conn, record) -> None:
        record.info["idle_since"] = time.monotonic()

    @event.listens_for(engine, "checkout")
    def _test_if_idle(dbapi_conn, record, _proxy) -> None:
        since = record.info.get("idle_since")
        if since is None or time.monotonic() - since < PING_AFTER_IDLE_S:
            return
        try:
            engine.dialect.do_ping(dbapi_conn)
        except engine.dialect.loaded_dbapi.Error as err:
            if engine.dialect.is_disconnect(err, dbapi_conn, None):
                raise exc.InvalidatePoolError() from err
            raise


def _configure_sqlite(engine: Engine) -> None:
    @event.listens_for(engine, "connect")
    def _on_connect(dbapi_conn, _record):  # pragma: no cover - exercised by every test
        dbapi_conn.isolation_level = None  # we emit BEGIN ourselves, see module doc
        cur = dbapi_conn.cursor()
        cur.execute("PRAGMA journal_mode=WAL")
        cur.execute(f"PRAGMA busy_timeout={SQLITE_BUSY_TIMEOUT_MS}")
        cur.execute("PRAGMA foreign_keys=ON")
        cur.execute("PRAGMA synchronous=NORMAL")
        cur.close()

    @event.listens_for(engine, "begin")
    def _on_begin(conn):
        options = conn.get_execution_options()
        # foreign_keys is a no-op inside a transaction: a transaction's setting (see
        # bulk_inserts) is made before its BEGIN, and only when it differs from the connection's
        checks = options.get("sqlite_foreign_keys", True)
        info = conn.connection.info
        if info.get("foreign_keys", True) != checks:
            conn.exec_driver_sql(f"PRAGMA foreign_keys={'ON' if checks else 'OFF'}")
            info["foreign_keys"] = checks
        conn.exec_driver_sql(f"BEGIN {options.get('sqlite_begin', 'IMMEDIATE')}")

    @event.listens_for(engine, "checkin")
    def _checks_back_on(dbapi_conn, record):  # a pooled connection waits with them on
        if dbapi_conn is not None and not record.info.get("foreign_keys", True):
            try:
                dbapi_conn.execute("PRAGMA foreign_keys=ON")
            except sqlite3.Error:
                return  # still marked off: the next transaction's BEGIN turns them on
            record.info["foreign_keys"] = True


def is_sqlite(engine_or_session: Engine | Session) -> bool:
    bind = engine_or_session.get_bind() if isinstance(engine_or_session, Session) else engine_or_session
    return bind.dialect.name == "sqlite"


def dialect_insert(session: Session, table):
    """The dialect's INSERT (for ON CONFLICT DO NOTHING on SQLite and PostgreSQL alike)."""
    from sqlalchemy.dialects import postgresql, sqlite

    return (sqlite if is_sqlite(session) else postgresql).insert(table)


def copy_insert(session: Session, table: Table, columns: Sequence[str], rows: Iterable[Sequence], conflict: str = "") -> int:
    """PostgreSQL: INSERT ``rows`` (values in ``columns`` order) in their order, through COPY
    into a temporary table and one INSERT ... SELECT, inside the session's transaction;
    returns how many were inserted (``conflict``: e.g. ``ON CONFLICT (...) DO NOTHING``).
    A multi-row INSERT of thousands of rows (SQLAlchemy's executemany) costs several times
    more: psycopg rewrites each such statement's placeholders in Python, uncached because
    the statement is long (docs/performance.md, round 12). JSON columns take Python values."""
    encoded = [i for i, c in enumerate(columns) if isinstance(table.c[c].type, JSON)]
    names = ", ".join(f'"{c}"' for c in columns)  # quoted: "on" is a keyword
    conn = session.connection()
    # The table's own column types, without its constraints; the names are our metadata's.
    # The statements around the COPY go through SQLAlchemy, so its events see them (statement
    # counts, logging). No DROP on failure: the failed statement aborted the transaction,
    # and its rollback takes the table with it (a DROP now would only hide the error).
    conn.exec_driver_sql(f"CREATE TEMPORARY TABLE portal_copy AS SELECT 0::bigint AS portal_seq, {names} "  # nosec B608
                         f"FROM {table.name} WITH NO DATA")
    with conn.connection.driver_connection.cursor() as cur, \
            cur.copy(f"COPY portal_copy (portal_seq, {names}) FROM STDIN") as copy:
        write = copy.write_row
        if encoded:
            for seq, row in enumerate(rows):
                values = list(row)
                for i in encoded:
                    values[i] = json.dumps(values[i])  # as SQLAlchemy's JSON type stores it (None: null)
                write((seq, *values))
        else:
            for seq, row in enumerate(rows):
                write((seq, *row))
    inserted = conn.exec_driver_sql(f"INSERT INTO {table.name} ({names}) SELECT {names} FROM portal_copy "  # nosec B608
                                    f"ORDER BY portal_seq {conflict}").rowcount
    conn.exec_driver_sql("DROP TABLE portal_copy")
    return inserted


def read_only(engine: Engine) -> Engine:
    """The same pool, for the web's GET and HEAD requests. SQLite: transactions begin DEFERRED
    (readers never queue). PostgreSQL: autocommit, which saves a page the BEGIN and ROLLBACK
    round trips (two of an overview's five) and changes nothing it sees: at READ COMMITTED
    every statement takes its own snapshot anyway. A GET's one write, the security log's
    INSERT, is a single statement."""
    if engine.dialect.name == "sqlite":
        return engine.execution_options(sqlite_begin="DEFERRED")
    return engine.execution_options(isolation_level="AUTOCOMMIT")


def bulk_inserts(engine: Engine) -> Engine:
    """The same pool, for a transaction that inserts rows whose parents' ids it read itself
    in that same transaction (the metric import: ``member_ids``, then the INSERTs). SQLite:
    no foreign-key lookup per inserted row, a third of a large import's insert (round 20 in
    docs/performance.md); the ids cannot go stale, because the transaction begins IMMEDIATE
    and holds the write lock from its first read, so no member can be deleted before its
    commit. The checks are back on for the connection's next transaction. PostgreSQL:
    unchanged (its constraint is enforced whatever the session)."""
    if engine.dialect.name == "sqlite":
        return engine.execution_options(sqlite_foreign_keys=False)
    return engine


def session_factory(engine: Engine) -> sessionmaker[Session]:
    return sessionmaker(bind=engine, expire_on_commit=False)
