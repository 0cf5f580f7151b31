"""The import services (members CSV, metrics CSV and JSON) on a real database."""

from __future__ import annotations

import datetime as dt
import functools
import io

import pytest
from sqlalchemy import func, select

from portal.models import Enrolment, Member, MetricRow
from portal.services import imports
from portal.services import programs as programs_service
from portal.services.imports import (
    ImportRejected,
    import_members_csv,
    import_metrics_csv,
    import_metrics_json,
)
from portal.services.passwords import verify

TODAY = dt.date(2026, 3, 1)
NOW = dt.datetime(2026, 3, 1, 12, tzinfo=dt.UTC)
MEMBERS_HEADER = "member,name,email,role,password,programs"
METRICS_HEADER = "member,metric,date,value,kind,id"


@pytest.fixture
def s(session):
    programs_service.load_builtins(session)
    for key in ("c1", "c2"):
        session.add(Member(key=key, name=key, role="member", created_at=NOW))
    session.commit()
    return session


def count(session, model) -> int:
    return session.scalar(select(func.count()).select_from(model))


def metric_rows(session) -> list[tuple]:
    return list(
        session.execute(
            select(Member.key, MetricRow.metric, MetricRow.date, MetricRow.value, MetricRow.kind, MetricRow.event_id)
            .join(Member, Member.id == MetricRow.member_id)
            .order_by(MetricRow.id)
        )
    )


def member(session, key: str) -> Member:
    session.expire_all()
    return session.scalar(select(Member).where(Member.key == key))


def enrolments(session, key: str) -> set[str]:
    session.expire_all()
    return set(
        session.scalars(select(Enrolment.program_key).join(Member, Member.id == Enrolment.member_id).where(Member.key == key))
    )


def csv_text(header: str, *lines: str) -> str:
    return "\n".join([header, *lines]) + "\n"


def rejected(call) -> list[tuple[int | None, str]]:
    with pytest.raises(ImportRejected) as info:
        call()
    return [(e.line if e.line is not None else e.index, e.reason) for e in info.value.errors]


# -- metrics CSV ------------------------------------------------------------------------------


def test_metrics_csv_stores_every_row(s):
    text = csv_text(
        METRICS_HEADER,
        "c1,video,2026-02-01,1500,,v1",
        "c1,video,2026-02-01,20,,v2",  # a second video the same day is a separate event
        "c2,order,2026-02-03,1,universal,",
        " c2 , likes , 2026-02-04 , 1e3 , , ",  # spaces around fields are ignored
    )
    result = import_metrics_csv(s, text)
    s.commit()
    assert (result.new, result.duplicates) == (4, 0)
    assert metric_rows(s) == [
        ("c1", "video", dt.date(2026, 2, 1), 1500.0, None, "v1"),
        ("c1", "video", dt.date(2026, 2, 1), 20.0, None, "v2"),
        ("c2", "order", dt.date(2026, 2, 3), 1.0, "universal", None),
        ("c2", "likes", dt.date(2026, 2, 4), 1000.0, None, None),
    ]
    assert result.line() == "4 new rows, 0 duplicates skipped"


def test_metrics_csv_optional_columns_may_be_left_out_and_a_bom_is_ignored(s):
    result = import_metrics_csv(s, "\ufeffmember,metric,date,value\r\nc1,followers,2026-01-31,120000\r\n")
    s.commit()
    assert (result.new, result.duplicates) == (1, 0)
    assert metric_rows(s) == [("c1", "followers", dt.date(2026, 1, 31), 120000.0, None, None)]


