"""A tiny, safe arithmetic language for derived values in program definitions.

``min(50, 10 * consultations_365d) + min(50, 5 * transactions_365d)`` - names are other values
of the program; numbers; + - * /; min, max, round, abs. Division by zero gives 0 (a ratio of
nothing is no signal). Expressions compile once into closures, and can report the range of
values they can take (used by the linter to find unreachable levels).
"""

from __future__ import annotations

import ast
import math
from collections.abc import Callable, Mapping

Env = Mapping[str, float]
Interval = tuple[float, float]

FUNCTIONS = {"min", "max", "round", "abs"}


class ExprError(ValueError):
    pass


MAX_EXPR_CHARS = 2_000  # far beyond any real formula; keeps parsing and recursion bounded
MAX_CONSTANT = 1e15


def parse(text: str) -> ast.Expression:
    text = str(text)
    if len(text) > MAX_EXPR_CHARS:
        raise ExprError(f"an expression may have at most {MAX_EXPR_CHARS} characters (this one has {len(text)})")
    try:
        tree = ast.parse(text, mode="eval")
    except (SyntaxError, RecursionError, MemoryError, ValueError) as exc:
        raise ExprError(f"not a valid expression: {text[:80]!r} ({getattr(exc, 'msg', type(exc).__name__)})") from None
    if _depth(tree.body) > 100:
        raise ExprError(f"an expression may nest at most 100 operations deep: {text[:80]!r}")
    for node in ast.walk(tree):
        if isinstance(node, ast.Call):
            if not isinstance(node.func, ast.Name) or node.func.id not in FUNCTIONS:
                raise ExprError(f"only {', '.join(sorted(FUNCTIONS))} may be called in {text!r}")
            if node.keywords or not node.args:
                raise ExprError(f"bad call in {text!r}")
        elif isinstance(node, ast.Constant):
            if isinstance(node.value, bool) or not isinstance(node.value, int | float):
                raise ExprError(f"only numbers are allowed as constants in {text!r}")
            if not abs(node.value) <= MAX_CONSTANT:  # also refuses inf/nan written as huge literals
                raise ExprError(f"a constant may be at most {MAX_CONSTANT:g} in {text[:80]!r}")
        elif not isinstance(
            node,
            ast.Expression | ast.BinOp | ast.UnaryOp | ast.Name | ast.Load | ast.Add | ast.Sub
            | ast.Mult | ast.Div | ast.USub | ast.UAdd,
        ):
            raise ExprError(f"{type(node).__name__} is not allowed in {text!r}")
    return tree


def _depth(node: ast.AST) -> int:
    """Nesting depth without recursion (a long a + b + c ... is a deep left-leaning tree)."""
    deepest, stack = 0, [(node, 1)]
    while stack:
        current, level = stack.pop()
        deepest = max(deepest, level)
        stack.extend((child, level + 1) for child in ast.iter_child_nodes(current))
    return deepest


def names(tree: ast.Expression) -> set[str]:
    return {
        n.id
        for n in ast.walk(tree)
        if isinstance(n, ast.Name) and not _is_func_name(tree, n)
    }


def _is_func_name(tree: ast.Expression, name: ast.Name) -> bool:
    return any(isinstance(c, ast.Call) and c.func is name for c in ast.walk(tree))


def compile_expr(tree: ast.Expression) -> Callable[[Env], float]:
    return _compile(tree.body)


def _div(a: float, b: float) -> float:
    return a / b if b else 0.0


def _compile(node: ast.AST) -> Callable[[Env], float]:
    if isinstance(node, ast.Constant):
        v = float(node.value)
        return lambda env: v
    if isinstance(node, ast.Name):
        key = node.id
        return lambda env: env[key]
    if isinstance(node, ast.UnaryOp):
        inner = _compile(node.operand)
        if isinstance(node.op, ast.USub):
            return lambda env: -inner(env)
        return inner
    if isinstance(node, ast.BinOp):
        left, right = _compile(node.left), _compile(node.right)
        op = node.op
        if isinstance(op, ast.Add):
            return lambda env: left(env) + right(env)
        if isinstance(op, ast.Sub):
            return lambda env: left(env) - right(env)
        if isinstance(op, ast.Mult):
            return lambda env: left(env) * right(env)
        return lambda env: _div(left(env), right(env))
    if isinstance(node, ast.Call):
        args = [_compile(a) for a in node.args]
        fn = node.func.id  # type: ignore[attr-defined]
        if fn == "min":
            return lambda env: min(a(env) for a in args)
        if fn == "max":
            return lambda env: max(a(env) for a in args)
        if fn == "abs":
            return lambda env: abs(args[0](env))
        digits = args[1] if len(args) > 1 else (lambda env: 0.0)
        return lambda env: round(args[0](env), int(digits(env)))
    raise ExprError(f"unsupported node {type(node).__name__}")  # pragma: no cover


def interval(tree: ast.Expression, ranges: Mapping[str, Interval]) -> Interval:
    """The range of values the expression can take, given the ranges of its names."""
    return _interval(tree.body, ranges)


def _interval(node: ast.AST, ranges: Mapping[str, Interval]) -> Interval:
    if isinstance(node, ast.Constant):
        return (float(node.value), float(node.value))
    if isinstance(node, ast.Name):
        return ranges.get(node.id, (-math.inf, math.inf))
    if isinstance(node, ast.UnaryOp):
        lo, hi = _interval(node.operand, ranges)
        return (-hi, -lo) if isinstance(node.op, ast.USub) else (lo, hi)
    if isinstance(node, ast.BinOp):
        a, b = _interval(node.left, ranges), _interval(node.right, ranges)
        if isinstance(node.op, ast.Add):
            return (a[0] + b[0], a[1] + b[1])
        if isinstance(node.op, ast.Sub):
            return (a[0] - b[1], a[1] - b[0])
        if isinstance(node.op, ast.Mult):
            products = [_mul(x, y) for x in a for y in b]
            return (min(products), max(products))
        if b[0] > 0 or b[1] < 0:  # divisor never zero
            quotients = [_div_inf(x, y) for x in a for y in b]
            return (min(quotients + [0.0]) if 0 in b else min(quotients), max(quotients))
        return (-math.inf, math.inf) if (a[0] < 0 or a[1] > 0) else (0.0, 0.0)
    if isinstance(node, ast.Call):
        parts = [_interval(arg, ranges) for arg in node.args]
        fn = node.func.id  # type: ignore[attr-defined]
        if fn == "min":
            return (min(p[0] for p in parts), min(p[1] for p in parts))
        if fn == "max":
            return (max(p[0] for p in parts), max(p[1] for p in parts))
        if fn == "abs":
            lo, hi = parts[0]
            if lo >= 0:
                return (lo, hi)
            if hi <= 0:
                return (-hi, -lo)
            return (0.0, max(-lo, hi))
        return parts[0]
    return (-math.inf, math.inf)  # pragma: no cover


def _mul(x: float, y: float) -> float:
    if x == 0 or y == 0:
        return 0.0
    return x * y


def _div_inf(x: float, y: float) -> float:
    if math.isinf(y):
        return 0.0 if not math.isinf(x) else math.copysign(math.inf, x * y)
    return x / y
