"""How close the released OBA, scored in train mode as the authors' scripts do, is to taylor-depth.

For every dense checkpoint of the smoke suite in a checkpoint cache (resnet8 and vgg-tiny on
mnist5k, the seeds found), this scores two calibration batches of 64 training images (the smoke
suite's calibration) with ``oba-released`` and ``taylor-depth`` in train mode and in eval mode, and
prints, per model, seed and mode: how many Linear/Conv tensors' per-parameter scores agree to a
relative L2 difference of 1e-6, the difference of the others, and the lowest Spearman correlation of
their channel scores (the ``released`` reduction) over the model's coupled groups.

Usage: python benchmarks/released_train_mode.py [--cache .cache/checkpoints]  (after `bash scripts/main.sh`)
"""
from __future__ import annotations

import argparse
import itertools
import json
from pathlib import Path

import torch
from scipy.stats import spearmanr
from torch.nn import functional as F

import oba.criteria as criteria
import oba.data
from oba.core.connectivity import layer_parameters
from oba.pruning.dependency_groups import find_groups
from oba.training.checkpoints import dense_checkpoint
from oba.training.train import Recipe


def compare(model: torch.nn.Module, batches: list, mode: str) -> tuple[str, str, float]:
    released = criteria.get("oba-released", mode=mode)
    depth = criteria.get("taylor-depth", mode=mode)
    a = released.parameter_scores(model, batches, F.cross_entropy)
    b = depth.parameter_scores(model, batches, F.cross_entropy)
    relative = {n: float((a[n] - b[n]).norm() / a[n].norm()) for n in layer_parameters(model) if float(a[n].norm()) > 0}
    equal = sum(r < 1e-6 for r in relative.values())
    apart = ", ".join(f"{n} {r:.2g}" for n, r in relative.items() if r >= 1e-6)
    _, groups = find_groups(model, batches[0][0][:1])
    units = [u for g in groups for u in g.units]
    sa = released.group_scores(model, batches, F.cross_entropy, units)
    sb = depth.group_scores(model, batches, F.cross_entropy, units)
    lowest, start = 1.0, 0
    for group in groups:
        end = start + len(group)
        lowest = min(lowest, float(spearmanr(sa[start:end].numpy(), sb[start:end].numpy()).statistic))
        start = end
    return f"{equal} of {len(relative)}", apart or "none", lowest


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--cache", default=".cache/checkpoints")
    args = parser.parse_args()
    splits = oba.data.load("mnist5k")
    batches = list(itertools.islice(oba.data.make_loader(splits.train, batch_size=64, shuffle=True, seed=0), 2))
    print("| model | seed | mode | Linear/Conv tensors equal to 1e-6 (relative L2) | the others, relative L2 | "
          "lowest channel Spearman |")
    print("|---|---|---|---|---|---|")
    for meta_path in sorted(Path(args.cache).glob("*.json")):
        meta = json.loads(meta_path.read_text())
        if meta.get("dataset") != "mnist5k" or meta.get("model") not in ("resnet8", "vgg-tiny"):
            continue
        checkpoint = dense_checkpoint(meta["model"], "mnist5k", Recipe(**meta["recipe"]), meta["seed"],
                                      checkpoint=meta_path.with_suffix(".pt"), device="cpu", data=splits)
        for mode in ("train", "eval"):
            equal, apart, lowest = compare(checkpoint.model, batches, mode)
            print(f"| {meta['model']} | {meta['seed']} | {mode} | {equal} | {apart} | {lowest:.4f} |")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