BAD_METRIC_ROWS = [
        ("nobody,video,2026-02-01,1,,", "unknown member 'nobody'"),
        ("c1,telepathy,2026-02-01,1,,", "unknown metric 'telepathy'"),
        ("c1,video,2026-13-01,1,,", "bad date '2026-13-01' (expected YYYY-MM-DD)"),
        ("c1,video,2026/01/01,1,,", "bad date '2026/01/01' (expected YYYY-MM-DD)"),
        ("c1,video,2026-02-30,1,,", "bad date '2026-02-30' (expected YYYY-MM-DD)"),
        ("c1,video,20260101,1,,", "bad date '20260101' (expected YYYY-MM-DD)"),
        ("c1,video,2026-02-01,abc,,", "bad number 'abc'"),
        ("c1,video,2026-02-01,nan,,", "bad number 'nan'"),
        ("c1,video,2026-02-01,inf,,", "bad number 'inf'"),
        ("c1,video,2026-02-01,1_000,,", "bad number '1_000'"),
        ("c1,video,2026-02-01,,,", "missing value"),
        (",video,2026-02-01,1,,", "missing member"),
        ("c1,,2026-02-01,1,,", "missing metric"),
        ("c1,video,,1,,", "missing date"),
        ("c1,video,2026-02-01", "missing column value, kind, id"),
        ("c1,video,2026-02-01,1,,,extra", "7 fields but the header has 6"),
        ("c1,video,2026-02-01,1," + "k" * 65 + ",", "kind is longer than 64 characters"),
        ("c1,video,2026-02-01,1,," + "i" * 129, "id is longer than 128 characters"),
    ]


@pytest.mark.parametrize("line, reason", BAD_METRIC_ROWS, ids=[r for _, r in BAD_METRIC_ROWS])
def test_metrics_csv_bad_row_reason_and_line(s, line, reason):
    text = csv_text(METRICS_HEADER, "c1,video,2026-02-01,5,,ok1", line, "c2,video,2026-02-01,5,,ok2")
    assert rejected(lambda: import_metrics_csv(s, text)) == [(3, reason)]
    assert count(s, MetricRow) == 0  # nothing stored, not even flushed
    s.rollback()
    assert count(s, MetricRow) == 0


def test_metrics_csv_several_reasons_of_one_row_are_joined(s):
    text = csv_text(METRICS_HEADER, "c1,telepathy,2026/01/01,abc,,")
    assert rejected(lambda: import_metrics_csv(s, text)) == [
        (2, "unknown metric 'telepathy'; bad date '2026/01/01' (expected YYYY-MM-DD); bad number 'abc'")
    ]


@pytest.mark.parametrize(
    "header, reason",
    [
        ("member,metric,date", "missing column value (expected member,metric,date,value[,kind,id])"),
        ("member,date,value,kind", "missing column metric (expected member,metric,date,value[,kind,id])"),
        ("member,metric,date,value,colour", "unknown column colour (expected member,metric,date,value[,kind,id])"),
        ("member,metric,date,value,value", "repeated column value (expected member,metric,date,value[,kind,id])"),
    ],
)
def test_metrics_csv_bad_header_is_line_1(s, header, reason):
    text = csv_text(header, "c1,video,2026-02-01,5,x", "c1,video,2026-02-01,5,y")
    assert rejected(lambda: import_metrics_csv(s, text)) == [(1, reason)]
    assert count(s, MetricRow) == 0


def test_metrics_csv_empty_file(s):
    assert rejected(lambda: import_metrics_csv(s, "")) == [(1, "the file is empty (no header)")]


def test_metrics_csv_lists_every_bad_row_by_line_and_stores_nothing(s):
    text = csv_text(
        METRICS_HEADER,
        "c1,video,2026-02-01,5,,a",  # 2 good
        "ghost,video,2026-02-01,5,,b",  # 3
        "c1,video,2026-02-01,5,,c",  # 4 good
        "",  # 5: a blank line is skipped but still counted
        "c2,video,2026-13-01,5,,d",  # 6
        "c2,likes,2026-02-01,lots,,e",  # 7
        "c2,likes,2026-02-01",  # 8
        "ghost2,order,2026-02-01,1,,f",  # 9
    )
    assert rejected(lambda: import_metrics_csv(s, text)) == [
        (3, "unknown member 'ghost'"),
        (6, "bad date '2026-13-01' (expected YYYY-MM-DD)"),
        (7, "bad number 'lots'"),
        (8, "missing column value, kind, id"),
        (9, "unknown member 'ghost2'"),
    ]
    assert count(s, MetricRow) == 0
    s.rollback()
    assert count(s, MetricRow) == 0


