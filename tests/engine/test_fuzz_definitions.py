"""Property-based fuzzing of the program definition loader and the linter. Pure: no database.

Starting from the real YAML of the four built-in programs, the definitions are damaged as
data (keys dropped, renamed or added, values of the wrong type, negative, huge, NaN or
infinite thresholds, random expressions, references to unknown levels, sub-classes and
values, cycles between values, duplicated or reordered levels) and as text (broken YAML,
stray characters, cut lines, random bytes, JSON instead of YAML).

Properties:
- ``load_text`` returns a ``Program`` or raises ``DefinitionError``; never any other exception;
- a ``DefinitionError`` lists (path, message) pairs and its text shows each of them; a path is
  empty only for a whole-document problem (not YAML/JSON, not a mapping), otherwise it starts
  with a field of the program, and after a damaged field at least one error points at that
  field (or a parent/child of it) unless every error is about a broken reference elsewhere;
- a definition that loads is linted without an exception, and ``lint_text`` never raises.

Known product bugs the fuzzing finds are reproduced by ``xfail(strict=True)`` tests at the
end; the fuzz loops recognise exactly those crashes (``KNOWN_BUGS``) and count them as events
instead of failing, so any *other* crash still fails. Delete an entry once its bug is fixed.
"""

from __future__ import annotations

import contextlib
import copy
import json
import math
import re
import traceback
from pathlib import Path
from typing import Any

import pytest
import yaml
from hypothesis import HealthCheck, given, note, settings
from hypothesis import event as hypothesis_event
from hypothesis import strategies as st
from hypothesis.errors import InvalidArgument

from portal.engine.definition import BUILTIN_KEYS, DefinitionError, Program, builtin_path, load_text
from portal.engine.lint import Finding, lint, lint_text

FUZZ = settings(max_examples=100, deadline=None,
                suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large])
SOURCES = {key: builtin_path(key).read_text(encoding="utf-8") for key in BUILTIN_KEYS}
DATA = {key: yaml.safe_load(text) for key, text in SOURCES.items()}
TOP_FIELDS = set(Program.model_fields)
WHOLE_DOCUMENT = ("not valid YAML/JSON", "a program definition is a mapping")
# Messages about a name that does not resolve, or about fields that disagree with each
# other: such an error may sit far from the damaged field (a renamed value is reported where
# it is used).
REFERENCE_MESSAGES = ("unknown metric", "unknown value", "unknown level", "unknown sub-class", "duplicate level",
                      "is not a lower level", "needs a band", "names the value", "depend on each other")


def event(name: str) -> None:
    with contextlib.suppress(InvalidArgument):
        hypothesis_event(name)


# -- known bugs (each has an xfail reproducer below) ----------------------------------------------

KNOWN_BUGS: list[tuple[str, type[BaseException], str, str]] = []  # all fixed; keep for new finds


# Errors inside a bucket table are reported as values.<key>.table[0].op, not
# values.<key>.buckets.table[0].op (see test_bug_bucket_error_paths_leave_out_buckets).
KNOWN_PATH_QUIRK = False


def known_bug(exc: BaseException) -> str | None:
    frames = traceback.extract_tb(exc.__traceback__)
    functions = {frame.name for frame in frames} | {"/".join(Path(frame.filename).parts[-2:]) for frame in frames}
    for name, kind, text, function in KNOWN_BUGS:
        if isinstance(exc, kind) and text in str(exc) and (not function or function in functions):
            return name
    return None


# -- paths ------------------------------------------------------------------------------------------

Path_ = tuple[str | int, ...]


def show(path: Path_) -> str:
    out = ""
    for part in path:
        out += f"[{part}]" if isinstance(part, int) else ("." if out else "") + str(part)
    return out


# pydantic names the member of a union a value failed against: ``name.str`` and
# ``name.dict[str,str].zh_CN`` for a label (a string or {zh_CN, en}). Not part of the file's path.
UNION_TAG = re.compile(r"\.(?:str|int|float|bool|dict\[[^\]]*\]|list\[[^\]]*\])(?=\.|\[|$)")


