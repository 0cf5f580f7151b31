"""Property-based fuzzing of the CSV importers (members and metrics), the JSON metrics
importer that shares their rules, and the `portal import` command.

Files are generated mostly valid, with random corruptions: bad dates, non-numbers, huge
numbers, NaN/inf, empty fields, extra and missing columns, unknown members, duplicate rows,
a BOM, CRLF or CR line ends, quotes and embedded line breaks, very long fields, formula-like
cells, and (on the command line) bytes that are not UTF-8. A small oracle written from the
documented rules (README, CONTRACT.md) predicts which lines are bad and what is stored.

Properties:
- the importer returns or raises ``ImportRejected``; never any other exception;
- if any row is bad nothing is written (tables counted before and after, before and after the
  rollback);
- every error names its line, and its reason names the bad field/column;
- the bad lines are exactly the predicted ones; a valid file stores exactly the predicted rows.

The fuzz loops run on SQLite; one fixed example per importer runs on PostgreSQL as well.
Product bugs the fuzzing found are kept as reproducers at the end of the file (all fixed).
"""

from __future__ import annotations

import contextlib
import csv
import datetime as dt
import io
import math
import os
import re
import subprocess
import sys
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest
from hypothesis import HealthCheck, given, note, settings
from hypothesis import event as hypothesis_event
from hypothesis import strategies as st
from hypothesis.errors import InvalidArgument
from sqlalchemy import delete, func, select

from portal import create_app
from portal.models import Enrolment, Member, MetricRow
from portal.services import programs as programs_service
from portal.services.imports import (
    ImportRejected,
    import_members_csv,
    import_metrics_csv,
    import_metrics_json,
)

NOW = dt.datetime(2026, 3, 1, 12, tzinfo=dt.UTC)
TODAY = dt.date(2026, 3, 1)
SQLITE = pytest.mark.parametrize("backend", ["sqlite"], indirect=True)
POSTGRES = pytest.mark.parametrize("backend", ["postgres"], indirect=True)
FUZZ = settings(
    max_examples=80,
    deadline=None,
    suppress_health_check=[HealthCheck.function_scoped_fixture, HealthCheck.too_slow, HealthCheck.data_too_large],
)

# The database every example starts from (restored by a rollback after each example).
MEMBERS = ("c1", "c2", "c3")
MEMBER_EMAILS = {"c1": "c1@example.com"}
MEMBER_SEGMENTS = {"c2": {"industry": "tech"}}
SEEDED_EVENT = ("c1", "video", "seed-1")  # one stored metric row with an event id
METRIC_REQUIRED = ("member", "metric", "date", "value")
METRIC_OPTIONAL = ("kind", "id")
MEMBER_REQUIRED = ("member", "name", "email", "role", "password", "programs")
SEGMENT_LIMITS = {"business_type": 64, "industry": 64, "scale": 32}
PROGRAMS = ("creator", "member", "scorecard", "music")
FIELD_LIMIT = csv.field_size_limit()
LINE_BREAK = re.compile(r"\r\n|\r|\n")

# Words a reason must contain to name a field ("bad number 'x'" names the value column by
# the kind of cell it wants; every other reason uses the column's own name).
FIELD_WORDS = {"value": ("value", "number"), "programs": ("program",)}


def names_field(reason: str, field: str) -> bool:
    return any(word in reason for word in FIELD_WORDS.get(field, (field,)))


# -- the database -------------------------------------------------------------------------------


@pytest.fixture
def s(session):
    programs_service.load_builtins(session)
    for key in MEMBERS:
        session.add(Member(key=key, name=key.upper(), role="member", email=MEMBER_EMAILS.get(key), created_at=NOW,
                           **MEMBER_SEGMENTS.get(key, {})))
    session.flush()
    c1 = session.scalar(select(Member).where(Member.key == "c1"))
    session.add(Enrolment(member_id=c1.id, program_key="creator", enrolled_on=TODAY))
    session.add(MetricRow(member_id=c1.id, metric=SEEDED_EVENT[1], date=dt.date(2026, 1, 1), value=1.0,
                          event_id=SEEDED_EVENT[2]))
    session.commit()
    return session


def counts(session) -> tuple[int, int, int]:
    return tuple(session.scalar(select(func.count()).select_from(m)) for m in (Member, Enrolment, MetricRow))


def known_metrics(session) -> frozenset[str]:
    return frozenset(programs_service.known_metrics(session))


# -- building CSV text --------------------------------------------------------------------------


@dataclass
class Csv:
    """A generated file: its text, and where each record ends up when read back."""

    text: str
    header: list[str]  # as written (before the importer strips the names)
    records: list[tuple[int, list[str] | None]]  # (line the reader reports, fields); None: blank line
    huge_line: int | None = None  # a record with a field over the csv module's limit


def encode_record(fields: list[str], quote_all: bool) -> str:
    buf = io.StringIO()
    # "\r\n" as the writer's terminator makes it quote any field holding "\r" or "\n".
    csv.writer(buf, lineterminator="\r\n", quoting=csv.QUOTE_ALL if quote_all else csv.QUOTE_MINIMAL).writerow(fields)
    return buf.getvalue()[:-2]


