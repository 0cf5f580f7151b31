"""Program definitions: the schema, loading and validation.

A program is data (YAML or JSON): its metric catalogue, the values computed from metric rows
(aggregates over windows, expressions, bucket tables, rank buckets), its levels with their
requirements, how a level is selected, how transitions happen, and the benefits of each level.
Every error names the path of the bad field, e.g. ``levels[2].requires[0].op``.
"""

from __future__ import annotations

import functools
import hashlib
import json
import re
from collections.abc import Callable
from pathlib import Path
from typing import Annotated, Any, Literal

import yaml
from pydantic import (
    BaseModel,
    ConfigDict,
    Field,
    ValidationError,
    field_validator,
    model_validator,
)

from . import expr as expr_lang

Op = Literal[">=", ">", "<=", "<", "=", "!="]
Text = str | dict[str, str]  # a plain string, or {"zh_CN": ..., "en": ...}
KEY_RE = r"^[A-Za-z][A-Za-z0-9_+\-]*$"
WINDOW_RE = re.compile(r"^(all|\d{1,5}d|\d{1,4}m)$")  # up to 99,999 days / 9,999 months


class DefinitionError(ValueError):
    """A definition that cannot be loaded; ``errors`` lists (path, message) pairs."""

    def __init__(self, errors: list[tuple[str, str]], source: str = ""):
        self.errors = errors
        self.source = source
        where = f"{source}: " if source else ""
        super().__init__(where + "; ".join(f"{p or '(top)'}: {m}" for p, m in errors))


class Strict(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)


class MetricSpec(Strict):
    label: Text = ""
    type: Literal["event", "gauge"] = "event"
    unit: str = ""
    min: float = 0
    max: float | None = None  # known upper bound (gauges: 1 for done/not done, 100 for indices)


class AggregateSpec(Strict):
    """An aggregate of metric rows over a window."""

    metric: list[str]
    agg: Literal["count", "sum", "avg", "latest", "months_active", "max"]
    window: str = "all"
    kinds: list[str] | None = None  # count only rows of these kinds
    exclude_kinds: list[str] | None = None  # never count rows of these kinds
    label: Text = ""

    @field_validator("metric", mode="before")
    @classmethod
    def _one_or_many(cls, v: Any) -> Any:
        return [v] if isinstance(v, str) else v

    @field_validator("window")
    @classmethod
    def _window(cls, v: str) -> str:
        if not WINDOW_RE.match(v) or v in ("0d", "0m"):
            raise ValueError("window must be 'all', 'Nd' (last N days, N up to 99999) or 'Nm' "
                             "(last N calendar months, N up to 9999)")
        return v

    @model_validator(mode="after")
    def _latest_has_no_filters(self) -> AggregateSpec:
        if self.agg == "latest" and (self.kinds or self.exclude_kinds):
            raise ValueError("'latest' takes no kind filters")
        return self


class ExprSpec(Strict):
    expr: str
    label: Text = ""

    @field_validator("expr")
    @classmethod
    def _parses(cls, v: str) -> str:
        expr_lang.parse(v)
        return v


class BucketRow(Strict):
    op: Op | None = None  # None: the catch-all last row
    value: float | None = None
    score: float


class BucketSpec(Strict):
    """First row whose condition holds gives the score (a bucket table)."""

    of: str
    table: list[BucketRow] = Field(min_length=1)
    label: Text = ""

    @model_validator(mode="after")
    def _rows(self) -> BucketSpec:
        for i, row in enumerate(self.table):
            if (row.op is None) != (row.value is None):
                raise ValueError(f"table[{i}]: give both op and value, or neither (catch-all)")
        if self.table[-1].op is not None:
            raise ValueError("the last row of a bucket table must be a catch-all {score: N}")
        return self


class RankCut(Strict):
    share: float = Field(gt=0, le=1)  # p = rank / N at most this
    score: float


class RankBucketSpec(Strict):
    """Rank the enrolled population by a value (highest first, ties share the best rank),
    p = rank / N; the first cut with p <= share gives the score; a value of 0 scores 0."""

    of: str
    cuts: list[RankCut] = Field(min_length=1)
    otherwise: float = 0
    label: Text = ""