def test_metrics_csv_error_message_and_details(s):
    text = csv_text(METRICS_HEADER, "c1,video,2026-02-01,x,,", "c1,video,2026-02-01,y,,")
    with pytest.raises(ImportRejected) as info:
        import_metrics_csv(s, text)
    err = info.value
    assert [str(e) for e in err.errors] == ["line 2: bad number 'x'", "line 3: bad number 'y'"]
    assert [e.as_dict() for e in err.errors] == [{"reason": "bad number 'x'", "line": 2}, {"reason": "bad number 'y'", "line": 3}]
    assert "2 bad rows; nothing was stored" in str(err)


def test_metrics_csv_line_numbers_count_physical_lines_of_quoted_fields(s):
    text = 'member,metric,date,value,kind\nc1,video,2026-02-01,5,"two\nlines"\nc1,video,2026-02-01,bad,\n'
    assert rejected(lambda: import_metrics_csv(s, text)) == [(4, "bad number 'bad'")]


def outcome(s, text: str):
    """What importing the text does: (new, duplicates) and the stored rows, or the errors."""
    try:
        result = import_metrics_csv(s, text)
        return (result.new, result.duplicates), metric_rows(s)
    except ImportRejected as exc:
        return [(e.line, e.reason) for e in exc.errors]
    finally:
        s.rollback()


def quoted(line: str) -> str:
    return ",".join(f'"{f}"' for f in line.split(",")) if line else line


def test_metrics_csv_plain_files_and_quoted_ones_read_the_same(s):
    # A plain body is split with str.split, any other through csv.reader (quotes, spaces,
    # a lone CR): the same rows, reasons and line numbers either way, blank lines included.
    rows = ["c1,video,2026-02-01,5,universal,v1", "", "c2,likes,2026-02-02,1e3,,", ",,,,,",
            "c1,order,2026-02-03,2,,o1", "c1,video,2026-02-01,5,,v1"]
    bad = ["c9,video,2026-02-01,5,,", "", "c1,video,2026-02-30,x,,", "c1,video"]
    outcome = functools.partial(globals()["outcome"], s)

    for lines in (rows, bad):
        plain = csv_text(METRICS_HEADER, *lines)
        variants = [csv_text(METRICS_HEADER, *map(quoted, lines)), plain.replace("\n", "\r\n"),
                    csv_text(METRICS_HEADER, *(line.replace(",", " ,") for line in lines))]
        assert all(outcome(v) == outcome(plain) for v in variants)
    assert outcome(csv_text(METRICS_HEADER, *rows)) == ((3, 1), [  # the second v1 is a duplicate
        ("c1", "video", dt.date(2026, 2, 1), 5.0, "universal", "v1"),
        ("c2", "likes", dt.date(2026, 2, 2), 1000.0, None, None),
        ("c1", "order", dt.date(2026, 2, 3), 2.0, None, "o1"),
    ])
    assert outcome(csv_text(METRICS_HEADER, *bad)) == [
        (2, "unknown member 'c9'"), (4, "bad date '2026-02-30' (expected YYYY-MM-DD); bad number 'x'"),
        (5, "missing column date, value, kind, id")]


