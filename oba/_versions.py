"""Installed versions of the packages that shape a result (recorded in every row; imports none of them)."""
from __future__ import annotations

from importlib.metadata import PackageNotFoundError, version

PACKAGES = ("torch", "torchvision", "timm", "torch-pruning", "ray", "numpy", "curvlinops-for-pytorch", "oba-bench")


def package_versions() -> dict[str, str]:
    """``package → installed version`` ("not installed" when absent) for :data:`PACKAGES`."""
    out = {}
    for name in PACKAGES:
        try:
            out[name] = version(name)
        except PackageNotFoundError:
            out[name] = "not installed"
    return out
