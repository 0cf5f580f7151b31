"""The app's database extension: the engine, the session factories and the request's session.
Apart from the web extensions (portal/extensions.py), so a command-line app imports no web code."""

from __future__ import annotations

from flask import Flask, g, has_request_context, request
from sqlalchemy import Engine
from sqlalchemy.orm import Session, sessionmaker

from .db import bulk_inserts, make_engine, read_only, session_factory


class Database:
    """Engine + a session per request (closed at teardown); the view or service caller commits."""

    engine: Engine
    factory: sessionmaker[Session]
    read_factory: sessionmaker[Session]
    bulk_factory: sessionmaker[Session]

    def init_app(self, app: Flask) -> None:
        self.engine = make_engine(app.config["DATABASE_URL"])
        self.factory = session_factory(self.engine)
        self.read_factory = session_factory(read_only(self.engine))
        self.bulk_factory = session_factory(bulk_inserts(self.engine))
        app.extensions["portal.db"] = self
        app.teardown_appcontext(self._close)

    @property
    def session(self) -> Session:
        """The request's session. GET and HEAD requests (which only read, or write through a
        fresh transaction after a rollback, like the security log) begin DEFERRED on SQLite,
        so pages never queue behind an evaluation's write batch; other methods begin
        IMMEDIATE, so a read-then-write never fails half-way (see db.py)."""
        if "db_session" not in g:
            reading = has_request_context() and request.method in ("GET", "HEAD")
            g.db_session = (self.read_factory if reading else self.factory)()
        return g.db_session

    @staticmethod
    def _close(_exc: BaseException | None) -> None:
        session = g.pop("db_session", None)
        if session is not None:
            session.close()


db = Database()
