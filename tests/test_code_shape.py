"""The shape of the code a newcomer reads: no module over 400 lines, and no function over 60 lines of code (its
docstring aside) unless its docstring says why, in a sentence that starts with "Long:"."""
from __future__ import annotations

import ast
from pathlib import Path

import pytest

PACKAGE = Path(__file__).resolve().parents[1] / "oba"
MODULE_LINES = 400
FUNCTION_LINES = 60


def sources() -> list[Path]:
    return sorted(p for p in PACKAGE.rglob("*.py") if "__pycache__" not in p.parts)


def code_lines(function: ast.FunctionDef | ast.AsyncFunctionDef) -> int:
    """Lines from ``def`` to the end, less the docstring's."""
    total = function.end_lineno - function.lineno + 1
    first = function.body[0]
    if isinstance(first, ast.Expr) and isinstance(first.value, ast.Constant) and isinstance(first.value.value, str):
        total -= first.end_lineno - first.lineno + 1
    return total


def long_functions(source: str) -> list[tuple[str, int]]:
    """``(name, code lines)`` of each function over the limit whose docstring gives no reason."""
    return [(node.name, code_lines(node)) for node in ast.walk(ast.parse(source))
            if isinstance(node, (ast.FunctionDef, ast.AsyncFunctionDef)) and code_lines(node) > FUNCTION_LINES
            and "Long:" not in (ast.get_docstring(node) or "")]


def test_no_module_is_over_the_limit() -> None:
    long = [f"{p.relative_to(PACKAGE.parent)}: {n} lines" for p in sources()
            if (n := len(p.read_text(encoding="utf-8").splitlines())) > MODULE_LINES]
    assert not long, "\n".join(long)


def test_no_function_is_over_the_limit_without_a_reason() -> None:
    long = [f"{p.relative_to(PACKAGE.parent)}: {name} ({n} lines)" for p in sources()
            for name, n in long_functions(p.read_text(encoding="utf-8"))]
    assert not long, "\n".join(long)


@pytest.mark.parametrize("docstring, flagged", [('"""Does it."""', True), ('"""Does it.\n\n    Long: one loop."""', False)])
def test_the_function_rule_sees_a_long_function(docstring: str, flagged: bool) -> None:
    body = "\n".join(f"    x{i} = {i}" for i in range(FUNCTION_LINES))
    source = f"def f():\n    {docstring}\n{body}\n"
    assert bool(long_functions(source)) == flagged