class Condition(Strict):
    value: str
    op: Op
    required: float


class Requirement(Strict):
    key: str = Field(pattern=KEY_RE)
    value: str | None = None  # the program value compared; default: same as key
    op: Op | None = None
    required: float | None = None
    label: Text = ""
    hint: Text = ""
    when: Condition | None = None  # applies only while this holds
    any: list[Requirement] | None = None  # a group met when any member is met
    all: list[Requirement] | None = None  # a group met when every member is met

    @model_validator(mode="after")
    def _shape(self) -> Requirement:
        group = self.any is not None or self.all is not None
        leaf = self.op is not None or self.required is not None
        if group and leaf:
            raise ValueError("a requirement is either a comparison (op, required) or a group (any/all)")
        if self.any is not None and self.all is not None:
            raise ValueError("a group is 'any' or 'all', not both")
        if not group and (self.op is None or self.required is None):
            raise ValueError("a comparison needs both op and required")
        if group and not (self.any or self.all):
            raise ValueError("a group needs at least one requirement")
        return self

    @property
    def value_key(self) -> str:
        return self.value or self.key

    @property
    def children(self) -> list[Requirement]:
        return list(self.any or self.all or [])


class Band(Strict):
    """A range of a value: lower bound with > or >=, optional upper bound with < or <=."""

    min: float | None = None
    min_op: Literal[">", ">="] = ">="
    max: float | None = None
    max_op: Literal["<", "<="] = "<"


class SubClass(Strict):
    key: str
    op: Op
    value: float
    label: Text = ""


class Retention(Strict):
    """Keep ``sub_class`` (once held, at the same level) while the value stays op value."""

    sub_class: str
    op: Op
    value: float


class BenefitSpec(Strict):
    key: str = Field(pattern=KEY_RE)
    mode: Literal["auto", "claim", "review"]
    tier: Literal["basic", "reward"] = "basic"
    quantity: int = Field(default=1, ge=1)
    value: float | None = None  # stated worth in yuan (a booth worth 5,000)
    value_note: str = ""  # e.g. "30,000+"
    amount_percent: float | None = None  # computed money: percent of ``amount_of``
    amount_of: str | None = None
    validity_days: int | None = Field(default=None, ge=1)  # each issued item expires after
    period_days: int | None = Field(default=None, ge=1)  # due again every N days
    schedule: Literal["on_entry", "quarterly"] = "on_entry"
    makeup: dict[str, Any] | None = None  # dispatch make-up: {benefit, per_missing, metric}
    limit: int | None = None  # at most this many per member ever (review: one showcase)
    label: Text = ""
    description: Text = ""


class LevelSpec(Strict):
    key: str = Field(pattern=KEY_RE)
    name: Text = ""
    requires: list[Requirement] = []
    reward_tasks: list[Requirement] = []
    band: Band | None = None
    sub_classes: list[SubClass] = []
    default_sub_class: str | None = None
    retention: list[Retention] = []
    category: str | None = None
    package_value: float | None = None  # stated worth of the level's benefit package (yuan)
    evidence: dict[str, Text] = {}  # per sub-class: the data a client must supply
    strategy: dict[str, Text] = {}  # per sub-class: the cooperation strategy staff follow
    review_hours: dict[str, int] = {}  # staff review deadline per sub-class
    benefits: list[BenefitSpec] = []
    inherit_benefits: str | None = None  # start from another level's benefit list


class Transitions(Strict):
    protection_days: int = Field(default=0, ge=0)  # no downgrade for N days after a promotion
    consecutive_periods: int = Field(default=1, ge=1)  # a change needs N periods in a row
    period: Literal["month", "day"] = "month"
    warn_days: int = Field(default=0, ge=0)  # warn this many days before a downgrade can happen
    reward_cycle_days: int = Field(default=90, ge=1)  # reward benefits are due once per cycle