def test_metrics_csv_headers_quoted_or_with_other_line_ends_read_the_same(s):
    # A header on one line without quotes is read alone and the body after it; any other
    # header through csv.reader over the whole file: the same rows, reasons and line numbers.
    for lines in (["c1,video,2026-02-01,5,,v1", "", "c1,likes,2026-02-02,7,k,"],
                  ["c1,video,2026-02-01,5,,v1", "", "c9,video,2026-02-01,5,,", "c1,video,2026-02-30,5,,"]):
        plain = csv_text(METRICS_HEADER, *lines)
        for text in (csv_text(quoted(METRICS_HEADER), *lines), csv_text(quoted(METRICS_HEADER), *map(quoted, lines)),
                     plain.replace("\n", "\r\n", 1), plain.replace("\n", "\r\n"), plain.replace("\n", "\r"),
                     "\ufeff" + plain):
            assert outcome(s, text) == outcome(s, plain), text
    assert outcome(s, plain) == [(4, "unknown member 'c9'"), (5, "bad date '2026-02-30' (expected YYYY-MM-DD)")]
    assert outcome(s, METRICS_HEADER) == outcome(s, METRICS_HEADER + "\r\n") == ((0, 0), [])
    assert outcome(s, "") == [(1, "the file is empty (no header)")]
    # a header over two lines (a quoted line end, stripped from the name) moves the rows down one
    assert outcome(s, csv_text('member,metric,date,value,kind,"id\n"', *lines)) \
        == [(5, "unknown member 'c9'"), (6, "bad date '2026-02-30' (expected YYYY-MM-DD)")]


@pytest.mark.parametrize("row, reason", [
    ("c1\x00,video,2026-02-01,5,,", "member contains a NUL character"),
    ("c1,video,2026-02-01,5,k\x00,", "kind contains a NUL character"),
    ("c1,video,2026-02-01,5,,v\x00", "id contains a NUL character"),
])
def test_metrics_csv_a_nul_in_a_text_field_is_refused_in_short_lines_and_long_ones(s, row, reason):
    # Short lines of a plain body skip the NUL and length checks (they cannot fail there);
    # a NUL keeps the body off that path, whatever the lines' length.
    for other in ("c1,likes,2026-02-02,1,,", "c1,likes,2026-02-02,1,," + "x" * 100):
        assert outcome(s, csv_text(METRICS_HEADER, other, row)) == [(3, reason)]


def test_metrics_csv_a_field_over_csvs_limit_is_refused_in_a_plain_file_too(s):
    text = csv_text(METRICS_HEADER, "c1,video,2026-02-01,5,,v1", "c1,video,2026-02-01,5,," + "9" * 200_000)
    [(line, reason)] = rejected(lambda: import_metrics_csv(s, text))
    assert line == 3 and reason.startswith("unreadable CSV: field larger than field limit")


def test_what_keeps_a_csv_body_off_the_split_path_is_every_character_strip_removes():
    import sys

    spaces = {c for c in map(chr, range(sys.maxunicode + 1)) if c.isspace()}
    assert set(imports._NOT_PLAIN) == (spaces - {"\n"}) | {'"', "\x00"}


def test_metrics_csv_duplicates_by_event_id_are_skipped_and_counted(s):
    text = csv_text(
        METRICS_HEADER,
        "c1,video,2026-02-01,100,,v1",
        "c1,video,2026-02-02,100,,v2",
        "c1,live,2026-02-02,100,,v1",  # same id, another metric: another event
        "c2,video,2026-02-02,100,,v1",  # same id, another member: another event
        "c1,likes,2026-02-02,7,,",  # no id
        "c1,likes,2026-02-02,7,,",  # no id, identical: never a duplicate
    )
    first = import_metrics_csv(s, text)
    s.commit()
    assert (first.new, first.duplicates) == (6, 0)

    again = import_metrics_csv(s, text)
    s.commit()
    assert (again.new, again.duplicates) == (2, 4)  # only the two rows without an id are new
    assert count(s, MetricRow) == 8


def test_metrics_csv_reimport_of_identified_rows_adds_nothing(s):
    text = csv_text(METRICS_HEADER, *[f"c1,video,2026-02-{d:02d},{d},,vid-{d}" for d in range(1, 11)])
    assert (import_metrics_csv(s, text).new, count(s, MetricRow)) == (10, 10)
    s.commit()
    again = import_metrics_csv(s, text)
    s.commit()
    assert (again.new, again.duplicates) == (0, 10)
    assert count(s, MetricRow) == 10


