"""Backup and restore of the embedded SQLite database (PostgreSQL: use pg_dump/pg_restore)."""

from __future__ import annotations

import sqlite3
from pathlib import Path

from sqlalchemy import Engine

from . import ServiceError


def _sqlite_path(engine: Engine) -> Path:
    if engine.dialect.name != "sqlite":
        raise ServiceError("portal backup/restore handle the embedded SQLite database; for PostgreSQL use "
                           "pg_dump -Fc and pg_restore (see the README)")
    return Path(engine.url.database or "")


def _copy(source: Path, target: Path) -> None:
    """SQLite's online backup API: a consistent copy page by page."""
    src, dst = sqlite3.connect(source), sqlite3.connect(target)
    try:
        src.backup(dst)
    finally:
        dst.close()
        src.close()


def backup(engine: Engine, target: str | Path) -> Path:
    """An online, consistent copy (SQLite's backup API) - the site may keep running."""
    source_path = _sqlite_path(engine)
    target = Path(target)
    if target.exists():
        raise ServiceError(f"{target} exists already; choose a new file")
    target.parent.mkdir(parents=True, exist_ok=True)
    _copy(source_path, target)
    return target


def restore(engine: Engine, source: str | Path) -> None:
    """Replace the database with a backup (stop the site and scheduler first)."""
    target_path = _sqlite_path(engine)
    source = Path(source)
    if not source.exists():
        raise ServiceError(f"no such file: {source}")
    probe = sqlite3.connect(f"file:{source}?mode=ro", uri=True)
    try:
        ok = probe.execute("PRAGMA integrity_check").fetchone()[0] == "ok"
        tables = {r[0] for r in probe.execute("SELECT name FROM sqlite_master WHERE type='table'")}
    except sqlite3.DatabaseError as exc:
        raise ServiceError(f"{source} is not a SQLite database: {exc}") from None
    finally:
        probe.close()
    if not ok or not {"members", "standings", "alembic_version"} <= tables:
        raise ServiceError(f"{source} is not a Portal backup (integrity check or tables missing)")
    engine.dispose()
    _copy(source, target_path)