def parse(path: str) -> list[str]:
    """'levels[2].requires[0].op' -> ['levels', '2', 'requires', '0', 'op']."""
    return [a or b for a, b in re.findall(r"\[(\d+)\]|([^.\[\]]+)", UNION_TAG.sub("", path))]


def related(error_path: str, damaged: Path_) -> bool:
    """The error is at the damaged field, inside it, or at one of its parents."""
    a, b = parse(error_path), [str(p) for p in damaged]
    if KNOWN_PATH_QUIRK and len(b) > 2 and b[0] == "values" and b[2] in ("buckets", "rank_buckets"):
        b = b[:2] + b[3:]  # see test_bug_bucket_error_paths_leave_out_buckets
    n = min(len(a), len(b))
    return n > 0 and a[:n] == b[:n]


def all_paths(node: Any, prefix: Path_ = ()) -> list[Path_]:
    out: list[Path_] = []
    if isinstance(node, dict):
        for k, v in node.items():
            out.append((*prefix, k))
            out += all_paths(v, (*prefix, k))
    elif isinstance(node, list):
        for i, v in enumerate(node):
            out.append((*prefix, i))
            out += all_paths(v, (*prefix, i))
    return out


def get(node: Any, path: Path_) -> Any:
    for part in path:
        node = node[part]
    return node


# -- values to put in place of a field --------------------------------------------------------------

NAME = st.from_regex(r"[A-Za-z][A-Za-z0-9_]{0,8}", fullmatch=True)
THRESHOLDS = st.one_of(
    st.sampled_from([-1, -1e9, 0, -0.0, 1e308, 1e300, 10**20, -(10**20), 2**63, 10**400, math.inf, -math.inf, math.nan]),
    st.integers(-10**12, 10**12),
    st.floats(),
)
EXPRESSIONS = st.one_of(
    st.sampled_from(["1 +", "x ** 2", "__import__('os').system('true')", "min()", "max(a=1)", "lambda: 1", "a if b else c",
                     "'text'", "1 / 0", "nosuch * 2", "min(1, nosuch)", "round(1, 1e9)", "abs(-1, 2)", "(1", "[1, 2]",
                     "x.y", "x[0]", "not 1", "1 < 2", "f(1)", "1e999 - 1e999", "1e308 * 10", "-(-(-1))", "0 * 1e999",
                     "round(0.5)", "", " ", "#", "\x00", "1" + "0" * 400]),
    st.lists(st.one_of(NAME, st.integers(-5, 10**6).map(str), st.sampled_from(["+", "-", "*", "/", "(", ")", ",", "min(", "max(",
                                                                             "abs(", "round(", "1e308", "**", "%"])),
             max_size=12).map(" ".join),
    st.text(max_size=20),
)
WEIRD = st.one_of(
    st.none(), st.booleans(), THRESHOLDS, st.text(max_size=20), NAME, EXPRESSIONS,
    st.lists(st.one_of(st.integers(), st.text(max_size=5)), max_size=3),
    st.dictionaries(st.text(max_size=5), st.one_of(st.integers(), st.text(max_size=5)), max_size=3),
    st.sampled_from([{}, [], "", ">=", "=>", "ladder", "bands", "daily", "30d", "0d", "-1d", "99999999d", "1m",
                     {"zh_CN": 1}, {"metric": "nosuch", "agg": "count"}, {"buckets": 5}, {"rank_buckets": []},
                     {"op": ">=", "required": 1}, {"any": []}, {"key": "x", "any": [], "all": []}]),
)
REFERENCE_FIELDS = {"prerequisite", "inherit_benefits", "default_sub_class", "sub_class", "band_of", "score", "amount_of",
                    "value", "of", "metric"}


