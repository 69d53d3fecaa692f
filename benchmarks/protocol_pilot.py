"""Pilots behind the smoke protocol's choices: fine-tuning epochs, and the per-layer cap.

``finetune``: per criterion, prune a cell of the suite (its own settings), recalibrate
batch norm, then fine-tune separately for 1, 2 and 3 epochs (the suite's recipe
otherwise); prints test and validation top-1 and the kept epoch of each.
``layer-cap``: per criterion and seed, the recalibrated accuracy before fine-tuning
with the suite's settings under each ``--caps`` value.

One JSON line per result. Each pilot uses the dense checkpoints of ``--cache``
(trained there when missing). Usage (from the repository root):

    .venv/bin/python benchmarks/protocol_pilot.py finetune --models resnet8 vgg-tiny --seeds 0 --ratio 0.2
    .venv/bin/python benchmarks/protocol_pilot.py layer-cap --models vgg-tiny --seeds 0 1 2 --caps 0.9 0.5
"""
from __future__ import annotations

import argparse
import copy
import json
import sys
from dataclasses import replace
from pathlib import Path

import torch

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from oba.core.recalibration import recalibrate_batchnorm
from oba.pruning import prune
from oba.suite.cell import cell_criterion
from oba.suite.cells import Cell, expand
from oba.suite.config import load_suite
from oba.suite.context import LOSS, DenseContext, dense_context
from oba.training.train import Recipe, evaluate, fine_tune


def _pruned(cell: Cell, context: DenseContext, layer_cap: float) -> torch.nn.Module:
    c = cell.config
    model, _ = prune(
        context.fresh_model(), context.example, context.calibration, LOSS, cell_criterion(cell), ratio=c["ratio"],
        structure=c["structure"], steps=c["prune"]["steps"], allocation=c["allocation"],
        normalisation=c["prune"]["normalisation"], layer_cap=layer_cap, mode=c["prune"]["mode"],
        recalibration=context.recalibration,
    )
    recalibrate_batchnorm(model, context.recalibration)
    return model


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("pilot", choices=("finetune", "layer-cap"))
    parser.add_argument("--suite", default="suites/smoke.toml")
    parser.add_argument("--models", nargs="+", default=["resnet8", "vgg-tiny"])
    parser.add_argument("--criteria", nargs="+", default=["magnitude-l1", "taylor2", "obd", "random", "taylor"])
    parser.add_argument("--seeds", nargs="+", type=int, default=[0])
    parser.add_argument("--ratio", type=float, default=0.2)
    parser.add_argument("--caps", nargs="+", type=float, default=[0.9, 0.5])
    parser.add_argument("--cache", default="/tmp/oba-protocol-pilot", help="dense-checkpoint cache")
    args = parser.parse_args()
    torch.set_num_threads(1)
    for cell in expand(load_suite(ROOT / args.suite)):
        c = cell.config
        if (c["model"], c["criterion"], c["seed"], c["ratio"]) not in {
            (m, k, s, args.ratio) for m in args.models for k in args.criteria for s in args.seeds
        }:
            continue
        context = dense_context(cell, None, False, args.cache, torch.device("cpu"))
        line = {"model": c["model"], "criterion": c["criterion"], "seed": c["seed"], "ratio": c["ratio"]}
        if args.pilot == "finetune":
            pruned = _pruned(cell, context, c["prune"]["layer_cap"])
            line["pruned_acc"] = round(100 * evaluate(pruned, context.splits.test)["top1"], 2)
            for epochs in (1, 2, 3):
                recipe = replace(Recipe.from_dict(c["finetune"]), epochs=epochs, seed=c["seed"])
                result = fine_tune(copy.deepcopy(pruned), context.splits, recipe)
                line[f"{epochs}_epochs"] = {"test": round(100 * result.test["top1"], 2),
                                            "val": round(100 * result.val["top1"], 2), "kept_epoch": result.best_epoch}
        else:
            for cap in args.caps:
                line[f"cap_{cap}"] = round(100 * evaluate(_pruned(cell, context, cap), context.splits.test)["top1"], 2)
        print(json.dumps(line), flush=True)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