@st.composite
def layout(draw, header: list[str], rows: list[list[str]], huge_at: int | None = None) -> Csv:
    """Serialise header and rows with a random line end, BOM, quoting and blank lines."""
    end = draw(st.sampled_from(["\n", "\r\n", "\r"]))
    bom = draw(st.booleans())
    quote_all = draw(st.booleans())
    final_end = draw(st.booleans()) or not rows
    parts = [("\ufeff" if bom else "") + encode_record(header, quote_all) + end]
    line = 1
    records: list[tuple[int, list[str] | None]] = []
    huge_line = None
    for i, fields in enumerate(rows):
        if draw(st.integers(0, 9)) == 0:  # a blank line: skipped, but counted
            blank = draw(st.sampled_from(["", "   ", ",,,", '""']))
            parts.append(blank + end)
            line += 1 + len(LINE_BREAK.findall(blank))
            records.append((line, None))
        record = encode_record(fields, quote_all)
        last = i == len(rows) - 1
        record += end if (not last or final_end) else ""
        breaks = len(LINE_BREAK.findall(record))
        line += breaks + (0 if record.endswith(("\n", "\r")) else 1)
        parts.append(record)
        records.append((line, fields))
        if i == huge_at:
            huge_line = line
    return Csv("".join(parts), header, records, huge_line)


def lines_of(text: str) -> int:
    return len(LINE_BREAK.findall(text)) + 1


# -- cells --------------------------------------------------------------------------------------

FORMULAS = ["=1+1", "+1+1", "-1+1", "@SUM(A1:A2)", "=HYPERLINK(\"http://x\",\"y\")", "=cmd|' /C calc'!A0"]
def _text(**kwargs):
    """Text a file can carry and the importers accept in free-text cells: no NUL and no unpaired
    surrogate (both refused with a reason, tested on their own at the end)."""
    return st.text(alphabet=st.characters(blacklist_characters="\x00", blacklist_categories=("Cs",)), **kwargs)


JUNK = _text(min_size=1, max_size=12)
LONG = st.integers(65, 600).map(lambda n: "x" * n)


def padded(strategy: st.SearchStrategy[str]) -> st.SearchStrategy[str]:
    """Spaces around a cell are ignored by the importer."""
    return st.tuples(st.sampled_from(["", " ", "  "]), strategy, st.sampled_from(["", " ", "\t"])).map("".join)


member_cell = st.one_of(
    padded(st.sampled_from(MEMBERS)),
    padded(st.sampled_from(MEMBERS)),
    st.sampled_from(["ghost", "C1", "c1 c2", "c1\u200b", "\uff43\uff11", "", "   ", *FORMULAS]),
    JUNK,
    LONG,
)
metric_cell = st.one_of(
    padded(st.sampled_from(["video", "live", "order", "likes", "followers", "monthly_plays"])),
    st.sampled_from(["telepathy", "VIDEO", "video ,", "", *FORMULAS]),
    JUNK,
)
date_cell = st.one_of(
    padded(st.dates(dt.date(2000, 1, 1), dt.date(2030, 12, 31)).map(dt.date.isoformat)),
    st.dates().map(dt.date.isoformat),
    st.sampled_from(["2026-13-01", "2026-02-30", "2026/01/01", "20260101", "01-02-2026", "2026-1-1", "0000-01-01",
                     "yesterday", "2026-02-01T00:00", "+2026-01-01", "\u0662\u0660\u0662\u0666-\u0660\u0661-\u0660\u0661",
                     "", "=TODAY()"]),
    JUNK,
)
value_cell = st.one_of(
    padded(st.integers(-10**9, 10**9).map(str)),
    st.floats(allow_nan=False, allow_infinity=False).map(repr),
    st.sampled_from(["1e3", "+5", "-0", "0.1", "1e308", "-1.7976931348623157e308", "1e-400", "9" * 300]),
    st.sampled_from(["nan", "NaN", "-nan", "inf", "-inf", "Infinity", "1e309", "-1e400", "9" * 400, "abc", "1_000",
                     "1,5", "0x10", "1.2.3", "-", "", "  ", "\u221e", *FORMULAS]),
    JUNK,
)
kind_cell = st.one_of(st.just(""), st.just(""), st.sampled_from(["universal", "mini_game", " ", *FORMULAS]),
                      _text(max_size=20), LONG.map(lambda t: t[:70]))
id_cell = st.one_of(st.just(""), st.from_regex(r"[a-z]{1,2}-[0-9]{1,2}", fullmatch=True),
                    st.sampled_from(["seed-1", "v1", "v1", "=1"]), _text(max_size=20),
                    st.integers(120, 200).map(lambda n: "i" * n))


# -- the metrics oracle -------------------------------------------------------------------------


def date_ok(text: str) -> bool:
    if not re.fullmatch(r"[0-9]{4}-[0-9]{2}-[0-9]{2}", text):
        return False
    try:
        dt.date.fromisoformat(text)
    except ValueError:
        return False
    return True


def number_ok(text: str) -> bool:
    """README: a finite number; ``1_000`` is refused although float() takes it."""
    if "_" in text:
        return False
    try:
        return math.isfinite(float(text))
    except ValueError:
        return False


def metric_problems(raw: dict[str, str], metrics: frozenset[str]) -> set[str]:
    """The fields a reason must name ('member' for an unknown member only once the rest is
    fine: members are looked up for otherwise valid rows)."""
    bad = {f for f in METRIC_REQUIRED if raw[f] == ""}
    if raw["metric"] and raw["metric"] not in metrics:
        bad.add("metric")
    if raw["date"] and not date_ok(raw["date"]):
        bad.add("date")
    if raw["value"] and not number_ok(raw["value"]):
        bad.add("value")
    if len(raw.get("kind", "")) > 64:
        bad.add("kind")
    if len(raw.get("id", "")) > 128:
        bad.add("id")
    if not bad and raw["member"] not in MEMBERS:
        bad.add("member")
    return bad


@dataclass
class Prediction:
    header_problem: list[str]  # column names line 1 must name (empty: the header is fine)
    errors: dict[int, list[str]]  # line -> words its reason must contain
    good: list[dict[str, str]]  # stripped rows that pass, in file order