@st.composite
def mutate(draw, data: dict) -> tuple[dict, list[Path_]]:
    """Apply 1-3 random damages; return the data and the paths of the damaged fields."""
    data = copy.deepcopy(data)
    damaged: list[Path_] = []
    for _ in range(draw(st.integers(1, 3))):
        paths = all_paths(data)
        if not paths:
            break
        path = draw(st.sampled_from(paths))
        parent = get(data, path[:-1])
        last = path[-1]
        op = draw(st.sampled_from(["drop", "set", "set", "threshold", "expr", "reference", "cycle", "duplicate", "add_key",
                                   "rename", "shuffle_levels"]))
        if op == "drop":
            del parent[last]
        elif op == "set":
            parent[last] = draw(WEIRD)
        elif op == "threshold":
            numeric = [p for p in paths if isinstance(get(data, p), int | float) and not isinstance(get(data, p), bool)]
            if numeric:
                path = draw(st.sampled_from(numeric))
                get(data, path[:-1])[path[-1]] = draw(THRESHOLDS)
        elif op == "expr":
            values = data.get("values")
            if isinstance(values, dict) and values:
                key = draw(st.sampled_from(sorted(values, key=str)))
                names = [k for k in values if isinstance(k, str)]
                expr = draw(st.one_of(EXPRESSIONS, st.lists(st.sampled_from(names or ["x"]), min_size=1, max_size=4).map(" + ".join)))
                values[key] = draw(st.sampled_from([expr, {"expr": expr}, {"expr": expr, "label": "x"}]))
                path = ("values", key)
        elif op == "reference":
            refs = [p for p in paths if p[-1] in REFERENCE_FIELDS]
            if refs:
                path = draw(st.sampled_from(refs))
                get(data, path[:-1])[path[-1]] = draw(st.one_of(NAME, st.sampled_from(["LV9", "gold", "S", "high", ""])))
        elif op == "cycle":
            values = data.get("values")
            if isinstance(values, dict) and values:
                keys = draw(st.lists(st.sampled_from(sorted(values, key=str)), min_size=1, max_size=3, unique=True))
                for a, b in zip(keys, keys[1:] + keys[:1], strict=True):
                    values[a] = {"expr": f"{b} + 1"}
                path = ("values",)
        elif op == "duplicate":
            if isinstance(parent, list):
                parent.insert(last, copy.deepcopy(parent[last]))
            path = path[:-1]
        elif op == "add_key":
            target = get(data, path) if isinstance(get(data, path), dict) else parent
            if isinstance(target, dict):
                key = draw(st.one_of(NAME, st.sampled_from(["requires ", "Key", "levels", "op"])))
                target[key] = draw(WEIRD)
                path = (*(path if target is not parent else path[:-1]), key)
        elif op == "rename":
            if isinstance(parent, dict):
                new = draw(NAME)
                parent[new] = parent.pop(last)
                damaged.append((*path[:-1], new))
        elif op == "shuffle_levels" and isinstance(data.get("levels"), list):
            data["levels"] = draw(st.permutations(data["levels"]))
            path = ("levels",)
        damaged.append(path)
    return data, damaged


def dump(data: Any, as_json: bool) -> str:
    if as_json:
        return json.dumps(data, ensure_ascii=False, default=str)
    return yaml.safe_dump(data, allow_unicode=True, sort_keys=False)


# -- the properties -----------------------------------------------------------------------------------


def check_error(exc: DefinitionError, source: str, damaged: list[Path_] | None) -> None:
    assert isinstance(exc.errors, list) and exc.errors, "a DefinitionError without errors"
    text = str(exc)
    if source:
        assert text.startswith(f"{source}: ")
    for path, message in exc.errors:
        assert isinstance(path, str) and isinstance(message, str) and message.strip()
        assert f"{path or '(top)'}: {message}" in text
        if not path:
            assert message.startswith(WHOLE_DOCUMENT), f"an error without a path: {message!r}"
        elif message not in ("Extra inputs are not permitted", "Keys should be strings"):  # these name the key
            assert parse(path)[0] in TOP_FIELDS, f"an error path outside the program's fields: {path!r}"
    if damaged:
        near = [(p, m) for p, m in exc.errors if any(related(p, d) for d in damaged)]
        elsewhere = [(p, m) for p, m in exc.errors if (p, m) not in near]
        assert near or all(any(r in m for r in REFERENCE_MESSAGES) for _, m in elsewhere), (
            f"no error names a damaged field {[show(d) for d in damaged]}: {exc.errors}")


