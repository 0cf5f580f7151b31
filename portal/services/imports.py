"""CSV (and API) imports of members and metric rows: all-or-nothing.

Every row is checked first; if any is bad, nothing is written and every bad row is reported
with its line number (CSV) or index (API) and the reason. Metric rows whose event id is
already stored for the member and metric are duplicates: skipped and counted.
"""

from __future__ import annotations

import csv
import datetime as dt
import io
import math
import re
from collections.abc import Iterable, Iterator
from dataclasses import dataclass, field
from typing import Any

from sqlalchemy import select
from sqlalchemy.dialects import postgresql, sqlite
from sqlalchemy.orm import Session

from ..models import SEGMENTS, Enrolment, Member, MetricRow
from . import ServiceError
from . import programs as programs_service
from .passwords import hash_password

MEMBER_KEY_RE = re.compile(r"^[A-Za-z0-9_.@\-]{1,64}$")
EMAIL_RE = re.compile(r"^[^@\s]+@[^@\s]+\.[^@\s]+$")
DATE_RE = re.compile(r"^\d{4}-\d{2}-\d{2}$")
METRIC_COLUMNS = ("member", "metric", "date", "value")
METRIC_OPTIONAL = ("kind", "id")
MEMBER_COLUMNS = ("member", "name", "email", "role", "password", "programs")
IMPORT_ROLES = ("member", "staff", "admin")
SEGMENT_LENGTH = {"business_type": 64, "industry": 64, "scale": 32}  # the columns' sizes
LOOKUP_CHUNK = 5000
INSERT_CHUNK = 10000


@dataclass
class RowError:
    where: str  # "line 7" or "rows[3]"
    reason: str
    line: int | None = None
    index: int | None = None

    def as_dict(self) -> dict[str, Any]:
        out: dict[str, Any] = {"reason": self.reason}
        if self.line is not None:
            out["line"] = self.line
        if self.index is not None:
            out["index"] = self.index
        return out

    def __str__(self) -> str:
        return f"{self.where}: {self.reason}"


class ImportRejected(ServiceError):
    status = 422

    def __init__(self, errors: list[RowError]):
        self.errors = errors
        super().__init__(
            f"{len(errors)} bad row{'s' if len(errors) != 1 else ''}; nothing was stored",
            [e.as_dict() for e in errors],
        )


@dataclass
class MetricsResult:
    new: int = 0
    duplicates: int = 0

    def line(self) -> str:
        return f"{self.new} new rows, {self.duplicates} duplicates skipped"


@dataclass
class MembersResult:
    created: int = 0
    updated: int = 0
    enrolments_added: int = 0
    enrolments_removed: int = 0
    keys: list[str] = field(default_factory=list)

    def line(self) -> str:
        return (
            f"{self.created} members created, {self.updated} updated, "
            f"{self.enrolments_added} enrolments added, {self.enrolments_removed} removed"
        )


# -- reading ----------------------------------------------------------------------------------


def read_csv(text: str, required: tuple[str, ...], optional: tuple[str, ...]) -> Iterator[tuple[RowError | None, int, dict[str, str]]]:
    """Yield (header error, line, row); a header error stops the file."""
    if text.startswith("\ufeff"):
        text = text[1:]
    reader = csv.reader(io.StringIO(text, newline=""))
    try:
        header = next(reader)
    except StopIteration:
        yield RowError("line 1", "the file is empty (no header)", line=1), 1, {}
        return
    except csv.Error as exc:
        yield RowError("line 1", f"unreadable CSV: {exc}", line=1), 1, {}
        return
    header = [h.strip() for h in header]
    missing = [c for c in required if c not in header]
    unknown = [c for c in header if c not in required + optional]
    dupes = sorted({c for c in header if header.count(c) > 1})
    if missing or unknown or dupes:
        parts = []
        if missing:
            parts.append("missing column" + ("s" if len(missing) > 1 else "") + " " + ", ".join(missing))
        if unknown:
            parts.append("unknown column" + ("s" if len(unknown) > 1 else "") + " " + ", ".join(unknown))
        if dupes:
            parts.append("repeated column " + ", ".join(dupes))
        yield RowError("line 1", "; ".join(parts) + f" (expected {','.join(required)}[,{','.join(optional)}])", line=1), 1, {}
        return
    line = 1
    while True:
        try:
            fields = next(reader)
        except StopIteration:
            return
        except csv.Error as exc:
            line = reader.line_num
            yield RowError(f"line {line}", f"unreadable CSV: {exc}", line=line), line, {}
            return
        line = reader.line_num
        if not fields or all(not f.strip() for f in fields):
            continue  # blank line
        if len(fields) < len(header):
            missing_cols = header[len(fields):]
            yield RowError(f"line {line}", "missing column " + ", ".join(missing_cols), line=line), line, {}
            continue
        if len(fields) > len(header):
            yield RowError(f"line {line}", f"{len(fields)} fields but the header has {len(header)}", line=line), line, {}
            continue
        yield None, line, dict(zip(header, (f.strip() for f in fields), strict=True))


