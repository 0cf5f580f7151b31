"""CSV (and API) imports of members and metric rows: all-or-nothing.

Every row is checked first; if any is bad, nothing is written and every bad row is reported
with its line number (CSV) or index (API) and the reason. Metric rows whose event id is
already stored for the member and metric are duplicates: skipped and counted.
"""

from __future__ import annotations

import csv
import datetime as dt
import functools
import io
import math
import re
from array import array
from collections.abc import Iterable, Iterator
from dataclasses import dataclass, field
from itertools import repeat
from typing import Any

from sqlalchemy import bindparam, delete, insert, select, update
from sqlalchemy.orm import Session

from ..db import copy_insert
from ..models import SEGMENTS, Enrolment, Member, MetricRow
from ..models.metrics import EVENT_CONFLICT
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
KIND_LENGTH, EVENT_ID_LENGTH = MetricRow.kind.type.length, MetricRow.event_id.type.length  # type: ignore[attr-defined]
LOOKUP_CHUNK = 5000
WRITE_CHUNK = 10_000
SQLITE_IMPORT_CACHE_KB = 65536  # page cache while inserting a large batch (SQLite)
SQLITE_INSERT_ROWS = 500  # rows per INSERT: 3,000 parameters, far below SQLite's 32,766 (3.32+)
# What a CSV body must not hold to be split with str.split: a quote, a NUL, and every character
# str.strip() removes (str.isspace()) but the line end.
_NOT_PLAIN = '"\x00\t\x0b\x0c\r\x1c\x1d\x1e\x1f \x85\xa0\u1680' + "".join(map(chr, range(0x2000, 0x200B))) \
    + "\u2028\u2029\u202f\u205f\u3000"


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


class _CsvFile:
    """A CSV file's checked header and its data rows as stripped field lists.

    A header on one physical line without quotes is read from that line alone, and a plain
    body (no quote, NUL, or whitespace other than line ends: what programs export) is split
    with str.split: csv's fields exactly, with nothing to strip. Any other file goes through
    csv.reader, which copies the text into a StringIO first (docs/performance.md, rounds 17
    and 18)."""

    def __init__(self, text: str, required: tuple[str, ...], optional: tuple[str, ...]):
        if text.startswith("\ufeff"):
            text = text[1:]
        self.header: list[str] = []
        end = text.find("\n") + 1 or len(text)  # the first line, with its line end
        first = text[:end]
        if '"' in first or "\r" in first.rstrip("\r\n"):
            end = 0  # a quoted header (it may go on over lines): csv.reader reads the whole file
        source = io.StringIO(first if end else text, newline="")
        self.reader = csv.reader(source)
        self.error = self._read_header(required, optional)
        # _before: lines before the reader's first (1: the header had a reader of its own, and
        # a body that needs csv.reader gets another); _first: the body's first line
        if end:
            self._body, self._before, self._first = text[end:], 1, 2
        else:
            at = source.tell()
            self._body, self._before, self._first = source.read(), 0, self.reader.line_num + 1
            source.seek(at)

    @property
    def line_num(self) -> int:
        """The physical line the reader is on (csv.reader's line_num counts from its own start)."""
        return self.reader.line_num + self._before

    def _read_header(self, required: tuple[str, ...], optional: tuple[str, ...]) -> RowError | None:
        try:
            header = next(self.reader)
        except StopIteration:
            return RowError("line 1", "the file is empty (no header)", line=1)
        except csv.Error as exc:
            return RowError("line 1", f"unreadable CSV: {exc}", line=1)
        header = [h.strip() for h in header]
        blank = [str(i + 1) for i, h in enumerate(header) if not h]
        if blank:  # a trailing comma, as spreadsheets export: name the position
            return RowError("line 1", f"empty column name in the header (column {', '.join(blank)}); "
                            f"expected {','.join(required)}[,{','.join(optional)}]", line=1)
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
            return RowError("line 1", "; ".join(parts) + f" (expected {','.join(required)}[,{','.join(optional)}])", line=1)
        self.header = header
        return None

    @functools.cached_property
    def plain(self) -> tuple[list[str], int] | None:
        """The body's lines and the length of its longest where the body is plain, else None."""
        body = self._body
        if "\r" in body:
            body = body.replace("\r\n", "\n")  # a lone \r ends a line too: left to csv
        if any(c in body for c in _NOT_PLAIN):
            return None
        lines = body.split("\n")
        longest = max(map(len, lines))
        return (lines, longest) if longest <= csv.field_size_limit() else None

    def shape_error(self, line: int, fields: list[str]) -> RowError | None:
        """Why a non-blank row's field count does not fit the header, if it does not."""
        n, width = len(fields), len(self.header)
        if n < width:
            return RowError(f"line {line}", "missing column " + ", ".join(self.header[n:]), line=line)
        if n > width:
            return RowError(f"line {line}", f"{n} fields but the header has {width}", line=line)
        return None

    def numbered_rows(self) -> Iterator[tuple[int, list[str]]]:
        """(line, stripped fields) of every data row after a good header, blank lines
        included (no field, or only empty ones); a csv.Error is raised where the file stops
        being readable."""
        if self.plain is not None:
            return enumerate(map(str.split, self.plain[0], repeat(",")), self._first)
        if self._before:
            self.reader = csv.reader(io.StringIO(self._body, newline=""))
        return ((self.line_num, [f.strip() for f in fields]) for fields in self.reader)

    def rows(self) -> Iterator[tuple[RowError | None, int, list[str]]]:
        """Yield (error, line, stripped fields); blank lines are skipped."""
        if self.error is not None:
            yield self.error, 1, []
            return
        try:
            for line, fields in self.numbered_rows():
                if not _blank(fields):
                    error = self.shape_error(line, fields)
                    yield error, line, [] if error else fields
        except csv.Error as exc:
            line = self.line_num
            yield RowError(f"line {line}", f"unreadable CSV: {exc}", line=line), line, []