def test_metrics_csv_same_id_twice_in_one_file_counts_once(s):
    text = csv_text(
        METRICS_HEADER,
        "c1,order,2026-02-01,1,,o-1",
        "c1,order,2026-02-05,1,,o-1",  # the same order again (the first one wins)
        "c1,order,2026-02-05,1,,o-2",
    )
    result = import_metrics_csv(s, text)
    s.commit()
    assert (result.new, result.duplicates) == (2, 1)
    assert [(r[2], r[5]) for r in metric_rows(s)] == [(dt.date(2026, 2, 1), "o-1"), (dt.date(2026, 2, 5), "o-2")]

    again = import_metrics_csv(s, text)  # the in-file duplicate and both stored ones
    assert (again.new, again.duplicates) == (0, 3)


def test_metrics_csv_across_insert_statements_keeps_file_order_and_the_first_of_each_event(s):
    # SQLite inserts SQLITE_INSERT_ROWS rows per statement: a repeated event in the same
    # statement, in the next one and in the short last one must all lose to the first row.
    n = imports.SQLITE_INSERT_ROWS
    lines = [f"c1,video,2026-02-01,{i},,e{i}" for i in range(2 * n + 7)]
    lines[3] = "c1,video,2026-02-01,3,,e0"  # same statement as e0
    lines[n + 1] = "c1,video,2026-02-01,999,,e2"  # the next statement
    lines[2 * n + 5] = "c1,video,2026-02-01,998,,e4"  # the last, short statement
    lines[2 * n + 6] = "c2,video,2026-02-01,997,,e4"  # another member: another event
    result = import_metrics_csv(s, csv_text(METRICS_HEADER, *lines))
    s.commit()
    assert (result.new, result.duplicates) == (2 * n + 4, 3)
    stored = [(r[0], r[3], r[5]) for r in metric_rows(s)]
    dropped = {3, n + 1, 2 * n + 5}
    expected = [("c1", float(i), f"e{i}") for i in range(2 * n + 6) if i not in dropped] + [("c2", 997.0, "e4")]
    assert stored == expected


def test_metrics_csv_statements_with_and_without_kinds_and_ids_store_them_exactly(s):
    # SQLite binds four values a row for a statement's rows that have no kind nor id: a
    # statement of such rows, one with kinds only, one with ids only, and a short mixed one.
    n = imports.SQLITE_INSERT_ROWS
    kinds = [("", "")] * n + [(f"k{i % 3}", "") for i in range(n)] + [("", f"e{i}") for i in range(n)] \
        + [("", ""), ("k9", ""), ("", "last")]
    lines = [f"c{1 + i % 2},video,2026-02-01,{i},{kind},{event}" for i, (kind, event) in enumerate(kinds)]
    result = import_metrics_csv(s, csv_text(METRICS_HEADER, *lines))
    s.commit()
    assert (result.new, result.duplicates) == (len(lines), 0)
    assert metric_rows(s) == [(f"c{1 + i % 2}", "video", dt.date(2026, 2, 1), float(i), kind or None, event or None)
                              for i, (kind, event) in enumerate(kinds)]


def test_metrics_csv_a_bad_row_stores_nothing_even_for_new_good_rows(s):
    import_metrics_csv(s, csv_text(METRICS_HEADER, "c1,video,2026-02-01,1,,a"))
    s.commit()
    text = csv_text(METRICS_HEADER, "c1,video,2026-02-01,1,,b", "c1,video,2026-02-01,1,,a", "c9,video,2026-02-01,1,,c")
    assert rejected(lambda: import_metrics_csv(s, text)) == [(4, "unknown member 'c9'")]
    s.rollback()
    assert [r[5] for r in metric_rows(s)] == ["a"]


def test_metrics_csv_100k_rows(s):
    keys = [f"bulk{i:03d}" for i in range(200)]
    s.add_all(Member(key=k, name=k, role="member", created_at=NOW) for k in keys)
    s.commit()
    buf = io.StringIO()
    buf.write(METRICS_HEADER + "\n")
    metrics = ("video", "live", "order", "likes", "submission_task")
    for i in range(100_000):
        day = dt.date(2025, 1, 1) + dt.timedelta(days=i % 365)
        event_id = f"e{i}" if i % 2 else ""
        buf.write(f"{keys[i % 200]},{metrics[i % 5]},{day.isoformat()},{i % 997},,{event_id}\n")
    result = import_metrics_csv(s, buf.getvalue())
    s.commit()
    assert (result.new, result.duplicates) == (100_000, 0)
    assert count(s, MetricRow) == 100_000
    assert s.scalar(select(func.sum(MetricRow.value))) == sum(i % 997 for i in range(100_000))