def check_findings(findings: list[Finding]) -> None:
    for f in findings:
        assert f.severity in ("error", "warning")
        assert isinstance(f.path, str) and f.message
        str(f)


def load_and_lint(text: str, source: str, damaged: list[Path_] | None = None) -> None:
    """The loader answers with a Program or a DefinitionError; a Program lints; lint_text never
    raises. Crashes of a known bug become events (see KNOWN_BUGS)."""
    try:
        program = load_text(text, source)
    except DefinitionError as exc:
        check_error(exc, source, damaged)
        event("rejected")
        program = None
    except Exception as exc:  # noqa: BLE001 - classified right here
        bug = known_bug(exc)
        if bug is None:
            raise
        event(f"known bug (load): {bug}")
        return
    try:
        if program is not None:
            check_findings(lint(program))
            event("loaded and linted")
        check_findings(lint_text(text, source))
    except Exception as exc:  # noqa: BLE001
        bug = known_bug(exc)
        if bug is None:
            raise
        event(f"known bug (lint): {bug}")


def test_the_builtins_load_and_lint():
    """The starting points are valid (so every failure below comes from the damage)."""
    for key, text in SOURCES.items():
        check_findings(lint(load_text(text, f"{key}.yaml")))


@FUZZ
@given(data=st.data(), key=st.sampled_from(BUILTIN_KEYS), as_json=st.booleans())
def test_fuzz_damaged_definitions_load_or_name_the_bad_field(data, key, as_json):
    mutated, damaged = data.draw(mutate(DATA[key]))
    note(f"damaged: {[show(d) for d in damaged]}")
    text = dump(mutated, as_json)
    load_and_lint(text, f"{key}.json" if as_json else f"{key}.yaml", damaged)


TEXT_BITS = [":", ": ", "-", "- ", "{", "}", "[", "]", "\t", "'", '"', "&a ", "*a", "!!python/object:os.system ",
             "!!binary ", "!!timestamp ", "\x00", "\ufeff", "%", "@", "`", "? ", "|", ">", "#", ",", "\n", "\r", "  ",
             "<<: ", "2026-02-30", "0x1F", "1e400", ".inf", ".nan", "~", "null", "yes", "no", "on", "\u2028", "\x85"]


@st.composite
def damaged_text(draw, key: str) -> str:
    text = SOURCES[key]
    for _ in range(draw(st.integers(1, 4))):
        op = draw(st.sampled_from(["insert", "insert", "delete", "truncate", "indent", "double", "bytes", "random"]))
        at = draw(st.integers(0, len(text)))
        if op == "insert":
            text = text[:at] + draw(st.sampled_from(TEXT_BITS)) + text[at:]
        elif op == "delete":
            text = text[:at] + text[at + draw(st.integers(1, 40)):]
        elif op == "truncate":
            text = text[:at]
        elif op in ("indent", "double"):
            lines = text.splitlines(keepends=True)
            if lines:
                i = draw(st.integers(0, len(lines) - 1))
                if op == "indent":
                    lines[i] = draw(st.sampled_from([" ", "  ", "\t", ""])) + lines[i].lstrip(" ")
                else:
                    lines.insert(i, lines[i])
            text = "".join(lines)
        elif op == "bytes":
            raw = draw(st.binary(min_size=1, max_size=30))
            text = text[:at] + raw.decode(draw(st.sampled_from(["latin-1", "utf-8"])), errors="replace") + text[at:]
        else:
            text = text[:at] + draw(st.text(max_size=30)) + text[at:]
    return text