class Program(Strict):
    key: str = Field(pattern=r"^[a-z][a-z0-9_]*$")
    name: Text
    description: Text = ""
    cadence: Literal["daily", "monthly"]
    selection: Literal["ladder", "highest_met", "bands"]
    band_of: str | None = None
    prerequisite: str | None = None  # highest_met: a level counts only if this one is met too
    rated_when: list[Requirement] = []  # unrated (level null) until these hold
    score: str | None = None  # the value shown as the member's score
    metrics: dict[str, MetricSpec]
    values: dict[str, Annotated[Any, Field()]]
    levels: list[LevelSpec] = Field(min_length=1)
    transitions: Transitions = Transitions()
    blacklist: list[Requirement] = []  # any one met => blacklisted at once
    composite: dict[str, Any] | None = None  # display-only weighted index (creator)

    # -- parsed views, filled after validation --
    @property
    def level_keys(self) -> list[str]:
        return [lv.key for lv in self.levels]

    def level(self, key: str | None) -> LevelSpec | None:
        for lv in self.levels:
            if lv.key == key:
                return lv
        return None

    def rank(self, key: str | None) -> int:
        """Position of a level, lowest first; -1 for not rated."""
        return self.level_keys.index(key) if key in self.level_keys else -1

    def value_spec(self, key: str) -> AggregateSpec | ExprSpec | BucketSpec | RankBucketSpec:
        return _VALUE_CACHE[id(self)][key]

    def derived(self, kind: str, key: str, compute: Callable[[], Any]) -> Any:
        """A fact derived from this (immutable) definition, computed once: pages explain the
        same requirements on every request."""
        cache = _DERIVED[id(self)]
        if (kind, key) not in cache:
            cache[(kind, key)] = compute()
        return cache[(kind, key)]

    def benefits_of(self, level_key: str) -> list[BenefitSpec]:
        level = self.level(level_key)
        if level is None:
            return []
        inherited = self.benefits_of(level.inherit_benefits) if level.inherit_benefits else []
        # a benefit is identified by (key, tier): LV3 has client_referral both basic and reward
        own = {(b.key, b.tier): b for b in level.benefits}
        merged = [own.pop((b.key, b.tier), b) for b in inherited]
        return merged + list(own.values())


# Parsed value specs per Program instance (pydantic models are frozen, so keep them aside),
# and facts derived from them (Program.derived). Both are set anew for each parsed instance.
_VALUE_CACHE: dict[int, dict[str, Any]] = {}
_DERIVED: dict[int, dict[tuple[str, str], Any]] = {}


def _parse_value(key: str, raw: Any) -> AggregateSpec | ExprSpec | BucketSpec | RankBucketSpec:
    if isinstance(raw, str):
        raw = {"expr": raw}
    if not isinstance(raw, dict):
        raise ValueError("a value is a mapping (aggregate, expr, buckets or rank_buckets)")
    if "metric" in raw:
        return AggregateSpec.model_validate(raw)
    if "expr" in raw:
        return ExprSpec.model_validate(raw)
    for name, spec in (("buckets", BucketSpec), ("rank_buckets", RankBucketSpec)):
        if name in raw:
            table = raw[name]
            if not isinstance(table, dict):
                raise _Located(name, f"{name} is a mapping (of, table/cuts)")
            try:
                return spec.model_validate({**table, "label": raw.get("label", "")})
            except ValidationError as exc:
                raise _Located(name, exc) from None
    raise ValueError("a value needs one of: metric (aggregate), expr, buckets, rank_buckets")


class _Located(ValueError):
    """An error inside a nested part of a value (its errors get that part in their path)."""

    def __init__(self, part: str, error: ValidationError | str):
        super().__init__(str(error))
        self.part, self.error = part, error


def _loc(loc: tuple) -> str:
    out = ""
    for part in loc:
        if isinstance(part, int):
            out += f"[{part}]"
        else:
            out += ("." if out else "") + str(part)
    return out


