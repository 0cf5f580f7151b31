"""Publishing and reading program definitions (versioned: old versions are kept)."""

from __future__ import annotations

import datetime as dt
from dataclasses import dataclass

from sqlalchemy import func, select
from sqlalchemy.orm import Session

from ..engine.definition import (
    BUILTIN_KEYS,
    Program,
    builtin_path,
    checksum,
    load_text,
    text_of,
)
from ..models import Program as ProgramRow
from ..models import ProgramVersion
from . import NotFound


@dataclass(frozen=True)
class Published:
    key: str
    version: int
    created: bool  # False when the same text was already the current version


# Parsed definitions by (key, version): a version's text never changes once published.
_cache: dict[tuple[str, int], Program] = {}


def publish(session: Session, text: str, source: str = "", by: str | None = None, note: str | None = None,
            now: dt.datetime | None = None) -> Published:
    """Validate and store a definition as the program's new current version."""
    text = text.rstrip() + "\n"  # a trailing blank line is not a new version
    program = load_text(text, source)  # raises DefinitionError
    row = session.get(ProgramRow, program.key)
    digest = checksum(text)
    if row is not None:
        current = session.scalar(
            select(ProgramVersion).where(ProgramVersion.program_key == program.key, ProgramVersion.version == row.current_version)
        )
        if current is not None and current.checksum == digest:
            return Published(program.key, row.current_version, False)
    version = (session.scalar(select(func.max(ProgramVersion.version)).where(ProgramVersion.program_key == program.key)) or 0) + 1
    if row is None:
        row = ProgramRow(key=program.key, name=text_of(program.name, "en"), current_version=version)
        session.add(row)
        session.flush()
    session.add(
        ProgramVersion(
            program_key=program.key, version=version, source=text, checksum=digest,
            published_at=now or dt.datetime.now(dt.UTC), published_by=by, note=note,
        )
    )
    row.current_version = version
    row.name = text_of(program.name, "en")
    session.flush()
    _cache[(program.key, version)] = program
    return Published(program.key, version, True)


def load_builtins(session: Session, by: str | None = "system") -> list[Published]:
    return [publish(session, builtin_path(k).read_text(encoding="utf-8"), str(builtin_path(k)), by=by) for k in BUILTIN_KEYS]


def definition(session: Session, key: str, version: int | None = None) -> tuple[Program, int]:
    """The parsed definition of a program (its current version unless one is given)."""
    if version is None:
        row = session.get(ProgramRow, key)
        if row is None:
            raise NotFound(f"unknown program '{key}'")
        version = row.current_version
    cached = _cache.get((key, version))
    if cached is not None:
        return cached, version
    pv = session.scalar(select(ProgramVersion).where(ProgramVersion.program_key == key, ProgramVersion.version == version))
    if pv is None:
        raise NotFound(f"program '{key}' has no version {version}")
    program = load_text(pv.source, f"{key} v{version}")
    _cache[(key, version)] = program
    return program, version


def keys(session: Session) -> list[str]:
    return list(session.scalars(select(ProgramRow.key).order_by(ProgramRow.key)))


def all_current(session: Session) -> dict[str, tuple[Program, int]]:
    return {k: definition(session, k) for k in keys(session)}


def known_metrics(session: Session) -> set[str]:
    return {m for program, _ in all_current(session).values() for m in program.metrics}