@FUZZ
@given(data=st.data(), key=st.sampled_from(BUILTIN_KEYS))
def test_fuzz_damaged_yaml_text_loads_or_raises_definition_error(data, key):
    text = data.draw(damaged_text(key))
    note(repr(text))
    load_and_lint(text, f"{key}.yaml")


@FUZZ
@given(text=st.one_of(st.text(max_size=200), st.binary(max_size=200).map(lambda b: b.decode("latin-1"))),
       source=st.sampled_from(["x.yaml", "x.json", ""]))
def test_fuzz_random_text_loads_or_raises_definition_error(text, source):
    load_and_lint(text, source)


def test_load_file_of_random_bytes_raises_definition_error(tmp_path):
    from portal.engine.definition import load_file

    path = tmp_path / "bytes.yaml"
    path.write_bytes(bytes(range(256)))
    with pytest.raises(DefinitionError) as info:
        load_file(path)
    assert info.value.errors[0][0] == ""


# -- reproducers of product bugs found by the fuzzing -------------------------------------------------


def scorecard_with(**values: Any) -> str:
    data = copy.deepcopy(DATA["scorecard"])
    data["values"].update(values)
    return yaml.safe_dump(data, allow_unicode=True, sort_keys=False)


def raises_definition_error_naming(text: str, path: str, source: str = "x.yaml") -> None:
    with pytest.raises(DefinitionError) as info:
        load_text(text, source)
    assert any(p.startswith(path) for p, _ in info.value.errors), info.value.errors


@pytest.mark.parametrize("value", [{"buckets": 5}, {"buckets": [{"score": 1}]}, {"rank_buckets": None}],
                         ids=["buckets-int", "buckets-list", "rank_buckets-null"])
def test_fixed_buckets_that_are_not_a_mapping(value):
    raises_definition_error_naming(scorecard_with(odd=value), "values.odd")


@pytest.mark.parametrize("scalar", ["2026-02-30", "2026-13-01", "!!timestamp soon", "!!int abc", "!!bool maybe",
                                    "!!float ."])
def test_fixed_yaml_scalar_the_constructor_cannot_build(scalar):
    text = SOURCES["member"].replace("key: member", f"key: member\nnote_date: {scalar}", 1)
    assert text != SOURCES["member"]
    raises_definition_error_naming(text, "")


def test_fixed_cli_programs_lint_of_a_bad_date_scalar(tmp_path):
    from portal import create_app

    path = tmp_path / "bad.yaml"
    path.write_text(SOURCES["member"].replace("cadence: daily", "cadence: 2026-02-30"), encoding="utf-8")
    app = create_app({"DATABASE_URL": f"sqlite:///{tmp_path / 'p.db'}", "TESTING": True, "PORTAL_CLI": True,
                      "SECRET_KEY": "fuzz"})
    app.instance_path = str(tmp_path / "instance")
    result = app.test_cli_runner().invoke(args=["programs", "lint", str(path)], catch_exceptions=True)
    app.extensions["portal.db"].engine.dispose()
    assert isinstance(result.exception, SystemExit) and result.exit_code == 1, repr(result.exception)
    assert "error: cadence" in result.output


@pytest.mark.parametrize("source", ["x.yaml", "x.json"])
def test_fixed_integer_over_4300_digits(source):
    big = "1" * 5000
    text = f'{{"key": {big}}}' if source.endswith(".json") else f"key: {big}\n"
    raises_definition_error_naming(text, "", source)


@pytest.mark.parametrize("source", ["x.yaml", "x.json"])
def test_fixed_deeply_nested_document(source):
    raises_definition_error_naming('{"key": ' + "[" * 5000 + "]" * 5000 + "}", "", source)


@pytest.mark.parametrize("terms", [1000, 5000])
def test_fixed_long_expression(terms):
    text = scorecard_with(long_sum={"expr": " + ".join(["activity"] * terms)})
    try:
        program = load_text(text, "x.yaml")
    except DefinitionError as exc:  # a clear refusal is a fix too
        assert any(p.startswith("values.long_sum") for p, _ in exc.errors)
        return
    lint(program)