def parse_program(data: Any, source: str = "") -> Program:
    """Validate a definition (already parsed from YAML/JSON). Raises DefinitionError."""
    if not isinstance(data, dict):
        raise DefinitionError([("", "a program definition is a mapping at the top level")], source)
    try:
        program = Program.model_validate(data)
    except ValidationError as exc:
        errors = [(_loc(e["loc"]), e["msg"]) for e in exc.errors()]
        raise DefinitionError(errors, source) from None
    values: dict[str, Any] = {}
    errors: list[tuple[str, str]] = []
    for key, raw in program.values.items():
        try:
            values[key] = _parse_value(key, raw)
        except ValidationError as exc:
            errors += [(f"values.{key}" + ("." + _loc(e["loc"]) if e["loc"] else ""), e["msg"]) for e in exc.errors()]
        except _Located as exc:
            base = f"values.{key}.{exc.part}"
            if isinstance(exc.error, ValidationError):
                for e in exc.error.errors():
                    # The value's own label is validated with its table but sits beside it.
                    where = f"values.{key}" if e["loc"] and e["loc"][0] == "label" else base
                    errors.append((where + ("." + _loc(e["loc"]) if e["loc"] else ""), e["msg"]))
            else:
                errors.append((base, exc.error))
        except (ValueError, expr_lang.ExprError) as exc:
            errors.append((f"values.{key}", str(exc)))
    if errors:
        raise DefinitionError(errors, source)
    _VALUE_CACHE[id(program)] = values
    _DERIVED[id(program)] = {}
    errors = check_references(program)
    if errors:
        raise DefinitionError(errors, source)
    return program


def check_references(program: Program) -> list[tuple[str, str]]:
    """Names that must resolve: metrics, values, levels, sub-classes; and value cycles."""
    errors: list[tuple[str, str]] = []
    values = _VALUE_CACHE[id(program)]
    known_values = set(values)

    for key, spec in values.items():
        if isinstance(spec, AggregateSpec):
            for m in spec.metric:
                if m not in program.metrics:
                    errors.append((f"values.{key}.metric", f"unknown metric '{m}'"))
        else:
            for name in dependencies(spec):
                if name not in known_values:
                    errors.append((f"values.{key}", f"unknown value '{name}'"))
    errors += [(f"values.{k}", m) for k, m in _cycles(values)]

    def check_reqs(reqs: list[Requirement], path: str) -> None:
        for i, r in enumerate(reqs):
            p = f"{path}[{i}]"
            if r.children:
                check_reqs(r.children, p + (".any" if r.any is not None else ".all"))
            elif r.value_key not in known_values:
                errors.append((p, f"unknown value '{r.value_key}'"))
            if r.when and r.when.value not in known_values:
                errors.append((p + ".when.value", f"unknown value '{r.when.value}'"))

    seen: set[str] = set()
    for i, level in enumerate(program.levels):
        if level.key in seen:
            errors.append((f"levels[{i}].key", f"duplicate level '{level.key}'"))
        seen.add(level.key)
        check_reqs(level.requires, f"levels[{i}].requires")
        check_reqs(level.reward_tasks, f"levels[{i}].reward_tasks")
        if level.inherit_benefits and level.inherit_benefits not in program.level_keys[:i]:
            errors.append((f"levels[{i}].inherit_benefits", f"'{level.inherit_benefits}' is not a lower level"))
        if program.selection == "bands" and level.band is None:
            errors.append((f"levels[{i}].band", "a 'bands' program needs a band on every level"))
        subs = {s.key for s in level.sub_classes} | ({level.default_sub_class} if level.default_sub_class else set())
        for j, r in enumerate(level.retention):
            if r.sub_class not in subs:
                errors.append((f"levels[{i}].retention[{j}].sub_class", f"unknown sub-class '{r.sub_class}'"))
        for j, b in enumerate(level.benefits):
            if b.amount_of and b.amount_of not in known_values:
                errors.append((f"levels[{i}].benefits[{j}].amount_of", f"unknown value '{b.amount_of}'"))
    check_reqs(program.rated_when, "rated_when")
    check_reqs(program.blacklist, "blacklist")
    if program.selection == "bands" and program.band_of not in known_values:
        errors.append(("band_of", "a 'bands' program names the value its bands are on (band_of)"))
    if program.prerequisite and program.prerequisite not in program.level_keys:
        errors.append(("prerequisite", f"unknown level '{program.prerequisite}'"))
    if program.score and program.score not in known_values:
        errors.append(("score", f"unknown value '{program.score}'"))
    return errors


