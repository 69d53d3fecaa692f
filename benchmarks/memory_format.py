"""Training-step and evaluation time of the smoke CNNs, contiguous against channels-last memory format.

One thread (as a smoke trial runs), batch 64 for SGD steps and 256 for evaluation
forwards, on 28×28 single-channel inputs; the two formats alternate within each
round, and each figure is the median over rounds, so both see the same machine load.

Usage (from the repository root):

    .venv/bin/python benchmarks/memory_format.py --rounds 5
"""
from __future__ import annotations

import argparse
import statistics
import sys
import time
from pathlib import Path

import torch
from torch import nn

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from oba.models import create

FORMATS = {"contiguous": torch.contiguous_format, "channels_last": torch.channels_last}


def _step_seconds(model: nn.Module, inputs: torch.Tensor, targets: torch.Tensor, repeats: int) -> float:
    optimizer = torch.optim.SGD(model.parameters(), lr=0.01, momentum=0.9)
    model.train()
    start = time.perf_counter()
    for _ in range(repeats):
        loss = nn.functional.cross_entropy(model(inputs), targets)
        optimizer.zero_grad(set_to_none=True)
        loss.backward()
        optimizer.step()
    return (time.perf_counter() - start) / repeats


@torch.no_grad()
def _eval_seconds(model: nn.Module, inputs: torch.Tensor, repeats: int) -> float:
    model.eval()
    start = time.perf_counter()
    for _ in range(repeats):
        model(inputs)
    return (time.perf_counter() - start) / repeats


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--models", nargs="+", default=["resnet8", "vgg-tiny"])
    parser.add_argument("--rounds", type=int, default=5)
    parser.add_argument("--repeats", type=int, default=5)
    args = parser.parse_args()
    torch.set_num_threads(1)
    generator = torch.Generator().manual_seed(0)
    train_x = torch.randn(64, 1, 28, 28, generator=generator)
    train_y = torch.randint(0, 10, (64,), generator=generator)
    eval_x = torch.randn(256, 1, 28, 28, generator=generator)
    print("| model | format | SGD step, batch 64 (ms) | evaluation forward, batch 256 (ms) |")
    print("|---|---|---|---|")
    for name in args.models:
        times: dict[str, dict[str, list[float]]] = {f: {"step": [], "eval": []} for f in FORMATS}
        for _ in range(args.rounds):
            for label, fmt in FORMATS.items():
                torch.manual_seed(0)
                model = create(name, num_classes=10, in_chans=1, image_size=28).to(memory_format=fmt)
                x, ex = train_x.contiguous(memory_format=fmt), eval_x.contiguous(memory_format=fmt)
                _step_seconds(model, x, train_y, 1)
                times[label]["step"].append(_step_seconds(model, x, train_y, args.repeats))
                times[label]["eval"].append(_eval_seconds(model, ex, args.repeats))
        for label in FORMATS:
            step = statistics.median(times[label]["step"]) * 1e3
            forward = statistics.median(times[label]["eval"]) * 1e3
            print(f"| {name} | {label} | {step:.1f} | {forward:.1f} |")
        ratio = statistics.median(times["contiguous"]["step"]) / statistics.median(times["channels_last"]["step"])
        print(f"| {name} | contiguous ÷ channels_last | {ratio:.2f}× | |")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