def _blank(fields: list[str]) -> bool:
    """A blank line: no field, or only empty ones (the fields come stripped)."""
    return not any(fields)


def read_csv(text: str, required: tuple[str, ...], optional: tuple[str, ...]) -> Iterator[tuple[RowError | None, int, dict[str, str]]]:
    """Yield (header error, line, row); a header error stops the file."""
    f = _CsvFile(text, required, optional)
    header = f.header
    for err, line, fields in f.rows():
        yield err, line, (dict(zip(header, fields, strict=True)) if err is None else {})


# -- metrics ----------------------------------------------------------------------------------


@dataclass
class _Metric:
    member: str
    metric: str
    date: dt.date
    value: float
    kind: str | None
    event_id: str | None


def text_problem(name: str, value: str) -> str | None:
    """Why a text cell cannot be stored, if it cannot: a NUL character (PostgreSQL refuses
    it) or an unpaired surrogate (not encodable as UTF-8; JSON may carry one)."""
    if "\x00" in value:
        return f"{name} contains a NUL character"
    try:
        value.encode("utf-8")
    except UnicodeEncodeError:
        return f"{name} is not valid text (an unpaired surrogate)"
    return None


def _text_fields(raw: dict[str, Any], reasons: list[str]) -> dict[str, str | None]:
    """member, metric, date, kind, id as text; anything else (a JSON number, list, false...) is
    refused by name rather than turned into text."""
    out: dict[str, str | None] = {}
    for name in ("member", "metric", "date", "kind", "id"):
        value = raw.get(name)
        if value is None:
            out[name] = None
        elif not isinstance(value, str):
            reasons.append(f"{name} must be text, not {type(value).__name__} {value!r}"[:200])
            out[name] = None
        else:
            problem = text_problem(name, value)
            if problem:
                reasons.append(problem)
                out[name] = None
            else:
                out[name] = value.strip()
    return out


def _check_metric(raw: dict[str, Any], metrics: set[str]) -> tuple[_Metric | None, list[str]]:
    reasons: list[str] = []
    fields = _text_fields(raw, reasons)
    member = fields["member"] or ""
    metric = fields["metric"] or ""
    date_text = fields["date"] or ""
    value_raw = raw.get("value")
    for name in METRIC_COLUMNS:
        present = fields[name] if name != "value" else value_raw
        already = any(r.startswith(name + " ") for r in reasons)  # e.g. "date must be text"
        if (present is None or str(present).strip() == "") and not already:
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
    kind = fields["kind"] or None
    event_id = fields["id"] or None
    if kind and len(kind) > KIND_LENGTH:
        reasons.append(f"kind is longer than {KIND_LENGTH} characters")
    if event_id and len(event_id) > EVENT_ID_LENGTH:
        reasons.append(f"id is longer than {EVENT_ID_LENGTH} characters")
    if reasons:
        return None, reasons
    return _Metric(member, metric, date, value, kind, event_id), []  # type: ignore[arg-type]


