"""Program definitions (schema, references) and the program linter. Pure: no database."""

from __future__ import annotations

import pytest
import yaml

from portal.engine.definition import (
    BUILTIN_KEYS,
    DefinitionError,
    builtin_path,
    load_file,
    load_text,
)
from portal.engine.lint import Finding, lint, lint_text

# A small valid bands program: `low` below 10 points, `high` from 10.
BASE = """
key: tiny
name: Tiny
cadence: monthly
selection: bands
band_of: pts
metrics:
  points: {type: gauge}
values:
  pts: {metric: points, agg: latest}
levels:
  - key: low
    band: {max: 10, max_op: "<"}
    benefits: [{key: b_low, mode: auto}]
  - key: high
    band: {min: 10, min_op: ">="}
    benefits: [{key: b_high, mode: claim}]
"""


def tiny(**changes) -> str:
    """BASE with top-level keys replaced (given as Python data)."""
    data = yaml.safe_load(BASE)
    data.update(changes)
    return yaml.safe_dump(data)


def level(key: str, band: dict, **extra) -> dict:
    return {"key": key, "band": band, "benefits": [{"key": f"b_{key}", "mode": "auto"}], **extra}


def errors_of(text: str) -> list[tuple[str, str]]:
    with pytest.raises(DefinitionError) as info:
        load_text(text, "test.yaml")
    return info.value.errors


def paths(text: str) -> list[str]:
    return [p for p, _ in errors_of(text)]


def severities(findings: list[Finding]) -> list[tuple[str, str]]:
    return sorted((f.severity, f.path) for f in findings)


# -- built-ins ------------------------------------------------------------------------------


@pytest.mark.parametrize("key", BUILTIN_KEYS)
def test_builtins_load_and_lint_without_errors(key):
    assert set(BUILTIN_KEYS) == {"creator", "member", "scorecard", "music"}
    program = load_file(builtin_path(key))
    assert program.key == key
    assert [f for f in lint(program) if f.severity == "error"] == []
    # lint_text of the same file agrees with lint of the loaded program
    assert lint_text(builtin_path(key).read_text(encoding="utf-8"), str(builtin_path(key))) == lint(program)


def test_scorecard_lint_reports_s_and_a_unreachable_composite_max_72():
    findings = lint(load_file(builtin_path("scorecard")))
    assert severities(findings) == [("warning", "levels[3] (A)"), ("warning", "levels[4] (S)")]
    for f in findings:
        assert "unreachable" in f.message
        assert "72" in f.message  # the composite's real maximum
        assert "composite" in f.message
    a, s = sorted(findings, key=lambda f: f.path)
    assert "level A" in a.message and "75" in a.message
    assert "level S" in s.message and "90" in s.message


def test_a_corrected_scorecard_lints_clean():
    """Staff can publish a corrected version: scaled to 0-100, S and A become reachable."""
    data = yaml.safe_load(builtin_path("scorecard").read_text(encoding="utf-8"))
    data["values"]["composite"]["expr"] = (
        "round((0.3 * activity + 0.5 * contribution + 0.2 * value_score) * 100 / 72, 2)"
    )
    assert lint(load_text(yaml.safe_dump(data, allow_unicode=True))) == []


def test_a_lower_activity_cap_makes_b_unreachable_too():
    """The linter computes the range: capping activity lower makes B unreachable too."""
    data = yaml.safe_load(builtin_path("scorecard").read_text(encoding="utf-8"))
    # activity at most 50 instead of 100: composite at most 72 - 15 = 57
    data["values"]["activity"]["expr"] = "min(25, 10 * consultations_365d) + min(25, 5 * transactions_365d)"
    findings = lint(load_text(yaml.safe_dump(data, allow_unicode=True)))
    assert severities(findings) == [
        ("warning", "levels[2] (B)"), ("warning", "levels[3] (A)"), ("warning", "levels[4] (S)"),
    ]
    assert all("57" in f.message for f in findings)