def predict_header(header: list[str], required: tuple[str, ...], optional: tuple[str, ...]) -> list[str]:
    cols = [h.strip() for h in header]
    missing = [c for c in required if c not in cols]
    unknown = [c for c in cols if c not in required + optional]
    dupes = [c for c in cols if cols.count(c) > 1]
    return missing + unknown + dupes


def predict_rows(f: Csv, check: Callable[[dict[str, str], int], list[str]], required, optional) -> Prediction:
    problem = predict_header(f.header, required, optional)
    if problem:
        return Prediction(problem, {1: []}, [])
    cols = [h.strip() for h in f.header]
    errors: dict[int, list[str]] = {}
    good: list[dict[str, str]] = []
    for line, fields in f.records:
        if f.huge_line is not None and line >= f.huge_line:
            errors[f.huge_line] = []  # unreadable: the reader stops there
            break
        if fields is None or all(not x.strip() for x in fields):
            continue
        if len(fields) < len(cols):
            errors[line] = cols[len(fields):]
            continue
        if len(fields) > len(cols):
            errors[line] = ["fields", "header"]
            continue
        raw = {c: x.strip() for c, x in zip(cols, fields, strict=True)}
        words = check(raw, line)
        if words:
            errors[line] = words
        else:
            good.append(raw)
    return Prediction([], errors, good)


# -- generating metrics files -------------------------------------------------------------------


@st.composite
def metrics_header(draw) -> list[str]:
    cols = list(METRIC_REQUIRED) + draw(st.lists(st.sampled_from(METRIC_OPTIONAL), unique=True))
    cols = draw(st.permutations(cols))
    corruption = draw(st.sampled_from(["none"] * 12 + ["drop", "unknown", "repeat", "spaces"]))
    if corruption == "drop":
        cols.remove(draw(st.sampled_from(METRIC_REQUIRED)))
    elif corruption == "unknown":
        cols.insert(draw(st.integers(0, len(cols))), draw(st.sampled_from(["colour", "Member", "value2", "=cmd"])))
    elif corruption == "repeat":
        cols.append(draw(st.sampled_from(cols)))
    elif corruption == "spaces":
        cols = [f" {c} " for c in cols]
    return cols


@st.composite
def metric_row(draw, cols: list[str], fully_valid: bool) -> list[str]:
    good = {
        "member": padded(st.sampled_from(MEMBERS)),
        "metric": st.sampled_from(["video", "live", "order", "likes", "followers"]),
        "date": st.dates(dt.date(2020, 1, 1), dt.date(2030, 12, 31)).map(dt.date.isoformat),
        "value": st.integers(-1000, 10**6).map(str),
        "kind": st.sampled_from(["", "universal", "mini_game"]),
        "id": st.one_of(st.just(""), st.from_regex(r"[a-z]{1,2}-[0-9]{1,2}", fullmatch=True), st.just("seed-1")),
    }
    wild = {"member": member_cell, "metric": metric_cell, "date": date_cell, "value": value_cell,
            "kind": kind_cell, "id": id_cell}
    fields = []
    for c in cols:
        name = c.strip()
        if name not in good:
            fields.append(draw(_text(max_size=5)))
        elif fully_valid or draw(st.integers(0, 5)) > 0:
            fields.append(draw(good[name]))
        else:
            fields.append(draw(wild[name]))
    if not fully_valid:
        shape = draw(st.sampled_from(["ok"] * 20 + ["short", "long"]))
        if shape == "short" and len(fields) > 1:
            fields = fields[: draw(st.integers(1, len(fields) - 1))]
        elif shape == "long":
            fields += draw(st.lists(st.sampled_from(["", "x", "extra"]), min_size=1, max_size=2))
    return fields


@st.composite
def metrics_files(draw, valid_only: bool = False) -> Csv:
    cols = draw(st.permutations([*METRIC_REQUIRED, *METRIC_OPTIONAL])) if valid_only else draw(metrics_header())
    rows = draw(st.lists(metric_row(cols, valid_only), max_size=12))
    if rows and draw(st.integers(0, 4)) == 0:  # duplicate rows
        rows += draw(st.lists(st.sampled_from(rows), min_size=1, max_size=3))
    huge_at = None
    if not valid_only and rows and draw(st.integers(0, 30)) == 0:  # a field over the csv limit
        huge_at = draw(st.integers(0, len(rows) - 1))
        rows[huge_at] = ["x" * (FIELD_LIMIT + 1)] + ["1"] * (len(cols) - 1)
    return draw(layout(cols, rows, huge_at))


def metric_check(metrics: frozenset[str]) -> Callable[[dict[str, str], int], list[str]]:
    return lambda raw, line: sorted(metric_problems(raw, metrics))


def expected_metric_rows(good: list[dict[str, str]]) -> tuple[list[tuple], int]:
    """Rows stored by a valid file, and the duplicates skipped (an id already stored, or seen
    earlier in the file, for the same member and metric)."""
    seen = {SEEDED_EVENT}
    out, dupes = [], 0
    for raw in good:
        event = raw.get("id") or None
        if event is not None:
            key = (raw["member"], raw["metric"], event)
            if key in seen:
                dupes += 1
                continue
            seen.add(key)
        out.append((raw["member"], raw["metric"], dt.date.fromisoformat(raw["date"]), float(raw["value"]),
                    raw.get("kind") or None, event))
    return out, dupes


def stored_metric_rows(session) -> list[tuple]:
    """The metric rows in insertion order, without the seeded one (the first)."""
    rows = session.execute(
        select(Member.key, MetricRow.metric, MetricRow.date, MetricRow.value, MetricRow.kind, MetricRow.event_id)
        .join(Member, Member.id == MetricRow.member_id)
        .order_by(MetricRow.id))
    return [tuple(r) for r in rows][1:]


# -- shared checks ------------------------------------------------------------------------------