# -- metrics JSON -----------------------------------------------------------------------------


def test_metrics_json_stores_rows(s):
    result = import_metrics_json(
        s,
        [
            {"member": "c1", "metric": "video", "date": "2026-02-01", "value": 1500, "id": "v1"},
            {"member": "c2", "metric": "order", "date": "2026-02-02", "value": "1", "kind": "mini_game"},
            {"member": "c2", "metric": "credit_score", "date": "2026-02-02", "value": 77.5, "kind": None, "id": None},
        ],
    )
    s.commit()
    assert (result.new, result.duplicates) == (3, 0)
    assert metric_rows(s) == [
        ("c1", "video", dt.date(2026, 2, 1), 1500.0, None, "v1"),
        ("c2", "order", dt.date(2026, 2, 2), 1.0, "mini_game", None),
        ("c2", "credit_score", dt.date(2026, 2, 2), 77.5, None, None),
    ]


def test_metrics_json_names_bad_rows_by_index_and_stores_nothing(s):
    good = {"member": "c1", "metric": "video", "date": "2026-02-01", "value": 1}
    items = [
        good,
        {**good, "member": "ghost"},  # 1
        {**good, "metric": "telepathy"},  # 2
        {**good, "date": "2026-13-01"},  # 3
        {**good, "value": "abc"},  # 4
        {**good, "value": float("nan")},  # 5
        {**good, "value": True},  # 6
        {k: v for k, v in good.items() if k != "value"},  # 7
        {**good, "colour": "red"},  # 8
        "not an object",  # 9
        {**good, "value": None},  # 10
        {**good, "date": "2026/01/01"},  # 11
        good,
    ]
    assert rejected(lambda: import_metrics_json(s, items)) == [
        (1, "unknown member 'ghost'"),
        (2, "unknown metric 'telepathy'"),
        (3, "bad date '2026-13-01' (expected YYYY-MM-DD)"),
        (4, "bad number 'abc'"),
        (5, "bad number 'nan'"),
        (6, "bad number 'True'"),
        (7, "missing value"),
        (8, "unknown field colour"),
        (9, "each row must be an object"),
        (10, "missing value"),
        (11, "bad date '2026/01/01' (expected YYYY-MM-DD)"),
    ]
    with pytest.raises(ImportRejected) as info:
        import_metrics_json(s, items)
    assert info.value.errors[0].where == "rows[1]"
    assert info.value.errors[0].as_dict() == {"reason": "unknown member 'ghost'", "index": 1}
    assert count(s, MetricRow) == 0


def test_metrics_json_must_be_a_list(s):
    assert rejected(lambda: import_metrics_json(s, {"member": "c1"})) == [(None, "'rows' must be a list of objects")]


def test_metrics_json_duplicates_by_id(s):
    items = [
        {"member": "c1", "metric": "order", "date": "2026-02-01", "value": 1, "id": "o-1"},
        {"member": "c1", "metric": "order", "date": "2026-02-01", "value": 1, "id": "o-1"},
        {"member": "c1", "metric": "order", "date": "2026-02-01", "value": 1},
    ]
    first = import_metrics_json(s, items)
    s.commit()
    again = import_metrics_json(s, items)
    s.commit()
    assert (first.new, first.duplicates) == (2, 1)
    assert (again.new, again.duplicates) == (1, 2)
    assert count(s, MetricRow) == 3


# -- members CSV ------------------------------------------------------------------------------