# -- metrics ----------------------------------------------------------------------------------


@dataclass
class _Metric:
    member: str
    metric: str
    date: dt.date
    value: float
    kind: str | None
    event_id: str | None


def _check_metric(raw: dict[str, Any], metrics: set[str]) -> tuple[_Metric | None, list[str]]:
    reasons: list[str] = []
    member = str(raw.get("member") or "").strip()
    metric = str(raw.get("metric") or "").strip()
    date_text = str(raw.get("date") or "").strip()
    value_raw = raw.get("value")
    for name in METRIC_COLUMNS:
        if raw.get(name) is None or str(raw.get(name)).strip() == "":
            reasons.append(f"missing {name}")
    if metric and metric not in metrics:
        reasons.append(f"unknown metric '{metric}'")
    date = None
    if date_text:
        try:
            if not DATE_RE.match(date_text):
                raise ValueError
            date = dt.date.fromisoformat(date_text)
        except ValueError:
            reasons.append(f"bad date '{date_text}' (expected YYYY-MM-DD)")
    value = None
    if value_raw is not None and str(value_raw).strip() != "":
        try:
            text = str(value_raw).strip()
            if isinstance(value_raw, bool) or "_" in text:  # float() would accept 1_000
                raise ValueError
            value = float(text)
            if not math.isfinite(value):
                raise ValueError
        except (ValueError, TypeError):
            reasons.append(f"bad number '{value_raw}'")
    kind = raw.get("kind")
    kind = str(kind).strip() or None if kind is not None else None
    event_id = raw.get("id")
    event_id = str(event_id).strip() or None if event_id is not None else None
    if kind and len(kind) > 64:
        reasons.append("kind is longer than 64 characters")
    if event_id and len(event_id) > 128:
        reasons.append("id is longer than 128 characters")
    if reasons:
        return None, reasons
    return _Metric(member, metric, date, value, kind, event_id), []  # type: ignore[arg-type]


def member_ids(session: Session, keys: Iterable[str]) -> dict[str, int]:
    keys = sorted(set(keys))
    out: dict[str, int] = {}
    for i in range(0, len(keys), LOOKUP_CHUNK):
        chunk = keys[i : i + LOOKUP_CHUNK]
        out.update(session.execute(select(Member.key, Member.id).where(Member.key.in_(chunk))).all())
    return out


def import_metric_rows(session: Session, rows: Iterable[tuple[RowError | None, str, int, dict[str, Any]]]) -> MetricsResult:
    """Validate then store. ``rows``: (early error, where, number, raw) - where is 'line 7'."""
    metrics = programs_service.known_metrics(session)
    errors: list[RowError] = []
    parsed: list[tuple[str, int, _Metric]] = []
    for early, where, number, raw in rows:
        if early is not None:
            errors.append(early)
            continue
        item, reasons = _check_metric(raw, metrics)
        if reasons:
            errors.append(_error(where, number, "; ".join(reasons)))
        else:
            parsed.append((where, number, item))  # type: ignore[arg-type]
    ids = member_ids(session, (p.member for _, _, p in parsed))
    for where, number, item in parsed:
        if item.member not in ids:
            errors.append(_error(where, number, f"unknown member '{item.member}'"))
    if errors:
        errors.sort(key=lambda e: (e.line or 0, e.index or 0))
        raise ImportRejected(errors)

    result = MetricsResult()
    seen: set[tuple[int, str, str]] = set()
    values: list[dict[str, Any]] = []
    for _, _, item in parsed:
        member_id = ids[item.member]
        if item.event_id is not None:
            key = (member_id, item.metric, item.event_id)
            if key in seen:  # the same event twice in one file
                result.duplicates += 1
                continue
            seen.add(key)
        values.append({"member_id": member_id, "metric": item.metric, "date": item.date, "value": item.value,
                       "kind": item.kind, "event_id": item.event_id})
    dialect = sqlite if session.get_bind().dialect.name == "sqlite" else postgresql
    table = MetricRow.__table__
    for i in range(0, len(values), INSERT_CHUNK):
        chunk = values[i : i + INSERT_CHUNK]
        stmt = dialect.insert(table).on_conflict_do_nothing(index_elements=["member_id", "metric", "event_id"]).returning(table.c.id)
        inserted = len(session.execute(stmt, chunk).all())
        result.new += inserted
        result.duplicates += len(chunk) - inserted
    return result


def _error(where: str, number: int, reason: str) -> RowError:
    if where.startswith("line"):
        return RowError(where, reason, line=number)
    return RowError(where, reason, index=number)


def import_metrics_csv(session: Session, text: str) -> MetricsResult:
    def rows():
        for err, line, raw in read_csv(text, METRIC_COLUMNS, METRIC_OPTIONAL):
            yield err, f"line {line}", line, raw

    return import_metric_rows(session, rows())