def member_ids(session: Session, keys: Iterable[str]) -> dict[str, int]:
    """The ids of those of ``keys`` that are members. Plain SQL on the session's connection:
    SQLAlchemy's expanding IN and result rows for thousands of keys cost more than the lookup
    itself (50,000 keys: SQLite 0.13 s -> 0.05 s, round 17)."""
    keys = sorted(set(keys))
    conn = session.connection()
    sqlite = conn.dialect.name == "sqlite"
    table = Member.__table__.name
    out: dict[str, int] = {}
    cur = conn.connection.cursor()
    try:
        for i in range(0, len(keys), LOOKUP_CHUNK):
            chunk = keys[i : i + LOOKUP_CHUNK]
            # bandit B608: our own table name and placeholders; the keys are bound (PostgreSQL:
            # as one array, which psycopg does not rewrite placeholder by placeholder)
            if sqlite:
                cur.execute(f"SELECT key, id FROM {table} WHERE key IN ({', '.join(['?'] * len(chunk))})", chunk)  # nosec B608
            else:
                cur.execute(f"SELECT key, id FROM {table} WHERE key = ANY(%s)", (chunk,))  # nosec B608
            out.update(cur)  # pair by pair: no list of rows outliving the loop for the GC to count
    finally:
        cur.close()
    return out


