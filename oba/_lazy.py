"""Package attributes imported on first access, so that importing a package stays cheap.

``oba``, ``oba.criteria`` and ``oba.data`` export names whose modules import
torch; :func:`lazy_exports` gives such a package a module ``__getattr__``
(PEP 562) that imports the defining module only when a name is first used.
"""
from __future__ import annotations

import importlib
from typing import Any, Callable, Mapping


def lazy_exports(package: str, exports: Mapping[str, str]) -> Callable[[str], Any]:
    """A module ``__getattr__`` for ``package`` resolving ``exports`` (``name → module``, relative to the package).

    A module named after the attribute itself (``"criteria": ".criteria"``)
    resolves to that module; any other name to the module's attribute of that
    name. Unknown names raise ``AttributeError`` as usual.
    """

    def __getattr__(name: str) -> Any:
        if name not in exports:
            raise AttributeError(f"module {package!r} has no attribute {name!r}")
        module = importlib.import_module(exports[name], package)
        return module if module.__name__ == f"{package}.{name}" else getattr(module, name)

    return __getattr__