def event(name: str) -> None:
    """Count outcomes for --hypothesis-show-statistics (a no-op outside a fuzz loop)."""
    with contextlib.suppress(InvalidArgument):
        hypothesis_event(name)


def run_import(session, call: Callable[[], Any]) -> tuple[Any, ImportRejected | None]:
    """Call an importer: it returns or raises ImportRejected (anything else fails the test).
    On a rejection, nothing may have reached the tables, before or after the rollback."""
    before = counts(session)
    try:
        result = call()
        event("accepted")
        return result, None
    except ImportRejected as exc:
        event("rejected: header" if exc.errors[0].line == 1 else "rejected: rows")
        assert counts(session) == before, "a rejected import wrote rows"
        session.rollback()
        assert counts(session) == before
        return None, exc


def check_error_shape(exc: ImportRejected, text: str) -> None:
    """Every error names a line inside the file; errors are in line order; the message says
    nothing was stored."""
    assert exc.errors, "a rejection without errors"
    lines = [e.line for e in exc.errors]
    assert all(isinstance(n, int) and 1 <= n <= lines_of(text) for n in lines), lines
    assert lines == sorted(lines)
    for e in exc.errors:
        assert str(e) == f"line {e.line}: {e.reason}" and e.reason.strip()
        assert e.as_dict()["line"] == e.line
    assert exc.message.endswith("nothing was stored")
    assert len(exc.details) == len(exc.errors)


def check_prediction(exc: ImportRejected | None, p: Prediction) -> None:
    if not p.errors:
        assert exc is None, f"a valid file was rejected: {[str(e) for e in exc.errors]}"
        return
    assert exc is not None, f"bad lines {sorted(p.errors)} were accepted"
    got = {e.line: e.reason for e in exc.errors}
    assert sorted(got) == sorted(p.errors), f"expected bad lines {sorted(p.errors)}, got {[str(e) for e in exc.errors]}"
    if p.header_problem:
        for col in p.header_problem:
            assert col in got[1], f"the header error does not name column {col!r}: {got[1]}"
        return
    for line, words in p.errors.items():
        for w in words:
            assert names_field(got[line], w), f"line {line}: the reason does not name {w!r}: {got[line]!r}"


# -- metrics CSV --------------------------------------------------------------------------------


@SQLITE
@FUZZ
@given(f=metrics_files())
def test_fuzz_metrics_csv_rejects_exactly_the_bad_lines_and_writes_nothing(s, f):
    note(repr(f.text[:2000]))
    p = predict_rows(f, metric_check(known_metrics(s)), METRIC_REQUIRED, METRIC_OPTIONAL)
    try:
        result, exc = run_import(s, lambda: import_metrics_csv(s, f.text))
        if exc is not None:
            check_error_shape(exc, f.text)
        check_prediction(exc, p)
        if exc is None:
            rows, dupes = expected_metric_rows(p.good)
            assert stored_metric_rows(s) == rows
            assert (result.new, result.duplicates) == (len(rows), dupes)
    finally:
        s.rollback()


@SQLITE
@FUZZ
@given(f=metrics_files(valid_only=True))
def test_fuzz_metrics_csv_valid_files_store_exactly_their_rows(s, f):
    note(repr(f.text[:2000]))
    p = predict_rows(f, metric_check(known_metrics(s)), METRIC_REQUIRED, METRIC_OPTIONAL)
    assert not p.errors
    try:
        result, exc = run_import(s, lambda: import_metrics_csv(s, f.text))
        assert exc is None, [str(e) for e in exc.errors]
        rows, dupes = expected_metric_rows(p.good)
        assert stored_metric_rows(s) == rows
        assert (result.new, result.duplicates) == (len(rows), dupes)
    finally:
        s.rollback()


MANGLE_CHARS = ['"', ",", "\r", "\n", "\r\n", "\x00", "\ufeff", "\ufffd", "'", "\t", ";", '""', "\u2028", "\x85"]


@st.composite
def mangled(draw, files: st.SearchStrategy[Csv]) -> str:
    """A generated file with text-level damage: stray quotes and line breaks, cut or doubled
    lines, mojibake (UTF-8 read as Latin-1), replacement characters, or plain random text."""
    text = draw(files).text
    for _ in range(draw(st.integers(1, 3))):
        op = draw(st.sampled_from(["insert", "delete", "truncate", "double", "mojibake", "random"]))
        header_end = min(len(text), max(text.find("\n"), text.find("\r")) + 1)
        at = draw(st.integers(0, len(text)) if draw(st.integers(0, 4)) == 0 else st.integers(header_end, len(text)))
        if op == "insert":
            text = text[:at] + draw(st.sampled_from(MANGLE_CHARS)) + text[at:]
        elif op == "delete":
            text = text[:at] + text[at + draw(st.integers(1, 10)):]
        elif op == "truncate":
            text = text[:at]
        elif op == "double":
            lines = text.splitlines(keepends=True)
            if lines:
                i = draw(st.integers(0, len(lines) - 1))
                lines.insert(i, lines[i])
            text = "".join(lines)
        elif op == "mojibake":
            text = text.encode("utf-8").decode("latin-1")
        else:
            text = text[:at] + draw(_text(max_size=30)) + text[at:]
    return text


@SQLITE
@FUZZ
@given(text=mangled(metrics_files()))
def test_fuzz_metrics_csv_damaged_text_never_crashes_or_half_writes(s, text):
    note(repr(text[:2000]))
    try:
        before = counts(s)
        result, exc = run_import(s, lambda: import_metrics_csv(s, text))
        if exc is not None:
            check_error_shape(exc, text)
        else:
            assert counts(s)[2] - before[2] == result.new
    finally:
        s.rollback()


# -- metrics JSON (the API's importer: the same rules, rows named by index) ---------------------