class _MetricBatch:
    """Checked rows waiting to be stored, as one flat list of their values in ``_ROW_COLUMNS``
    order, the member's key first (its id once resolved): the SQLite inserts bind slices of
    it, with no tuple per row to build. No kind or event id is '', not None: the sqlite3
    module binds None through its adapter lookup, six times a string's cost (round 17).
    Repeated strings are shared; each row's line (CSV) or index (API) is kept in a parallel
    array for the unknown-member errors."""

    def __init__(self, metrics: set[str], csv_lines: bool):
        self.metrics = {m: m for m in metrics}
        self.metric_set = set(metrics)
        self.csv_lines = csv_lines
        self.errors: list[RowError] = []
        self.values: list[Any] = []
        self.numbers = array("q")
        self._keys: dict[str, str] = {}
        self._dates: dict[str, str] = {}
        self._kinds: dict[str, str] = {}

    def __len__(self) -> int:
        return len(self.numbers)

    def where(self, number: int) -> str:
        return f"line {number}" if self.csv_lines else f"rows[{number}]"

    def error(self, number: int, reason: str) -> None:
        self.errors.append(_error(self.where(number), number, reason))

    def add(self, number: int, member: str, metric: str, date: str, value: float, kind: str | None,
            event_id: str | None) -> None:
        member = self._keys.setdefault(member, member)
        kind = self._kinds.setdefault(kind, kind) if kind else ""
        self.values.extend((member, metric, date, value, kind, event_id or ""))
        self.numbers.append(number)

    def add_checked(self, number: int, raw: dict[str, Any]) -> None:
        """The full check with every reason (the API's rows, and any CSV row the fast path refused)."""
        item, reasons = _check_metric(raw, self.metric_set)
        if reasons:
            self.error(number, "; ".join(reasons))
        else:
            date = item.date.isoformat() if item.date is not None else None  # type: ignore[union-attr]
            self.add(number, item.member, item.metric, date, item.value, item.kind, item.event_id)  # type: ignore[union-attr,arg-type]

    def date(self, text: str) -> str | None:
        """The canonical ISO text of a valid YYYY-MM-DD date (cached), else None."""
        iso = self._dates.get(text)
        if iso is None and DATE_RE.match(text):
            try:
                iso = self._dates[text] = dt.date.fromisoformat(text).isoformat()
            except ValueError:
                return None
        return iso

    def read_csv(self, f: _CsvFile) -> None:
        """Every data row of a CSV file. The loop is the fast path for well-formed rows and does
        exactly the checks of ``_check_metric``; any other row (blank, wrong field count, a
        failed check) goes through ``_odd_row`` and ``_check_metric`` for its reasons."""
        header, width = f.header, len(f.header)
        im, imet, idate, ivalue = (header.index(c) for c in METRIC_COLUMNS)
        ikind = header.index("kind") if "kind" in header else None
        iid = header.index("id") if "id" in header else None
        metrics, dates, keys, kinds, date = self.metrics, self._dates, self._keys, self._kinds, self.date
        extend, numbers_append, isfinite = self.values.extend, self.numbers.append, math.isfinite
        # A plain body holds no NUL, and no field longer than its longest line: where no line
        # is longer than a kind may be, the NUL and length checks cannot fail, and are skipped.
        sure = f.plain is not None and f.plain[1] <= min(KIND_LENGTH, EVENT_ID_LENGTH)
        try:
            for number, fields in f.numbered_rows():
                if len(fields) != width:
                    self._odd_row(fields, number, f)
                    continue
                member = fields[im]
                metric = metrics.get(fields[imet])
                day = fields[idate]
                iso = dates.get(day) or date(day)
                text = fields[ivalue]
                try:
                    value = float(text) if "_" not in text else None
                except ValueError:
                    value = None
                kind = fields[ikind] if ikind is not None else ""
                event_id = fields[iid] if iid is not None else ""
                if member and metric is not None and iso is not None and value is not None and isfinite(value) \
                        and (sure or (len(kind) <= KIND_LENGTH and len(event_id) <= EVENT_ID_LENGTH and "\x00" not in member
                                      and "\x00" not in kind and "\x00" not in event_id)):
                    extend((keys.setdefault(member, member), metric, iso, value,
                            kind and kinds.setdefault(kind, kind), event_id))
                    numbers_append(number)
                else:
                    self._odd_row(fields, number, f)
        except csv.Error as exc:  # the rest of the file cannot be read
            line = f.line_num
            self.errors.append(RowError(f"line {line}", f"unreadable CSV: {exc}", line=line))

    def _odd_row(self, fields: list[str], line: int, f: _CsvFile) -> None:
        if _blank(fields):
            return
        error = f.shape_error(line, fields)
        if error is not None:
            self.errors.append(error)
        else:
            self.add_checked(line, dict(zip(f.header, fields, strict=True)))

    def store(self, session: Session) -> MetricsResult:
        """Resolve members (every unknown one is an error), then insert in one statement per
        database round: rows whose (member, metric, id) is already stored - or appeared earlier
        in the same batch - are skipped and counted as duplicates. Every member id inserted was
        read here, in the caller's transaction: what lets the command's import skip SQLite's
        per-row foreign-key lookup (db.bulk_inserts)."""
        ids = member_ids(session, self._keys)
        members = self.values[::_WIDTH]
        if len(ids) < len(self._keys):
            for member, number in zip(members, self.numbers, strict=True):
                if member not in ids:
                    self.error(number, f"unknown member '{member}'")
        if self.errors:
            self.errors.sort(key=lambda e: (e.line or 0, e.index or 0))
            raise ImportRejected(self.errors)
        result = MetricsResult()
        if not self.values:
            return result
        self.values[::_WIDTH] = map(ids.__getitem__, members)
        if session.get_bind().dialect.name == "sqlite":
            inserted = _insert_sqlite(session, self.values, len(self) > 10_000)
        else:
            for i in (4, 5):  # kind, event_id: '' is none
                self.values[i::_WIDTH] = [v or None for v in self.values[i::_WIDTH]]
            it = iter(self.values)
            inserted = _insert_postgres(session, zip(*[it] * _WIDTH, strict=True))
        result.new = inserted
        result.duplicates = len(self) - inserted
        return result


_ROW_COLUMNS = ("member_id", "metric", "date", "value", "kind", "event_id")  # the order of a row's values
_WIDTH = len(_ROW_COLUMNS)
_COLUMNS = ", ".join(_ROW_COLUMNS)