def import_metrics_json(session: Session, items: Any) -> MetricsResult:
    if not isinstance(items, list):
        raise ImportRejected([RowError("rows", "'rows' must be a list of objects")])

    def rows():
        for i, raw in enumerate(items):
            if not isinstance(raw, dict):
                yield RowError(f"rows[{i}]", "each row must be an object", index=i), f"rows[{i}]", i, {}
                continue
            unknown = sorted(set(raw) - set(METRIC_COLUMNS + METRIC_OPTIONAL))
            if unknown:
                yield RowError(f"rows[{i}]", "unknown field " + ", ".join(unknown), index=i), f"rows[{i}]", i, {}
                continue
            yield None, f"rows[{i}]", i, raw

    return import_metric_rows(session, rows())


# -- members ----------------------------------------------------------------------------------


def import_members_csv(session: Session, text: str, today: dt.date, now: dt.datetime | None = None) -> MembersResult:
    known_programs = set(programs_service.keys(session))
    errors: list[RowError] = []
    rows: list[tuple[int, dict[str, str]]] = []
    seen_keys: dict[str, int] = {}
    seen_emails: dict[str, int] = {}
    for err, line, raw in read_csv(text, MEMBER_COLUMNS, SEGMENTS):
        if err is not None:
            errors.append(err)
            continue
        reasons = []
        key = raw["member"]
        if not key:
            reasons.append("missing member")
        elif not MEMBER_KEY_RE.match(key):
            reasons.append(f"bad member key '{key}' (letters, digits and _ . @ - only, at most 64)")
        elif key in seen_keys:
            reasons.append(f"member '{key}' already appears on line {seen_keys[key]}")
        else:
            seen_keys[key] = line
        email = raw["email"]
        if email:
            if not EMAIL_RE.match(email) or len(email) > 254:
                reasons.append(f"bad email '{email}'")
            elif email.lower() in seen_emails:
                reasons.append(f"email '{email}' already appears on line {seen_emails[email.lower()]}")
            else:
                seen_emails[email.lower()] = line
        role = raw["role"] or "member"
        if role not in IMPORT_ROLES:
            reasons.append(f"bad role '{role}' (member, staff or admin)")
        unknown = [p for p in raw["programs"].split() if p not in known_programs]
        if unknown:
            reasons.append("unknown program " + ", ".join(f"'{p}'" for p in unknown))
        if len(raw["name"]) > 200:
            reasons.append("name is longer than 200 characters")
        for seg in SEGMENTS:
            limit = SEGMENT_LENGTH[seg]
            if len(raw.get(seg) or "") > limit:
                reasons.append(f"{seg} is longer than {limit} characters")
        if reasons:
            errors.append(RowError(f"line {line}", "; ".join(reasons), line=line))
        else:
            rows.append((line, raw))
    existing = {m.key: m for m in _members_by_key(session, [r["member"] for _, r in rows])}
    emails = [r["email"].lower() for _, r in rows if r["email"]]
    owners = dict(session.execute(select(Member.email, Member.key).where(Member.email.in_(emails))).all()) if emails else {}
    for line, raw in rows:
        owner = owners.get(raw["email"].lower()) if raw["email"] else None
        if owner is not None and owner != raw["member"]:
            errors.append(RowError(f"line {line}", f"email '{raw['email']}' belongs to member '{owner}'", line=line))
    if errors:
        errors.sort(key=lambda e: e.line or 0)
        raise ImportRejected(errors)

    now = now or dt.datetime.now(dt.UTC)
    result = MembersResult()
    for _, raw in rows:
        member = existing.get(raw["member"])
        if member is None:
            member = Member(key=raw["member"], created_at=now)
            session.add(member)
            result.created += 1
        else:
            result.updated += 1
        member.name = raw["name"]
        member.email = raw["email"].lower() or None
        member.role = raw["role"] or "member"
        if raw["password"]:
            member.password_hash = hash_password(raw["password"])
        for seg in SEGMENTS:
            if seg in raw:
                setattr(member, seg, raw[seg] or None)
        result.keys.append(member.key)
    session.flush()
    by_key = {m.key: m for m in _members_by_key(session, result.keys)}
    current = {}
    for member_id, program_key in session.execute(
        select(Enrolment.member_id, Enrolment.program_key).where(Enrolment.member_id.in_([m.id for m in by_key.values()]))
    ):
        current.setdefault(member_id, set()).add(program_key)
    for _, raw in rows:
        member = by_key[raw["member"]]
        wanted = set(raw["programs"].split())
        have = current.get(member.id, set())
        for key in sorted(wanted - have):
            session.add(Enrolment(member_id=member.id, program_key=key, enrolled_on=today))
            result.enrolments_added += 1
        for key in sorted(have - wanted):
            session.delete(session.get(Enrolment, (member.id, key)))
            result.enrolments_removed += 1
    session.flush()
    return result


def _members_by_key(session: Session, keys: list[str]) -> list[Member]:
    out: list[Member] = []
    for i in range(0, len(keys), LOOKUP_CHUNK):
        out += session.scalars(select(Member).where(Member.key.in_(keys[i : i + LOOKUP_CHUNK])))
    return out