def test_members_csv_creates_members_with_enrolments_and_hashed_passwords(s):
    text = csv_text(
        MEMBERS_HEADER + ",business_type,industry,scale",
        "n1,New One,N1@Example.com,member,s3cret-pass,creator member,content,tech,small",
        "n2,New Two,,staff,,,brand,,large",
        "n3,New Three,,,,creator,,,",  # empty role: member
    )
    result = import_members_csv(s, text, TODAY, now=NOW)
    s.commit()
    assert (result.created, result.updated, result.enrolments_added, result.enrolments_removed) == (3, 0, 3, 0)
    assert result.keys == ["n1", "n2", "n3"]

    n1, n2, n3 = member(s, "n1"), member(s, "n2"), member(s, "n3")
    assert (n1.name, n1.email, n1.role) == ("New One", "n1@example.com", "member")
    assert (n1.business_type, n1.industry, n1.scale) == ("content", "tech", "small")
    assert (n2.role, n2.email, n2.business_type, n2.industry, n2.scale) == ("staff", None, "brand", None, "large")
    assert n3.role == "member"
    assert enrolments(s, "n1") == {"creator", "member"}
    assert enrolments(s, "n2") == set()
    assert enrolments(s, "n3") == {"creator"}
    assert s.scalar(select(Enrolment.enrolled_on).where(Enrolment.member_id == n3.id)) == TODAY

    assert n1.password_hash.startswith("$argon2id$")
    assert "s3cret-pass" not in n1.password_hash
    assert verify(n1.password_hash, "s3cret-pass") and not verify(n1.password_hash, "wrong")
    assert n2.password_hash is None


def test_members_csv_updates_and_sets_enrolments_exactly(s):
    import_members_csv(s, csv_text(MEMBERS_HEADER, "u1,Old Name,old@example.com,member,first-pass,creator member"), TODAY)
    s.commit()
    old_hash = member(s, "u1").password_hash
    old_id = member(s, "u1").id

    text = csv_text(MEMBERS_HEADER, "u1,New Name,new@example.com,staff,,member scorecard music", "c1,C One,,member,,creator")
    result = import_members_csv(s, text, TODAY + dt.timedelta(days=1))
    s.commit()
    assert (result.created, result.updated, result.enrolments_added, result.enrolments_removed) == (0, 2, 3, 1)
    u1 = member(s, "u1")
    assert (u1.id, u1.name, u1.email, u1.role) == (old_id, "New Name", "new@example.com", "staff")
    assert u1.password_hash == old_hash  # an empty password keeps the old one
    assert enrolments(s, "u1") == {"member", "scorecard", "music"}
    assert enrolments(s, "c1") == {"creator"}
    assert count(s, Member) == 3

    # the same file again changes nothing
    again = import_members_csv(s, text, TODAY + dt.timedelta(days=2))
    s.commit()
    assert (again.created, again.updated, again.enrolments_added, again.enrolments_removed) == (0, 2, 0, 0)

    # an empty programs column drops every enrolment; a new password is hashed anew
    result = import_members_csv(s, csv_text(MEMBERS_HEADER, "u1,New Name,new@example.com,staff,second-pass,"), TODAY)
    s.commit()
    assert (result.enrolments_added, result.enrolments_removed) == (0, 3)
    assert enrolments(s, "u1") == set()
    u1 = member(s, "u1")
    assert u1.password_hash != old_hash and verify(u1.password_hash, "second-pass")


def test_members_csv_segments_only_change_when_their_column_is_given(s):
    header = MEMBERS_HEADER + ",business_type,industry,scale"
    import_members_csv(s, csv_text(header, "g1,G,,member,,,advertising,finance,medium"), TODAY)
    s.commit()
    import_members_csv(s, csv_text(MEMBERS_HEADER, "g1,G renamed,,member,,"), TODAY)
    s.commit()
    g1 = member(s, "g1")
    assert (g1.name, g1.business_type, g1.industry, g1.scale) == ("G renamed", "advertising", "finance", "medium")
    import_members_csv(s, csv_text(MEMBERS_HEADER + ",industry", "g1,G,,member,,,"), TODAY)
    s.commit()
    g1 = member(s, "g1")
    assert (g1.business_type, g1.industry, g1.scale) == ("advertising", None, "medium")