def test_music_lint_reports_the_b_sub_class_gap_and_c_without_benefits():
    findings = lint(load_file(builtin_path("music")))
    assert severities(findings) == [("warning", "levels[0] (C)"), ("warning", "levels[1] (B).sub_classes")]
    gap = next(f for f in findings if f.path == "levels[1] (B).sub_classes")
    assert "[30,000,000, 80,000,000)" in gap.message
    assert "standard" in gap.message
    benefits = next(f for f in findings if f.path == "levels[0] (C)")
    assert "no benefits" in benefits.message


def test_creator_and_member_lint_clean():
    assert lint(load_file(builtin_path("creator"))) == []
    assert lint(load_file(builtin_path("member"))) == []


# -- lint: bands, sub-classes, benefits, metrics ------------------------------------------


def test_base_definition_lints_clean():
    assert lint_text(BASE) == []


def test_overlapping_level_bands_are_an_error():
    text = tiny(levels=[level("low", {"max": 10, "max_op": "<="}), level("high", {"min": 10, "min_op": ">="})])
    findings = lint_text(text)
    assert severities(findings) == [("error", "levels")]
    assert "overlap" in findings[0].message and "low" in findings[0].message and "high" in findings[0].message
    assert "[10, 10]" in findings[0].message


def test_nested_bands_overlap():
    text = tiny(levels=[
        level("low", {"max": 10}),
        level("mid", {"min": 10, "max": 20}),
        level("high", {"min": 15}),
    ])
    findings = lint_text(text)
    assert severities(findings) == [("error", "levels")]
    assert "mid and high overlap on [15, 20)" in findings[0].message


def test_a_band_gap_is_an_error():
    text = tiny(levels=[level("low", {"max": 10}), level("high", {"min": 12})])
    findings = lint_text(text)
    assert severities(findings) == [("error", "levels")]
    assert "no level's band covers pts in [10, 12)" in findings[0].message


def test_a_single_point_gap_is_an_error():
    # low: < 10, high: > 10 -> exactly 10 is covered by nobody
    text = tiny(levels=[level("low", {"max": 10, "max_op": "<"}), level("high", {"min": 10, "min_op": ">"})])
    findings = lint_text(text)
    assert severities(findings) == [("error", "levels")]
    assert "[10, 10]" in findings[0].message


def test_bands_need_to_cover_only_the_values_range():
    # a gauge at most 100: a top band ending at 100 inclusive leaves no gap
    text = tiny(
        metrics={"points": {"type": "gauge", "max": 100}},
        levels=[level("low", {"min": 0, "max": 10}), level("high", {"min": 10, "max": 100, "max_op": "<="})],
    )
    assert lint_text(text) == []
    text = tiny(
        metrics={"points": {"type": "gauge", "max": 100}},
        levels=[level("low", {"min": 0, "max": 10}), level("high", {"min": 10, "max": 100, "max_op": "<"})],
    )
    assert [f.message for f in lint_text(text)] == ["no level's band covers pts in [100, 100]"]


def test_a_band_outside_the_values_range_is_unreachable():
    text = tiny(
        metrics={"points": {"type": "gauge", "max": 100}},
        levels=[level("low", {"min": 0, "max": 100, "max_op": "<="}), level("high", {"min": 100, "min_op": ">"})],
    )
    findings = lint_text(text)
    assert severities(findings) == [("warning", "levels[1] (high)")]
    assert "unreachable" in findings[0].message


def test_sub_class_gap_without_a_default_is_an_error():
    text = tiny(levels=[
        level("low", {"max": 10}),
        level("high", {"min": 10}, sub_classes=[
            {"key": "top", "op": ">=", "value": 50}, {"key": "bottom", "op": "<", "value": 20},
        ]),
    ])
    findings = lint_text(text)
    assert severities(findings) == [("error", "levels[1] (high).sub_classes")]
    assert "[20, 50)" in findings[0].message and "no default" in findings[0].message