json_scalar = st.one_of(st.none(), st.booleans(), st.integers(-10**30, 10**30), st.floats(),
                        _text(max_size=10), st.lists(st.integers(), max_size=2), st.dictionaries(_text(max_size=3),
                                                                                                   st.integers(), max_size=1))


@st.composite
def json_rows(draw) -> list[Any]:
    rows: list[Any] = []
    for _ in range(draw(st.integers(0, 8))):
        row: dict[str, Any] = {"member": draw(st.sampled_from(MEMBERS)), "metric": "video",
                               "date": draw(st.dates(dt.date(2020, 1, 1), dt.date(2030, 1, 1))).isoformat(),
                               "value": draw(st.integers(0, 1000))}
        for key in ("kind", "id"):
            if draw(st.booleans()):
                row[key] = draw(st.sampled_from(["", "x", None]))
        if draw(st.integers(0, 2)) == 0:
            key = draw(st.sampled_from([*METRIC_REQUIRED, *METRIC_OPTIONAL, "colour"]))
            if draw(st.booleans()):
                row.pop(key, None)
            else:
                row[key] = draw(st.one_of(json_scalar, member_cell, date_cell, value_cell))
        rows.append(row if draw(st.integers(0, 15)) else draw(json_scalar))
    return rows


@SQLITE
@FUZZ
@given(items=json_rows())
def test_fuzz_metrics_json_rejects_by_index_and_writes_nothing(s, items):
    note(repr(items))
    metrics = known_metrics(s)
    try:
        result, exc = run_import(s, lambda: import_metrics_json(s, items))
        if exc is not None:
            indexes = [e.index for e in exc.errors]
            assert all(isinstance(i, int) and 0 <= i < len(items) for i in indexes), indexes
            assert indexes == sorted(indexes)
            assert all(str(e).startswith(f"rows[{e.index}]: ") for e in exc.errors)
        else:
            stored = stored_metric_rows(s)
            assert len(stored) == result.new
            assert all(r[0] in MEMBERS and r[1] in metrics and isinstance(r[2], dt.date) for r in stored), stored
    finally:
        s.rollback()


# -- members CSV --------------------------------------------------------------------------------

key_cell = st.one_of(
    st.sampled_from(["n1", "n2", "n3", "n.4", "n_5", "n-6", "a@b", "N1"]),
    st.sampled_from(MEMBERS),
    st.sampled_from(["x y", "", "k" * 65, "\u00e91", "n1,", "=cmd", " ", "n\u200b1", "\uff4e1"]),
    st.from_regex(r"[A-Za-z0-9_.@-]{1,70}", fullmatch=True),
    JUNK,
)
name_cell = st.one_of(_text(max_size=30), st.sampled_from(["", "Ann, Jr.", 'Say "hi"', "line\nbreak", *FORMULAS]),
                      st.integers(195, 230).map(lambda n: "n" * n))
email_cell = st.one_of(
    st.just(""), st.just(""),
    st.sampled_from(["a@x.io", "A@X.io", "b@y.io", "c@z.io", "c1@example.com", "C1@Example.COM", "\u00e9@x.io",
                     "bad-email", "a@b", "a b@x.io", "@x.io", "a@@x.io", "x@y." + "z" * 260, "=a@x.io"]),
    JUNK,
)
role_cell = st.sampled_from(["", "member", "member", "staff", "admin", "boss", "Member", "root", "=1"])
password_cell = st.sampled_from([""] * 30 + ["pw-12345"])  # argon2id costs ~0.1 s a hash: keep them rare
programs_cell = st.one_of(
    st.lists(st.sampled_from(PROGRAMS), max_size=3).map(" ".join),
    st.lists(st.sampled_from([*PROGRAMS, "ghost", "Creator", "creator,member"]), max_size=3).map("  ".join),
)


def segment_cell(name: str) -> st.SearchStrategy[str]:
    limit = SEGMENT_LIMITS[name]
    return st.one_of(st.just(""), st.sampled_from(["brand", "tech", "small", "=1"]), _text(max_size=8),
                     st.integers(limit - 1, limit + 3).map(lambda n: "s" * n))


@st.composite
def members_header(draw) -> list[str]:
    cols = list(MEMBER_REQUIRED) + draw(st.lists(st.sampled_from(list(SEGMENT_LIMITS)), unique=True))
    cols = draw(st.permutations(cols))
    corruption = draw(st.sampled_from(["none"] * 12 + ["drop", "unknown", "repeat"]))
    if corruption == "drop":
        cols.remove(draw(st.sampled_from(MEMBER_REQUIRED)))
    elif corruption == "unknown":
        cols.insert(draw(st.integers(0, len(cols))), draw(st.sampled_from(["locale", "Email", "phone"])))
    elif corruption == "repeat":
        cols.append(draw(st.sampled_from(cols)))
    return cols


@st.composite
def member_row(draw, cols: list[str], fully_valid: bool) -> list[str]:
    good = {"member": st.sampled_from(["n1", "n2", "n3", "c1", "c2"]), "name": _text(max_size=20),
            "email": st.just(""), "role": st.sampled_from(["", "member", "staff"]), "password": st.just(""),
            "programs": st.lists(st.sampled_from(PROGRAMS), max_size=3, unique=True).map(" ".join),
            **{seg: st.sampled_from(["", "brand", "tech"]) for seg in SEGMENT_LIMITS}}
    wild = {"member": key_cell, "name": name_cell, "email": email_cell, "role": role_cell,
            "password": password_cell, "programs": programs_cell, **{seg: segment_cell(seg) for seg in SEGMENT_LIMITS}}
    fields = []
    for c in cols:
        if c not in good:
            fields.append(draw(_text(max_size=5)))
        elif fully_valid or draw(st.integers(0, 3)) > 0:
            fields.append(draw(good[c]))
        else:
            fields.append(draw(wild[c]))
    if not fully_valid:
        shape = draw(st.sampled_from(["ok"] * 20 + ["short", "long"]))
        if shape == "short" and len(fields) > 1:
            fields = fields[: draw(st.integers(1, len(fields) - 1))]
        elif shape == "long":
            fields += ["extra"]
    return fields