def test_members_csv_a_long_segment_value_is_rejected_or_stored_whole(s, request):
    """The importer allows 64 characters for every segment, but ``members.scale`` is
    VARCHAR(32): on PostgreSQL a 33-64 character scale fails inside the insert."""
    scale = "s" * 40
    text = csv_text(MEMBERS_HEADER + ",scale", f"L1,Long,,member,,,{scale}")
    try:
        import_members_csv(s, text, TODAY)
        s.commit()
    except ImportRejected as exc:  # a clear row error is fine too
        assert [e.line for e in exc.errors] == [2]
        return
    assert member(s, "L1").scale == scale


BAD_MEMBER_ROWS = [
        ("x1,X,,boss,,", "bad role 'boss' (member, staff or admin)"),
        ("x1,X,,member,,creator nope", "unknown program 'nope'"),
        ("x1,X,not-an-email,member,,", "bad email 'not-an-email'"),
        ("x1,X,a@b,member,,", "bad email 'a@b'"),
        ("x y,X,,member,,", "bad member key 'x y' (letters, digits and _ . @ - only, at most 64)"),
        (",X,,member,,", "missing member"),
        ("x1,X,,member", "missing column password, programs"),
        ("x1," + "n" * 201 + ",,member,,", "name is longer than 200 characters"),
    ]


@pytest.mark.parametrize("line, reason", BAD_MEMBER_ROWS, ids=[r for _, r in BAD_MEMBER_ROWS])
def test_members_csv_bad_row(s, line, reason):
    text = csv_text(MEMBERS_HEADER, "ok1,OK,,member,,creator", line)
    assert rejected(lambda: import_members_csv(s, text, TODAY)) == [(3, reason)]
    assert count(s, Member) == 2
    assert count(s, Enrolment) == 0


def test_members_csv_errors_are_all_listed_and_nothing_is_written(s):
    import_members_csv(s, csv_text(MEMBERS_HEADER, "owner,Owner,taken@example.com,member,,creator"), TODAY)
    s.commit()
    members_before, enrolments_before = count(s, Member), count(s, Enrolment)
    text = csv_text(
        MEMBERS_HEADER,
        "g0,Good,good@example.com,member,,member",  # 2 good
        "d1,Dup,,member,,",  # 3 good
        "d1,Dup again,,member,,",  # 4 duplicate key
        "e1,E,Taken@Example.com,member,,",  # 5 email of another member
        "e2,E2,shared@example.com,member,,",  # 6 good
        "e3,E3,SHARED@example.com,member,,",  # 7 email already in this file
        "r1,R,,root,,",  # 8 bad role
        "p1,P,,member,,creator ghost",  # 9 unknown program
        "m1,M,bad-email,member,,",  # 10 bad email
    )
    assert rejected(lambda: import_members_csv(s, text, TODAY)) == [
        (4, "member 'd1' already appears on line 3"),
        (5, "email 'Taken@Example.com' belongs to member 'owner'"),
        (7, "email 'SHARED@example.com' already appears on line 6"),
        (8, "bad role 'root' (member, staff or admin)"),
        (9, "unknown program 'ghost'"),
        (10, "bad email 'bad-email'"),
    ]
    assert (count(s, Member), count(s, Enrolment)) == (members_before, enrolments_before)
    s.rollback()
    assert (count(s, Member), count(s, Enrolment)) == (members_before, enrolments_before)
    owner = member(s, "owner")
    assert owner.name == "Owner" and enrolments(s, "owner") == {"creator"}


def test_members_csv_bad_header(s):
    assert rejected(lambda: import_members_csv(s, "member,name,email,role\nx,X,,member\n", TODAY)) == [
        (1, "missing columns password, programs (expected member,name,email,role,password,programs[,business_type,industry,scale])")
    ]
    assert rejected(lambda: import_members_csv(s, MEMBERS_HEADER + ",locale\n", TODAY)) == [
        (1, "unknown column locale (expected member,name,email,role,password,programs[,business_type,industry,scale])")
    ]