def _insert_sqlite(session: Session, values: list[Any], large: bool) -> int:
    """Multi-row INSERTs of ``values`` (rows' values, flat) on the session's own connection
    (inside its transaction), in file order; each statement's rowcount is the number of rows
    it actually inserted."""
    table = MetricRow.__table__.name
    conn = session.connection().connection.driver_connection
    cur = conn.cursor()
    # A larger page cache while inserting: a big batch touches many index pages at once, and
    # the default 2 MB cache would thrash.
    cache = cur.execute("PRAGMA cache_size").fetchone()[0]
    if large and -SQLITE_IMPORT_CACHE_KB < cache < SQLITE_IMPORT_CACHE_KB // 4:
        cur.execute(f"PRAGMA cache_size=-{SQLITE_IMPORT_CACHE_KB}")
    try:
        # One statement per SQLITE_INSERT_ROWS rows rather than executemany's one per row: the
        # per-statement step and reset, not the binding, was 40% of the insert (1M rows: 2.9 s
        # -> 1.7 s). SQLite inserts a statement's rows in order, so an event repeated within
        # the file still keeps its first row.
        def statement(n: int, bare: bool) -> str:
            row = "(?, ?, ?, ?, NULL, NULL)" if bare else "(?, ?, ?, ?, NULLIF(?, ''), NULLIF(?, ''))"
            # bandit B608: our own table/column names and placeholders
            return (f"INSERT INTO {table} ({_COLUMNS}) VALUES "  # nosec B608
                    + ", ".join([row] * n) + f" ON CONFLICT {EVENT_CONFLICT} DO NOTHING")

        full, step = {bare: statement(SQLITE_INSERT_ROWS, bare) for bare in (False, True)}, SQLITE_INSERT_ROWS * _WIDTH
        inserted = 0
        for i in range(0, len(values), step):
            chunk = values[i : i + step]
            n = len(chunk) // _WIDTH
            bare = not any(chunk[4::_WIDTH]) and not any(chunk[5::_WIDTH])
            if bare:  # no kind nor event id in these rows: bind four values a row, not six
                del chunk[5::_WIDTH]
                del chunk[4 :: _WIDTH - 1]
            inserted += cur.execute(full[bare] if n == SQLITE_INSERT_ROWS else statement(n, bare), chunk).rowcount
        return inserted
    finally:
        cur.execute(f"PRAGMA cache_size={int(cache)}")
        cur.close()


def _insert_postgres(session: Session, rows: Iterable[tuple]) -> int:
    """COPY, then one INSERT ... SELECT in file order (the first of repeated events wins, as
    with SQLite) skipping conflicts; all in the session's transaction."""
    return copy_insert(session, MetricRow.__table__, _ROW_COLUMNS, rows, f"ON CONFLICT {EVENT_CONFLICT} DO NOTHING")


def import_metric_rows(session: Session, rows: Iterable[tuple[RowError | None, str, int, dict[str, Any]]]) -> MetricsResult:
    """Validate then store. ``rows``: (early error, where, number, raw) - where is 'line 7'."""
    batch: _MetricBatch | None = None
    for early, where, number, raw in rows:
        if batch is None:
            batch = _MetricBatch(programs_service.known_metrics(session), where.startswith("line"))
        if early is not None:
            batch.errors.append(early)
        else:
            batch.add_checked(number, raw)
    if batch is None:
        return MetricsResult()
    return batch.store(session)


def _error(where: str, number: int, reason: str) -> RowError:
    if where.startswith("line"):
        return RowError(where, reason, line=number)
    return RowError(where, reason, index=number)


