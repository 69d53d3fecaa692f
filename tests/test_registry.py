"""Registries know their built-in names without importing them, and import a module only when one of its entries is used."""
from __future__ import annotations

import sys
from pathlib import Path

import pytest

from oba import criteria, data, models
from oba._registry import Registry


def _module(folder: Path, name: str, registers: list[str]) -> None:
    lines = ["from registry_under_test import REGISTRY", ""]
    for entry in registers:
        decorator = f"@REGISTRY.register({entry!r})" if entry != "undeclared" else "@REGISTRY.register('un' + 'declared')"
        lines += [decorator, f"def entry_{entry}():", f"    return {entry!r}", ""]
    (folder / f"{name}.py").write_text("\n".join(lines))


@pytest.fixture
def registry(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Registry:
    """A registry whose built-ins are the decorators in package ``things`` (modules ``ab`` and ``c``)."""
    monkeypatch.syspath_prepend(str(tmp_path))
    package = tmp_path / "things"
    package.mkdir()
    (package / "__init__.py").write_text("")
    made = Registry("thing", "things", "things", decorator="REGISTRY.register")
    holder = type(sys)("registry_under_test")
    holder.REGISTRY = made
    monkeypatch.setitem(sys.modules, "registry_under_test", holder)
    _module(package, "ab", ["a", "b"])
    _module(package, "c", ["c", "undeclared"])
    for name in ("things", "things.ab", "things.c"):
        monkeypatch.delitem(sys.modules, name, raising=False)
    return made


def test_names_come_from_the_declaration_and_a_module_is_imported_only_for_its_entries(registry: Registry) -> None:
    assert registry.names() == ["a", "b", "c"]
    assert "things.ab" not in sys.modules and "things.c" not in sys.modules
    assert registry.get("b")() == "b"
    assert "things.ab" in sys.modules and "things.c" not in sys.modules
    with pytest.raises(ValueError, match=r"unknown thing 'z'; valid things: a, b, c"):
        registry.get("z")


def test_a_builtin_module_registering_an_undeclared_name_is_refused(registry: Registry) -> None:
    with pytest.raises(ValueError, match=r"built-in module things.c registers thing 'undeclared', which its source does not declare"):
        registry.get("c")


def test_a_builtin_name_cannot_be_taken_by_other_code(registry: Registry) -> None:
    with pytest.raises(ValueError, match=r"thing 'a' is already registered by things.ab"):
        registry.register("a")(lambda: "mine")


def test_a_plugin_entry_can_be_unregistered_and_a_builtin_cannot(registry: Registry) -> None:
    registry.register("mine")(lambda: "mine")
    registry.get("a")
    assert registry.plugins() == {"mine"} and "mine" in registry.names()
    registry.unregister("mine")
    assert registry.plugins() == frozenset() and registry.names() == ["a", "b", "c"]
    with pytest.raises(ValueError, match=r"thing 'a' is built in and cannot be unregistered"):
        registry.unregister("a")


@pytest.mark.parametrize("table", [criteria.registry.CRITERIA, data.DATASETS, models.MODELS])
def test_every_declared_builtin_is_registered_by_its_module(table: Registry) -> None:
    assert table.builtins()
    for name, module in table.builtins().items():
        assert table.get(name).__module__ == module