def test_fixed_expression_integer_too_big_for_a_float():
    text = scorecard_with(big={"expr": "1" + "0" * 400})
    try:
        program = load_text(text, "x.yaml")
    except DefinitionError as exc:
        assert any(p.startswith("values.big") for p, _ in exc.errors)
        return
    lint(program)


@pytest.mark.parametrize("window", ["1" + "0" * 400 + "d", "1" + "0" * 400 + "m", "1" * 5000 + "m"],
                         ids=["400-digit-days", "400-digit-months", "5000-digit-months"])
def test_fixed_months_active_with_a_huge_window(window):
    text = scorecard_with(months={"metric": "transaction", "agg": "months_active", "window": window})
    try:
        program = load_text(text, "x.yaml")
    except DefinitionError as exc:
        assert any(p.startswith("values.months") for p, _ in exc.errors)
        return
    lint(program)


@pytest.mark.parametrize("value, path", [
    ({"buckets": {"of": "amount_total", "table": [{"op": "=>", "value": 1, "score": 1}, {"score": 0}]}},
     "values.odd.buckets.table[0].op"),
    ({"rank_buckets": {"of": "amount_total", "cuts": [{"share": 2, "score": 1}]}}, "values.odd.rank_buckets.cuts[0].share"),
    ({"rank_buckets": {"cuts": [{"share": 0.5, "score": 1}]}}, "values.odd.rank_buckets.of"),
], ids=["buckets-op", "rank-share", "rank-of-missing"])
def test_fixed_bucket_error_paths_leave_out_buckets(value, path):
    with pytest.raises(DefinitionError) as info:
        load_text(scorecard_with(odd=value), "x.yaml")
    assert [p for p, _ in info.value.errors] == [path]


@pytest.mark.parametrize("table", ["buckets", "rank_buckets"])
def test_fixed_a_bad_label_of_a_bucket_value_is_named_at_the_value(table):
    """Found by the fuzz loop: the value's label is validated together with its table, and its
    error was reported inside the table (values.odd.rank_buckets.label)."""
    spec = {"of": "amount_total", "table": [{"score": 1}]} if table == "buckets" else \
        {"of": "amount_total", "cuts": [{"share": 0.5, "score": 1}]}
    with pytest.raises(DefinitionError) as info:
        load_text(scorecard_with(odd={table: spec, "label": 5}), "x.yaml")
    paths = [parse(p) for p, _ in info.value.errors]
    assert paths and all(p[:3] == ["values", "odd", "label"] for p in paths), paths


def test_known_bug_list_matches_the_reproducers():
    """Each KNOWN_BUGS entry is a crash one of the xfail tests above reproduces (so the fuzz
    loops cannot silently swallow anything else)."""
    crashes = [
        lambda: load_text(scorecard_with(odd={"buckets": 5}), "x.yaml"),
        lambda: load_text("key: 2026-02-30\n", "x.yaml"),
        lambda: load_text("key: !!timestamp soon\n", "x.yaml"),
        lambda: load_text("key: !!bool maybe\n", "x.yaml"),
        lambda: load_text("key: " + "1" * 5000, "x.yaml"),
        lambda: load_text("[" * 5000 + "]" * 5000, "x.yaml"),
        lambda: lint(load_text(scorecard_with(big={"expr": "1" + "0" * 400}), "x.yaml")),
        lambda: lint(load_text(scorecard_with(m={"metric": "transaction", "agg": "months_active",
                                                  "window": "1" + "0" * 400 + "d"}), "x.yaml")),
    ]
    seen = set()
    for crash in crashes:
        try:
            crash()
        except DefinitionError:
            continue  # fixed
        except Exception as exc:  # noqa: BLE001
            seen.add(known_bug(exc))
    assert None not in seen