def import_metrics_csv(session: Session, text: str) -> MetricsResult:
    f = _CsvFile(text, METRIC_COLUMNS, METRIC_OPTIONAL)
    batch = _MetricBatch(programs_service.known_metrics(session), csv_lines=True)
    if f.error is not None:
        batch.errors.append(f.error)
    else:
        batch.read_csv(f)
    return batch.store(session)


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
        reasons = [p for p in (text_problem(name, v) for name, v in raw.items()) if p]
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
            if not EMAIL_RE.match(email) or len(email.lower()) > 254:  # stored lowered ('İ' grows)
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
    existing = member_ids(session, (r["member"] for _, r in rows))
    emails = sorted({r["email"].lower() for _, r in rows if r["email"]})
    owners: dict[str, str] = {}
    for i in range(0, len(emails), LOOKUP_CHUNK):
        owners.update(session.execute(
            select(Member.email, Member.key).where(Member.email.in_(emails[i : i + LOOKUP_CHUNK]))).all())
    for line, raw in rows:
        owner = owners.get(raw["email"].lower()) if raw["email"] else None
        if owner is not None and owner != raw["member"]:
            errors.append(RowError(f"line {line}", f"email '{raw['email']}' belongs to member '{owner}'", line=line))
    if errors:
        errors.sort(key=lambda e: e.line or 0)
        raise ImportRejected(errors)

    # Set-based writes (executemany batches), not one ORM object per row: a file may hold a
    # million members.
    now = now or dt.datetime.now(dt.UTC)
    result = MembersResult()
    session.flush()
    table = Member.__table__
    segments = [seg for seg in SEGMENTS if rows and seg in rows[0][1]]  # the file's segment columns
    inserts: list[dict[str, Any]] = []
    updates: dict[bool, list[dict[str, Any]]] = {False: [], True: []}  # by "sets a password"
    for _, raw in rows:
        values: dict[str, Any] = {"name": raw["name"], "email": raw["email"].lower() or None,
                                  "role": raw["role"] or "member"}
        password = hash_password(raw["password"]) if raw["password"] else None
        for seg in segments:
            values[seg] = raw[seg] or None
        member_id = existing.get(raw["member"])
        if member_id is None:
            inserts.append({"key": raw["member"], "password_hash": password, "created_at": now,
                            **{seg: None for seg in SEGMENTS}, **values})
            result.created += 1
        else:
            if password is not None:
                values["password_hash"] = password
            updates[password is not None].append({"b_id": member_id, **{f"b_{k}": v for k, v in values.items()}})
            result.updated += 1
        result.keys.append(raw["member"])
    for i in range(0, len(inserts), WRITE_CHUNK):
        session.execute(insert(table), inserts[i : i + WRITE_CHUNK])
    for batch in updates.values():
        if batch:
            stmt = update(table).where(table.c.id == bindparam("b_id")).values(
                {k[2:]: bindparam(k) for k in batch[0] if k != "b_id"})
            for i in range(0, len(batch), WRITE_CHUNK):
                session.execute(stmt, batch[i : i + WRITE_CHUNK], execution_options={"synchronize_session": False})
    ids = {**existing, **(member_ids(session, (r["key"] for r in inserts)) if inserts else {})}

    current: dict[int, set[str]] = {}
    old = sorted(existing.values())
    for i in range(0, len(old), LOOKUP_CHUNK):
        for member_id, program_key in session.execute(
            select(Enrolment.member_id, Enrolment.program_key).where(Enrolment.member_id.in_(old[i : i + LOOKUP_CHUNK]))
        ):
            current.setdefault(member_id, set()).add(program_key)
    added: list[dict[str, Any]] = []
    removed: list[dict[str, Any]] = []
    for _, raw in rows:
        member_id = ids[raw["member"]]
        wanted = set(raw["programs"].split())
        have = current.get(member_id, set())
        added += [{"member_id": member_id, "program_key": key, "enrolled_on": today} for key in sorted(wanted - have)]
        removed += [{"b_member": member_id, "b_program": key} for key in sorted(have - wanted)]
    en = Enrolment.__table__
    for i in range(0, len(added), WRITE_CHUNK):
        session.execute(insert(en), added[i : i + WRITE_CHUNK])
    if removed:
        session.execute(delete(en).where(en.c.member_id == bindparam("b_member"), en.c.program_key == bindparam("b_program")),
                        removed, execution_options={"synchronize_session": False})
    result.enrolments_added, result.enrolments_removed = len(added), len(removed)
    _forget(session, set(existing.values()))
    return result


def _forget(session: Session, member_ids: set[int]) -> None:
    """Objects of the updated members this session already holds are stale after the
    set-based writes: expire the members, drop their enrolments (some were deleted)."""
    for (cls, pk, *_), obj in list(session.identity_map.items()):
        if cls is Member and pk[0] in member_ids:
            session.expire(obj)
        elif cls is Enrolment and pk[0] in member_ids:
            session.expunge(obj)