def test_one_sub_class_plus_a_default_is_not_a_gap():
    text = tiny(levels=[
        level("low", {"max": 10}),
        level("high", {"min": 10}, sub_classes=[{"key": "top", "op": ">=", "value": 50}], default_sub_class="rest"),
    ])
    assert lint_text(text) == []


def test_a_level_without_benefits_and_an_unused_metric_are_warnings():
    data = yaml.safe_load(BASE)
    data["levels"][1]["benefits"] = []
    data["metrics"]["spare"] = {"type": "event"}
    findings = lint_text(yaml.safe_dump(data))
    assert severities(findings) == [("warning", "levels[1] (high)"), ("warning", "metrics.spare")]


def test_ladder_levels_above_an_unreachable_one_are_unreachable():
    text = tiny(
        selection="ladder",
        metrics={"points": {"type": "gauge", "max": 100}},
        levels=[
            {"key": "one", "requires": [{"key": "pts", "op": ">=", "required": 10}], "benefits": [{"key": "x", "mode": "auto"}]},
            {"key": "two", "requires": [{"key": "pts", "op": ">", "required": 100}], "benefits": [{"key": "y", "mode": "auto"}]},
            {"key": "three", "requires": [{"key": "pts", "op": ">=", "required": 50}], "benefits": [{"key": "z", "mode": "auto"}]},
        ],
    )
    findings = lint_text(text)
    assert severities(findings) == [("warning", "levels[1] (two)"), ("warning", "levels[2] (three)")]
    assert "pts > 100 can never hold" in findings[0].message
    assert "the ladder stops at two" in findings[1].message


# -- lint exit semantics ----------------------------------------------------------------------


def test_lint_text_turns_load_errors_into_error_findings():
    findings = lint_text(BASE.replace("metric: points", "metric: nope"), "bad.yaml")
    assert findings == [Finding("error", "values.pts.metric", "unknown metric 'nope'")]
    assert str(findings[0]) == "error: values.pts.metric: unknown metric 'nope'"


@pytest.fixture
def lint_cli(tmp_path):
    from portal import create_app

    app = create_app({
        "PORTAL_CLI": True, "TESTING": True, "SECRET_KEY": "test",
        "DATABASE_URL": f"sqlite:///{tmp_path / 'unused.db'}",
    })
    app.instance_path = str(tmp_path / "instance")
    runner = app.test_cli_runner()

    def run(text: str):
        path = tmp_path / "def.yaml"
        path.write_text(text, encoding="utf-8")
        return runner.invoke(args=["programs", "lint", str(path)])

    yield run
    app.extensions["portal.db"].engine.dispose()


def test_lint_command_exits_0_with_warnings_only(lint_cli):
    result = lint_cli(builtin_path("scorecard").read_text(encoding="utf-8"))
    assert result.exit_code == 0, result.output
    assert "0 errors, 2 warnings" in result.output
    assert "level S is unreachable" in result.output


def test_lint_command_exits_0_when_clean(lint_cli):
    result = lint_cli(BASE)
    assert result.exit_code == 0, result.output
    assert "0 errors, 0 warnings" in result.output


def test_lint_command_exits_1_on_errors(lint_cli):
    overlap = tiny(levels=[level("low", {"max": 10, "max_op": "<="}), level("high", {"min": 10})])
    result = lint_cli(overlap)
    assert result.exit_code == 1
    assert "1 error, 0 warnings" in result.output


def test_lint_command_exits_1_on_a_definition_that_does_not_load(lint_cli):
    result = lint_cli(BASE.replace("agg: latest", "agg: latest, window: 3w"))
    assert result.exit_code == 1
    assert "error: values.pts.window" in result.output


# -- definition errors name the field's path -------------------------------------------------


def test_base_loads():
    program = load_text(BASE)
    assert program.key == "tiny"
    assert program.level_keys == ["low", "high"]


def test_unknown_metric_names_the_path():
    errors = errors_of(BASE.replace("metric: points", "metric: nope"))
    assert errors == [("values.pts.metric", "unknown metric 'nope'")]


