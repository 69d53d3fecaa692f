"""``oba list``: the registered models, datasets or criteria."""
from __future__ import annotations

import argparse
import sys

from oba import criteria, data, models

REGISTRIES = {"models": models.names, "datasets": data.names, "criteria": criteria.names}


def list_names(args: argparse.Namespace) -> int:
    """Print every name of the registry ``args.what``."""
    for name in REGISTRIES[args.what]():
        print(name)
    if args.what == "models":
        print("torchvision:NAME or timm:NAME: any torchvision or timm classifier (docs/models.md)", file=sys.stderr)
    return 0