@st.composite
def members_files(draw, valid_only: bool = False) -> Csv:
    cols = draw(st.permutations(list(MEMBER_REQUIRED))) if valid_only else draw(members_header())
    rows = draw(st.lists(member_row(cols, valid_only), max_size=8))
    if valid_only:  # one row per member key
        seen: set[str] = set()
        rows = [r for r in rows if not (r[cols.index("member")] in seen or seen.add(r[cols.index("member")]))]
    elif rows and draw(st.integers(0, 4)) == 0:
        rows += draw(st.lists(st.sampled_from(rows), min_size=1, max_size=2))
    return draw(layout(cols, rows))


KEY_OK = re.compile(r"[A-Za-z0-9_.@\-]{1,64}")
EMAIL_OK = re.compile(r"[^@\s]+@[^@\s]+\.[^@\s]+")


class MembersOracle:
    """The members rules: per row, then (for rows that pass) e-mails owned by other members."""

    def __init__(self) -> None:
        self.keys: dict[str, int] = {}
        self.emails: dict[str, int] = {}

    def __call__(self, raw: dict[str, str], line: int) -> list[str]:
        words: list[str] = []
        key = raw["member"]
        if not key or not KEY_OK.fullmatch(key):
            words.append("member")
        elif key in self.keys:
            words += ["member", f"line {self.keys[key]}"]
        else:
            self.keys[key] = line
        email = raw["email"]
        if email:
            if not EMAIL_OK.fullmatch(email) or len(email) > 254:
                words.append("email")
            elif email.lower() in self.emails:
                words += ["email", f"line {self.emails[email.lower()]}"]
            else:
                self.emails[email.lower()] = line
        if (raw["role"] or "member") not in ("member", "staff", "admin"):
            words.append("role")
        if any(p not in PROGRAMS for p in raw["programs"].split()):
            words.append("programs")
        if len(raw["name"]) > 200:
            words.append("name")
        words += [seg for seg, limit in SEGMENT_LIMITS.items() if len(raw.get(seg, "")) > limit]
        if not words:
            owner = next((k for k, e in MEMBER_EMAILS.items() if e == email.lower()), None) if email else None
            if owner is not None and owner != key:
                words += ["email", owner]
        return words


def predict_members(f: Csv) -> Prediction:
    return predict_rows(f, MembersOracle(), MEMBER_REQUIRED, tuple(SEGMENT_LIMITS))


def member_state(session) -> dict[str, tuple]:
    session.expire_all()
    out = {}
    for m in session.scalars(select(Member)):
        programs = frozenset(session.scalars(select(Enrolment.program_key).where(Enrolment.member_id == m.id)))
        out[m.key] = (m.name, m.email, m.role, m.business_type, m.industry, m.scale, programs, m.password_hash is not None)
    return out


def expected_member_state(before: dict[str, tuple], good: list[dict[str, str]]) -> dict[str, tuple]:
    after = dict(before)
    for raw in good:
        old = before.get(raw["member"])
        segs = [raw[seg] or None if seg in raw else (old[3 + i] if old else None) for i, seg in enumerate(SEGMENT_LIMITS)]
        after[raw["member"]] = (raw["name"], raw["email"].lower() or None, raw["role"] or "member", *segs,
                                frozenset(raw["programs"].split()), bool(raw["password"]) or (old[7] if old else False))
    return after


@SQLITE
@FUZZ
@given(f=members_files())
def test_fuzz_members_csv_rejects_exactly_the_bad_lines_and_writes_nothing(s, f):
    note(repr(f.text[:2000]))
    p = predict_members(f)
    before = member_state(s)
    try:
        result, exc = run_import(s, lambda: import_members_csv(s, f.text, TODAY, now=NOW))
        if exc is not None:
            check_error_shape(exc, f.text)
            assert member_state(s) == before
        check_prediction(exc, p)
        if exc is None:
            assert member_state(s) == expected_member_state(before, p.good)
            assert result.keys == [raw["member"] for raw in p.good]
    finally:
        s.rollback()


@SQLITE
@FUZZ
@given(f=members_files(valid_only=True))
def test_fuzz_members_csv_valid_files_store_exactly_their_members(s, f):
    note(repr(f.text[:2000]))
    p = predict_members(f)
    assert not p.errors
    before = member_state(s)
    try:
        result, exc = run_import(s, lambda: import_members_csv(s, f.text, TODAY, now=NOW))
        assert exc is None, [str(e) for e in exc.errors]
        assert member_state(s) == expected_member_state(before, p.good)
        created = [raw["member"] for raw in p.good if raw["member"] not in before]
        assert (result.created, result.updated) == (len(created), len(p.good) - len(created))
    finally:
        s.rollback()


@SQLITE
@FUZZ
@given(text=mangled(members_files()))
def test_fuzz_members_csv_damaged_text_never_crashes_or_half_writes(s, text):
    note(repr(text[:2000]))
    before = member_state(s)
    try:
        _, exc = run_import(s, lambda: import_members_csv(s, text, TODAY, now=NOW))
        if exc is not None:
            check_error_shape(exc, text)
            assert member_state(s) == before
    finally:
        s.rollback()


# -- one fixed mixed file per importer on every backend (PostgreSQL too when configured) --------