def test_unknown_metric_in_a_list_of_metrics():
    errors = errors_of(BASE.replace("metric: points", "metric: [points, ghost]"))
    assert errors == [("values.pts.metric", "unknown metric 'ghost'")]


@pytest.mark.parametrize(
    ("old", "new", "path"),
    [
        # bad operators
        ('max_op: "<"', 'max_op: ">"', "levels[0].band.max_op"),
        ('min_op: ">="', 'min_op: "=>"', "levels[1].band.min_op"),
        ("- key: high\n", "- key: high\n    requires: [{key: pts, op: '=>', required: 1}]\n", "levels[1].requires[0].op"),
        # missing fields
        ("cadence: monthly\n", "", "cadence"),
        ("name: Tiny\n", "", "name"),
        ("key: tiny\n", "", "key"),
        ("- key: high\n", "- key: high\n    requires: [{key: pts, op: '>='}]\n", "levels[1].requires[0]"),
        ("- key: high\n", "- key: high\n    requires: [{key: pts, required: 3}]\n", "levels[1].requires[0]"),
        ("mode: claim", "tier: basic", "levels[1].benefits[0].mode"),
        # bad windows and aggregates
        ("agg: latest}", "agg: sum, window: 3w}", "values.pts.window"),
        ("agg: latest}", "agg: sum, window: 0d}", "values.pts.window"),
        ("agg: latest}", "agg: sum, window: last30d}", "values.pts.window"),
        ("agg: latest", "agg: median", "values.pts.agg"),
        # other bad values
        ("cadence: monthly", "cadence: weekly", "cadence"),
        ("selection: bands", "selection: best", "selection"),
        ("key: tiny", "key: Tiny Program", "key"),
        ("type: gauge", "type: counter", "metrics.points.type"),
        ("mode: claim", "mode: mail", "levels[1].benefits[0].mode"),
        ("band: {max: 10", "colour: red\n    band: {max: 10", "levels[0].colour"),
        ("band_of: pts", "band_of: nothing", "band_of"),
    ],
)
def test_definition_errors_name_the_field(old, new, path):
    assert old in BASE
    assert path in paths(BASE.replace(old, new, 1))


def test_a_cycle_between_expression_values_is_an_error():
    text = BASE.replace("values:\n", "values:\n  a: {expr: 'b + 1'}\n  b: {expr: 'min(c, 2)'}\n  c: {expr: 'a * 2'}\n")
    errors = errors_of(text)
    assert len(errors) == 1
    path, message = errors[0]
    assert path in ("values.a", "values.b", "values.c")
    assert "depend on each other" in message
    assert "a -> b -> c -> a" in message


def test_a_value_depending_on_itself_is_a_cycle():
    errors = errors_of(BASE.replace("values:\n", "values:\n  a: {expr: 'a + 1'}\n"))
    assert errors == [("values.a", "values depend on each other: a -> a")]


def test_a_cycle_through_buckets_is_an_error():
    text = BASE.replace(
        "values:\n",
        "values:\n  a: {expr: 'b + 1'}\n  b: {buckets: {of: a, table: [{op: '<', value: 1, score: 1}, {score: 2}]}}\n",
    )
    assert [p for p, m in errors_of(text) if "depend on each other" in m]


def test_unknown_value_in_a_requirement_names_the_requirement():
    text = BASE.replace("- key: high\n", "- key: high\n    requires: [{key: pts, op: '>=', required: 1}, {key: ghost, op: '>=', required: 1}]\n")
    assert errors_of(text) == [("levels[1].requires[1]", "unknown value 'ghost'")]


def test_unknown_value_named_by_value_field():
    text = BASE.replace("- key: high\n", "- key: high\n    requires: [{key: shown, value: ghost, op: '>=', required: 1}]\n")
    assert errors_of(text) == [("levels[1].requires[0]", "unknown value 'ghost'")]


