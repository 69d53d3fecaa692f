"""Seconds of ``oba.prune`` (one scoring step, 20 % of the MACs) on a few models, for two source trees side by side.

    .venv/bin/python benchmarks/prune_overhead.py /path/to/old/tree /path/to/new/tree

Each (tree, model, criterion) runs in its own process, in the tree and with it first on ``sys.path``, one torch thread,
alternating trees, ``--repeats`` times; the table gives each tree's median and the ratio old / new.
"""
from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys

CASES = (("torchvision:alexnet", 64), ("torchvision:densenet121", 32), ("torchvision:convnext_base", 32),
         ("resnet8", 32))
CHILD = """
import json, sys, time, torch
from torch import nn
torch.set_num_threads(1)
import oba
name, size, criterion = sys.argv[1], int(sys.argv[2]), sys.argv[3]
torch.manual_seed(0)
model = oba.models.create(name, 10, in_chans=3, image_size=size).eval()
example = torch.randn(1, 3, size, size)
batches = [(torch.randn(2, 3, size, size), torch.randint(0, 10, (2,)))]
start = time.perf_counter()
_, record = oba.prune(model, example, batches, nn.functional.cross_entropy, criterion, ratio=0.2, steps=1)
print(json.dumps({"seconds": time.perf_counter() - start, "macs_pruned": record.macs_pruned}))
"""


def _seconds(tree: str, name: str, size: int, criterion: str) -> dict:
    env = {**os.environ, "PYTHONPATH": tree}
    out = subprocess.run([sys.executable, "-c", CHILD, name, str(size), criterion], env=env, cwd=tree,
                         capture_output=True, text=True, check=True).stdout
    return json.loads(out.strip().splitlines()[-1])


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("old")
    parser.add_argument("new")
    parser.add_argument("--criteria", nargs="*", default=["magnitude-l1", "oba"])
    parser.add_argument("--repeats", type=int, default=3)
    args = parser.parse_args()
    print("| model | input | criterion | old (s) | new (s) | old / new | same MACs |")
    print("|---|---|---|---|---|---|---|")
    for name, size in CASES:
        for criterion in args.criteria:
            runs: dict[str, list[dict]] = {"old": [], "new": []}
            for _ in range(args.repeats):
                for label in ("old", "new"):
                    runs[label].append(_seconds(getattr(args, label), name, size, criterion))
            old, new = (statistics.median(r["seconds"] for r in runs[k]) for k in ("old", "new"))
            same = {r["macs_pruned"] for r in runs["old"] + runs["new"]}
            print(f"| {name} | {size} | {criterion} | {old:.2f} | {new:.2f} | {old / new:.1f} | {len(same) == 1} |",
                  flush=True)


if __name__ == "__main__":
    main()