MIXED_METRICS = (
    "\ufeffmember,metric,date,value,kind,id\r\n"
    "c1,video,2026-02-01,5,,v1\r\n"
    "c1,video,2026-02-30,5,,v2\r\n"  # 3: bad date
    "c2,likes,2026-02-01,NaN,,\r\n"  # 4: bad number
    '"c3","order","2026-02-01","1e3","=HYPERLINK(""x"")",""\r\n'
    "ghost,video,2026-02-01,1,,\r\n"  # 6: unknown member
    "c1,video,2026-02-01\r\n"  # 7: missing columns
    "c1,video,2026-02-01,1,,,extra\r\n"  # 8: extra field
    "c1,video,2026-02-01,1e999,,\r\n"  # 9: not finite
)
MIXED_MEMBERS = (
    "member,name,email,role,password,programs,scale\n"
    "n1,New,n1@x.io,member,,creator,small\n"
    "n1,Again,,member,,,\n"  # 3: repeated key
    "n2,X,C1@example.com,member,,,\n"  # 4: e-mail of c1
    "n3,Y,,boss,,,\n"  # 5: bad role
    "n4,Z,,member,,creator ghost,\n"  # 6: unknown program
    f"n5,W,,member,,,{'s' * 33}\n"  # 7: scale too long
)


def test_mixed_metrics_file_on_every_backend_writes_nothing(s):
    _, exc = run_import(s, lambda: import_metrics_csv(s, MIXED_METRICS))
    assert exc is not None
    assert [e.line for e in exc.errors] == [3, 4, 6, 7, 8, 9]
    assert counts(s)[2] == 1  # only the seeded row


def test_mixed_members_file_on_every_backend_writes_nothing(s):
    before = member_state(s)
    _, exc = run_import(s, lambda: import_members_csv(s, MIXED_MEMBERS, TODAY, now=NOW))
    assert exc is not None
    assert [e.line for e in exc.errors] == [3, 4, 5, 6, 7]
    assert member_state(s) == before


# -- the command line ---------------------------------------------------------------------------


@pytest.fixture
def cli_app(db_url, tmp_path):
    app = create_app({"DATABASE_URL": db_url, "TESTING": True, "PORTAL_CLI": True, "SECRET_KEY": "fuzz"})
    app.instance_path = str(tmp_path / "instance")
    runner = app.test_cli_runner()
    assert runner.invoke(args=["init"]).exit_code == 0
    members = tmp_path / "members.csv"
    members.write_text("member,name,email,role,password,programs\n"
                       "c1,C1,c1@example.com,member,,creator\nc2,C2,,member,,member\nc3,C3,,member,,\n", encoding="utf-8")
    assert runner.invoke(args=["import", "members", str(members)]).exit_code == 0
    yield app
    app.extensions["portal.db"].engine.dispose()


def cli_import(app, tmp_path: Path, kind: str, data: bytes):
    path = tmp_path / f"fuzz-{kind}.csv"
    path.write_bytes(data)
    result = app.test_cli_runner().invoke(args=["import", kind, str(path)], catch_exceptions=True)
    # a handled refusal ends in sys.exit(1); anything else is a crash with a stack trace
    assert result.exception is None or isinstance(result.exception, SystemExit), repr(result.exception)
    assert "Traceback" not in result.output
    return result


def db_counts(app) -> tuple[int, int, int]:
    with app.extensions["portal.db"].factory() as session:
        return counts(session)


def clear_metrics(app) -> None:
    with app.extensions["portal.db"].factory() as session:
        session.execute(delete(MetricRow))
        session.commit()


CLI_BAD_FILES = {
    "latin-1 bytes": "member,metric,date,value,kind\nc1,video,2026-02-01,1,caf\u00e9\n".encode("latin-1"),
    "utf-16": "member,metric,date,value\nc1,video,2026-02-01,1\n".encode("utf-16"),
    "random bytes": bytes(range(256)) * 4,
    "bad date": b"member,metric,date,value\nc1,video,2026-02-29,1\n",
    "nan": b"member,metric,date,value\nc1,video,2026-02-01,nan\n",
    "huge number": b"member,metric,date,value\nc1,video,2026-02-01,1e400\n",
    "formula": b"member,metric,date,value\n=cmd|' /C calc'!A0,video,2026-02-01,=1+1\n",
    "unknown member": b"member,metric,date,value\nnobody,video,2026-02-01,1\n",
    "extra column": b"member,metric,date,value\nc1,video,2026-02-01,1,2\n",
    "missing header column": b"member,metric,value\nc1,video,1\n",
    "empty": b"",
    "unclosed quote": b'member,metric,date,value\nc1,video,"2026-02-01,1\nc1,video,2026-02-01,1\n',
    "long field": b"member,metric,date,value\nc1,video,2026-02-01," + b"9" * (FIELD_LIMIT + 10) + b"\n",
}


@SQLITE
@pytest.mark.parametrize("name", list(CLI_BAD_FILES))
def test_cli_import_metrics_bad_file_exits_1_with_a_clear_message(cli_app, tmp_path, name):
    before = db_counts(cli_app)
    result = cli_import(cli_app, tmp_path, "metrics", CLI_BAD_FILES[name])
    assert result.exit_code == 1, result.output
    lines = result.output.strip().splitlines()
    assert lines and lines[-1].startswith("error: ")
    assert all(re.match(r"line \d+: ", line) for line in lines[:-1]), result.output
    assert db_counts(cli_app) == before


@SQLITE
def test_cli_import_good_file_with_bom_and_crlf_exits_0(cli_app, tmp_path):
    data = "\ufeffmember,metric,date,value,kind,id\r\nc1,video,2026-02-01,1,\u89c6\u9891,v1\r\nc2,likes,2026-02-01,3,,\r\n"
    result = cli_import(cli_app, tmp_path, "metrics", data.encode("utf-8"))
    assert result.exit_code == 0, result.output
    assert "2 new rows, 0 duplicates skipped" in result.output