@functools.lru_cache(maxsize=4096)
def _expr_names(text: str) -> frozenset[str]:
    return frozenset(expr_lang.names(expr_lang.parse(text)))


def dependencies(spec: Any) -> set[str]:
    if isinstance(spec, ExprSpec):
        return set(_expr_names(spec.expr))
    if isinstance(spec, BucketSpec | RankBucketSpec):
        return {spec.of}
    return set()


def _cycles(values: dict[str, Any]) -> list[tuple[str, str]]:
    state: dict[str, int] = {}
    found: list[tuple[str, str]] = []

    def visit(k: str, trail: list[str]) -> None:
        if state.get(k) == 2 or k not in values:
            return
        if state.get(k) == 1:
            found.append((k, "values depend on each other: " + " -> ".join(trail + [k])))
            return
        state[k] = 1
        for dep in dependencies(values[k]):
            visit(dep, trail + [k])
        state[k] = 2

    for k in values:
        visit(k, [])
    return found


def value_order(program: Program) -> list[str]:
    """Value keys in dependency order (aggregates first)."""
    values = _VALUE_CACHE[id(program)]
    order: list[str] = []
    done: set[str] = set()

    def visit(k: str) -> None:
        if k in done:
            return
        done.add(k)
        for dep in sorted(dependencies(values[k])):
            visit(dep)
        order.append(k)

    for k in values:
        visit(k)
    return order


class _Loader(getattr(yaml, "CSafeLoader", yaml.SafeLoader)):  # libyaml: 7x faster than pure Python
    """Safe YAML without implicit timestamps: a date-looking scalar stays text, so a bad one is
    reported at its field (pydantic parses the date fields that want dates)."""


_Loader.yaml_implicit_resolvers = {
    first: [(tag, regexp) for tag, regexp in resolvers if tag != "tag:yaml.org,2002:timestamp"]
    for first, resolvers in yaml.SafeLoader.yaml_implicit_resolvers.items()
}


def load_text(text: str, source: str = "") -> Program:
    try:
        # bandit B506: a SafeLoader subclass
        data = json.loads(text) if source.endswith(".json") else yaml.load(text, Loader=_Loader)  # noqa: S506  # nosec B506
    except (yaml.YAMLError, json.JSONDecodeError) as exc:
        raise DefinitionError([("", f"not valid YAML/JSON: {exc}")], source) from None
    except RecursionError:
        raise DefinitionError([("", "the document nests too deeply")], source) from None
    except (ValueError, TypeError, KeyError, AttributeError, OverflowError) as exc:
        # YAML scalars its constructor cannot build (2026-02-30, !!int abc, a 5,000-digit number)
        raise DefinitionError([("", f"not valid YAML/JSON: a value cannot be read ({exc})")], source) from None
    try:
        return parse_program(data, source)
    except RecursionError:
        raise DefinitionError([("", "the document nests too deeply")], source) from None


def load_file(path: str | Path) -> Program:
    path = Path(path)
    try:
        text = path.read_text(encoding="utf-8")
    except (OSError, UnicodeDecodeError) as exc:
        raise DefinitionError([("", f"cannot read file: {exc}")], str(path)) from None
    return load_text(text, str(path))


def checksum(text: str) -> str:
    return hashlib.sha256(text.encode("utf-8")).hexdigest()


BUILTIN_DIR = Path(__file__).resolve().parent.parent / "programs"
BUILTIN_KEYS = ("creator", "member", "scorecard", "music")


def builtin_path(key: str) -> Path:
    return BUILTIN_DIR / f"{key}.yaml"


def text_of(value: Text, locale: str = "zh_CN") -> str:
    if isinstance(value, dict):
        return value.get(locale) or value.get("en") or next(iter(value.values()), "")
    return value
