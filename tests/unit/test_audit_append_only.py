"""The audit log is append-only: no code path updates or deletes its rows."""

from __future__ import annotations

import ast
from pathlib import Path

import portal

PACKAGE = Path(portal.__file__).resolve().parent


def _mentions_audit(node: ast.AST) -> bool:
    return any(isinstance(n, ast.Name | ast.Attribute) and (getattr(n, "id", None) or getattr(n, "attr", None))
               in ("AuditEntry", "audit_log") for n in ast.walk(node)) or any(
        isinstance(n, ast.Constant) and n.value == "audit_log" for n in ast.walk(node))


def test_no_update_or_delete_of_audit_entries_anywhere_in_the_package():
    offenders = []
    for path in PACKAGE.rglob("*.py"):
        tree = ast.parse(path.read_text(encoding="utf-8"))
        for node in ast.walk(tree):
            if not (isinstance(node, ast.Call) and node.args):
                continue
            if isinstance(node.func, ast.Name) and node.func.id in ("update", "delete") and _mentions_audit(node.args[0]):
                offenders.append(f"{path.name}:{node.lineno} {node.func.id}()")
            first = node.args[0]
            if isinstance(node.func, ast.Attribute) and node.func.attr == "delete" and isinstance(first, ast.Name) \
                    and "audit" in first.id.lower():
                offenders.append(f"{path.name}:{node.lineno} session.delete()")
        text = path.read_text(encoding="utf-8").lower()
        for phrase in ("update audit_log", "delete from audit_log"):
            if phrase in text:
                offenders.append(f"{path.name}: raw SQL '{phrase}'")
    assert offenders == []


def test_the_check_would_catch_an_update():
    tree = ast.parse("update(AuditEntry).values(reason='x')")
    call = next(n for n in ast.walk(tree) if isinstance(n, ast.Call) and getattr(n.func, "id", "") == "update")
    assert _mentions_audit(call.args[0])
