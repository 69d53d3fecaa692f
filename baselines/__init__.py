"""Baseline pruning criteria, one module per family, registered into ``oba.criteria``."""
import importlib
import pkgutil

for _module in pkgutil.iter_modules(__path__):
    importlib.import_module(f"{__name__}.{_module.name}")