def test_unknown_value_inside_a_group_and_a_blacklist():
    text = BASE.replace(
        "- key: high\n",
        "- key: high\n    requires: [{key: g, any: [{key: pts, op: '>=', required: 1}, {key: ghost, op: '>', required: 0}]}]\n",
    ) + "blacklist: [{key: phantom, op: '>', required: 0}]\n"
    assert set(errors_of(text)) == {
        ("levels[1].requires[0].any[1]", "unknown value 'ghost'"),
        ("blacklist[0]", "unknown value 'phantom'"),
    }


def test_unknown_value_in_an_expression_or_bucket():
    text = BASE.replace(
        "values:\n",
        "values:\n  a: {expr: 'zz + 1'}\n  b: {buckets: {of: yy, table: [{score: 1}]}}\n",
    )
    assert set(errors_of(text)) == {("values.a", "unknown value 'zz'"), ("values.b", "unknown value 'yy'")}


def test_unsafe_expressions_are_rejected():
    for expr in ("__import__('os')", "pts ** 2", "pts if pts else 1", "'text'", "pts.real"):
        text = BASE.replace("values:\n", f'values:\n  a: {{expr: "{expr}"}}\n')
        assert [p for p in paths(text) if p.startswith("values.a")], expr


def test_bucket_table_needs_a_catch_all_last_row():
    text = BASE.replace("values:\n", "values:\n  b: {buckets: {of: pts, table: [{op: '<', value: 1, score: 1}]}}\n")
    assert any(p.startswith("values.b") for p in paths(text))


def test_rank_cut_share_must_be_a_fraction():
    text = BASE.replace("values:\n", "values:\n  r: {rank_buckets: {of: pts, cuts: [{share: 1.5, score: 1}]}}\n")
    assert "values.r.rank_buckets.cuts[0].share" in paths(text)


def test_duplicate_level_keys_are_an_error():
    text = tiny(levels=[level("low", {"max": 10}), level("low", {"min": 10})])
    assert ("levels[1].key", "duplicate level 'low'") in errors_of(text)


def test_bands_program_needs_a_band_on_every_level():
    text = tiny(levels=[level("low", {"max": 10}), {"key": "high", "benefits": [{"key": "x", "mode": "auto"}]}])
    assert "levels[1].band" in paths(text)


def test_retention_of_an_unknown_sub_class():
    text = tiny(levels=[
        level("low", {"max": 10}),
        level("high", {"min": 10}, sub_classes=[{"key": "top", "op": ">=", "value": 50}],
              default_sub_class="rest", retention=[{"sub_class": "gold", "op": ">=", "value": 30}]),
    ])
    assert "levels[1].retention[0].sub_class" in paths(text)


def test_not_yaml_at_all():
    errors = errors_of("key: [unclosed")
    assert errors[0][0] == ""
    assert "not valid YAML" in errors[0][1]


def test_every_error_is_reported_with_its_source():
    text = BASE.replace("metric: points", "metric: nope").replace("band_of: pts", "band_of: nothing")
    with pytest.raises(DefinitionError) as info:
        load_text(text, "custom.yaml")
    assert {p for p, _ in info.value.errors} == {"values.pts.metric", "band_of"}
    assert str(info.value).startswith("custom.yaml: ")
    assert "values.pts.metric" in str(info.value)


def test_derived_facts_belong_to_their_own_definition():
    """metric_of / window_of are computed once per parsed definition; a definition parsed
    later (even into the memory of a discarded one) explains with its own metrics."""
    import gc

    from portal.engine.rules import metric_of, window_of

    for i in range(20):
        metric = f"m{i}"
        text = BASE.replace("points", metric).replace("pts: {metric: " + metric + ", agg: latest}",
                                                     "raw: {metric: " + metric + ", agg: sum, window: " + f"{i + 1}d" + "}\n"
                                                     "  pts: 'raw * 2'")
        program = load_text(text, "x.yaml")
        assert (metric_of(program, "pts"), window_of(program, "pts")) == (metric, f"{i + 1}d")
        assert metric_of(program, "pts") == metric  # from the cache
        del program
        gc.collect()