@SQLITE
@settings(max_examples=15, deadline=None,
          suppress_health_check=[HealthCheck.function_scoped_fixture, HealthCheck.too_slow, HealthCheck.data_too_large])
@given(f=metrics_files(), encoding=st.sampled_from(["utf-8", "utf-8", "utf-8-sig", "latin-1-corrupted"]))
def test_fuzz_cli_import_metrics(cli_app, tmp_path, f, encoding):
    note(repr(f.text[:2000]))
    if encoding == "latin-1-corrupted":
        data = f.text.encode("utf-8") + b"\xff\xfe"
    else:
        data = f.text.encode(encoding, errors="surrogatepass")
    before = db_counts(cli_app)
    result = cli_import(cli_app, tmp_path, "metrics", data)
    try:
        lines = result.output.strip().splitlines()
        if encoding == "latin-1-corrupted":
            assert result.exit_code == 1 and "cannot read" in result.output
            assert db_counts(cli_app) == before
            return
        with cli_app.extensions["portal.db"].factory() as session:
            metrics = known_metrics(session)
        p = predict_rows(f, metric_check(metrics), METRIC_REQUIRED, METRIC_OPTIONAL)
        if p.errors:
            assert result.exit_code == 1, result.output
            assert db_counts(cli_app) == before
            assert lines[-1].startswith("error: ") and lines[-1].endswith("nothing was stored")
            assert sorted({int(m.group(1)) for m in re.finditer(r"^line (\d+): ", result.output, re.M)}) == sorted(p.errors)
        else:
            assert result.exit_code == 0, result.output
            assert re.fullmatch(r"\d+ new rows, \d+ duplicates skipped", lines[-1])
    finally:
        clear_metrics(cli_app)


@SQLITE
def test_real_portal_command_prints_no_traceback(cli_app, tmp_path, db_url):
    """The console script itself (not the test runner): bad bytes and a bad row."""
    portal = Path(sys.executable).with_name("portal")
    if not portal.exists():
        pytest.skip("the portal console script is not installed next to this Python")
    env = {**os.environ, "PORTAL_DATABASE_URL": db_url}
    for data, needle in [(b"member,metric,date,value\nc1,video,2026-02-01,\xff\n", "cannot read"),
                         (b"member,metric,date,value\nc1,video,2026-02-01,nan\n", "line 2: bad number 'nan'")]:
        path = tmp_path / "bad.csv"
        path.write_bytes(data)
        done = subprocess.run([str(portal), "import", "metrics", str(path)], capture_output=True, text=True, env=env,
                              cwd=tmp_path, timeout=120)
        assert done.returncode == 1, done.stdout + done.stderr
        assert "Traceback" not in done.stderr and needle in done.stderr, done.stderr
    assert db_counts(cli_app)[2] == 0


# -- reproducers of product bugs found by the fuzzing ---------------------------------------------


@POSTGRES
@pytest.mark.parametrize("row", ["c1\x00,video,2026-02-01,1,,", "c1,video,2026-02-01,1,a\x00b,", "c1,video,2026-02-01,1,,a\x00b"],
                         ids=["member", "kind", "id"])
def test_fixed_metrics_csv_nul_character_on_postgres(s, row):
    with pytest.raises(ImportRejected) as info:
        import_metrics_csv(s, f"member,metric,date,value,kind,id\n{row}\n")
    assert [e.line for e in info.value.errors] == [2]


@POSTGRES
@pytest.mark.parametrize("row", ["n1,a\x00b,,member,,,", "n1,N,a\x00@x.io,member,,,", "n1,N,,member,,,x\x00"],
                         ids=["name", "email", "industry"])
def test_fixed_members_csv_nul_character_on_postgres(s, row):
    with pytest.raises(ImportRejected) as info:
        import_members_csv(s, f"member,name,email,role,password,programs,industry\n{row}\n", TODAY, now=NOW)
    assert [e.line for e in info.value.errors] == [2]


@POSTGRES
def test_fixed_members_csv_email_grows_when_lowered_on_postgres(s):
    email = "\u0130" * 240 + "@x.io"
    try:
        import_members_csv(s, f"member,name,email,role,password,programs\nn1,N,{email},member,,\n", TODAY, now=NOW)
        s.commit()
    except ImportRejected as exc:
        assert [e.line for e in exc.errors] == [2]


@SQLITE
@pytest.mark.parametrize("field", ["member", "kind", "id"])
def test_fixed_metrics_json_lone_surrogate(s, field):
    row = {"member": "c1", "metric": "video", "date": "2026-02-01", "value": 1, field: "a\ud800"}
    with pytest.raises(ImportRejected) as info:
        import_metrics_json(s, [row])
    assert [e.index for e in info.value.errors] == [0]


@SQLITE
@pytest.mark.parametrize("field, value", [("date", False), ("date", 0), ("metric", 0), ("metric", False), ("metric", [])],
                         ids=["date-false", "date-0", "metric-0", "metric-false", "metric-list"])
def test_fixed_metrics_json_falsy_non_string_fields(s, field, value):
    row = {"member": "c1", "metric": "video", "date": "2026-02-01", "value": 1, field: value}
    try:
        import_metrics_json(s, [row])
    except ImportRejected as exc:
        assert [e.index for e in exc.errors] == [0]
        assert counts(s)[2] == 1
        return
    raise AssertionError(f"stored: {stored_metric_rows(s)}")


@SQLITE
def test_fixed_metrics_csv_empty_header_cell_is_not_named(s):
    with pytest.raises(ImportRejected) as info:
        import_metrics_csv(s, "member,metric,date,value,\nc1,video,2026-02-01,1,\n")
    (error,) = info.value.errors
    assert error.line == 1
    assert "empty" in error.reason or "''" in error.reason or "column 5" in error.reason, error.reason
