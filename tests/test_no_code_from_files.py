"""Nothing read from disk runs code: every ``torch.load`` passes ``weights_only=True``, and the package never unpickles.

Checked on the source itself (``ast``), so a new call site cannot slip in: ``torch.load`` however it is
imported (``torch.load``, ``torch.serialization.load``, ``from torch import load``, aliases) in every Python file
of the project; ``pickle.load``/``pickle.loads``/``pickle.Unpickler`` and ``weights_only=False`` in the package.
"""
from __future__ import annotations

import ast
from collections.abc import Iterator
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[1]
EVERYWHERE = ("oba", "benchmarks", "scripts", "tests")
PACKAGE = ("oba",)
TORCH_LOADS = {"torch.load", "torch.serialization.load"}
UNPICKLERS = {f"{module}.{name}" for module in ("pickle", "_pickle") for name in ("load", "loads", "Unpickler")}


def python_files(folders: tuple[str, ...]) -> list[Path]:
    """The project's Python files under ``folders``."""
    return sorted(p for folder in folders for p in (REPO / folder).rglob("*.py") if "__pycache__" not in p.parts)


def _imported_names(tree: ast.AST) -> dict[str, str]:
    """Local name → the dotted name it stands for, from the file's imports (``import torch as t``: t → torch)."""
    names = {}
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            for alias in node.names:
                names[alias.asname or alias.name.split(".")[0]] = alias.name if alias.asname else alias.name.split(".")[0]
        elif isinstance(node, ast.ImportFrom) and node.module and not node.level:
            for alias in node.names:
                names[alias.asname or alias.name] = f"{node.module}.{alias.name}"
    return names


def dotted(node: ast.expr, names: dict[str, str]) -> str | None:
    """The dotted name a call's function stands for (imports resolved), or None when it is not a plain name."""
    if isinstance(node, ast.Name):
        return names.get(node.id, node.id)
    if isinstance(node, ast.Attribute):
        base = dotted(node.value, names)
        return f"{base}.{node.attr}" if base is not None else None
    return None


def _weights_only_true(call: ast.Call) -> bool:
    return any(k.arg == "weights_only" and isinstance(k.value, ast.Constant) and k.value.value is True
               for k in call.keywords)


def _calls(path: Path) -> Iterator[tuple[ast.Call, str | None]]:
    tree = ast.parse(path.read_text(encoding="utf-8"), filename=str(path))
    names = _imported_names(tree)
    for node in ast.walk(tree):
        if isinstance(node, ast.Call):
            yield node, dotted(node.func, names)


def torch_loads_without_weights_only(path: Path, root: Path = REPO) -> list[str]:
    """``file:line`` (relative to ``root``) of each ``torch.load`` call in ``path`` that does not pass
    ``weights_only=True`` literally."""
    return [f"{path.relative_to(root)}:{call.lineno}" for call, name in _calls(path)
            if name in TORCH_LOADS and not _weights_only_true(call)]


def unpickling(path: Path, root: Path = REPO) -> list[str]:
    """``file:line`` (relative to ``root``) of each unpickling call and each ``weights_only=False`` in ``path``."""
    found = []
    for call, name in _calls(path):
        if name in UNPICKLERS:
            found.append(f"{path.relative_to(root)}:{call.lineno}: {name}")
        found += [f"{path.relative_to(root)}:{call.lineno}: weights_only=False" for k in call.keywords
                  if k.arg == "weights_only" and isinstance(k.value, ast.Constant) and k.value.value is False]
    return found


def test_every_torch_load_passes_weights_only_true() -> None:
    files = python_files(EVERYWHERE)
    assert len(files) > 50, "the project's files were not found"
    offenders = [where for path in files for where in torch_loads_without_weights_only(path)]
    assert not offenders, "torch.load without weights_only=True:\n" + "\n".join(offenders)


def test_the_package_never_unpickles() -> None:
    offenders = [where for path in python_files(PACKAGE) for where in unpickling(path)]
    assert not offenders, "unpickling in the package:\n" + "\n".join(offenders)


@pytest.mark.parametrize("source, found", [
    ("import torch\ntorch.load(f)\n", True),
    ("import torch\ntorch.load(f, weights_only=True)\n", False),
    ("import torch\ntorch.load(f, weights_only=flag)\n", True),
    ("import torch as t\nt.load(f, map_location='cpu')\n", True),
    ("from torch import load\nload(f)\n", True),
    ("from torch import load as read\nread(f, weights_only=True)\n", False),
    ("import torch.serialization\ntorch.serialization.load(f)\n", True),
    ("from torch.serialization import load\nload(f, weights_only=False)\n", True),
    ("import safetensors.torch\nsafetensors.torch.load(data)\n", False),
    ("import json\njson.load(f)\n", False),
])
def test_the_rule_sees_torch_load_however_it_is_imported(tmp_path: Path, source: str, found: bool) -> None:
    (tmp_path / "probe.py").write_text(source)
    assert bool(torch_loads_without_weights_only(tmp_path / "probe.py", tmp_path)) is found


@pytest.mark.parametrize("source, found", [
    ("import pickle\npickle.load(f)\n", True),
    ("from pickle import loads\nloads(b)\n", True),
    ("import pickle as p\np.Unpickler(f).load()\n", True),
    ("import torch\ntorch.load(f, map_location='cpu', weights_only=False)\n", True),
    ("import pickle\npickle.dumps(x)\n", False),
])
def test_the_rule_sees_unpickling(tmp_path: Path, source: str, found: bool) -> None:
    (tmp_path / "probe.py").write_text(source)
    assert bool(unpickling(tmp_path / "probe.py", tmp_path)) is found
