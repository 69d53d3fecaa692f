"""Dense test accuracy and training time of the small models on mnist5k.

resnet8 and vgg-tiny train with the recipes of ``suites/smoke.toml``; vit-tiny
(not in the smoke grid) with the AdamW recipe below. Seed 0, one run each.

    .venv/bin/python benchmarks/dense_training.py [--threads 1]
"""
from __future__ import annotations

import argparse

import torch

import oba.data
import oba.models
from oba.suite.config import load_suite
from oba.training.train import Recipe, train

VIT_TINY = Recipe(epochs=15, batch_size=64, optimizer="adamw", lr=3e-3, weight_decay=0.05, warmup_epochs=2)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--threads", type=int, default=1)
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    smoke = load_suite("suites/smoke.toml")
    recipes = {name: Recipe.from_dict(smoke.dense[name]) for name in smoke.models} | {"vit-tiny": VIT_TINY}
    data = oba.data.load("mnist5k")
    print(f"mnist5k, {args.threads} thread(s), seed 0")
    print("| model | recipe | val top-1 | test top-1 | training seconds |")
    print("|---|---|---|---|---|")
    for name, recipe in recipes.items():
        torch.manual_seed(0)
        model = oba.models.create(name, data.info.num_classes, data.info.in_chans, data.info.image_size)
        result = train(model, data, recipe, device="cpu")
        summary = f"{recipe.optimizer} lr {recipe.lr:g}, {recipe.epochs} epochs, batch {recipe.batch_size}"
        print(f"| {name} | {summary} | {result.val['top1']:.1%} | {result.test['top1']:.1%} | {result.seconds:.1f} |")


if __name__ == "__main__":
    main()
