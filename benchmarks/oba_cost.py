"""Cost of one scoring pass of each OBA variant, side by side with Taylor, taylor2, a bare HVP and a plain gradient.

Model: CIFAR-shaped ResNet-32 (3×32×32, 10 classes), eval mode, float32,
4 calibration batches of 64. Each round times, in turn: one plain gradient pass
over the 4 batches, one bare double-backward Hessian-vector product per batch
(v = θ), one scoring pass each of `oba`, `oba-released`, `fastoba`, `taylor-depth`, `taylor2` and
`taylor`, plus the same HVPs by
forward-over-reverse (``torch.func.jvp`` of ``torch.func.grad``). Rounds are
interleaved so machine noise hits every variant alike; medians are reported,
with ratios to the gradient pass.

    .venv/bin/python benchmarks/oba_cost.py [--rounds 3] [--threads 2]
"""
from __future__ import annotations

import argparse
import json
import platform
import statistics
import time

import torch
from torch import nn
from torch.func import functional_call, grad, jvp

import oba
import oba.models

LOSS = nn.functional.cross_entropy


def gradient_pass(model: nn.Module, batches) -> None:
    params = [p for p in model.parameters() if p.requires_grad]
    for x, y in batches:
        torch.autograd.grad(LOSS(model(x), y), params)


def bare_hvp(model: nn.Module, batches) -> None:
    params = [p for p in model.parameters() if p.requires_grad]
    theta = [p.detach() for p in params]
    for x, y in batches:
        grads = torch.autograd.grad(LOSS(model(x), y), params, create_graph=True)
        torch.autograd.grad(sum((g * t).sum() for g, t in zip(grads, theta)), params)


def forward_over_reverse_hvp(model: nn.Module, batches) -> None:
    params = {name: p.detach() for name, p in model.named_parameters()}
    buffers = dict(model.named_buffers())

    def loss(p, x, y):
        return LOSS(functional_call(model, (p, buffers), (x,)), y)

    for x, y in batches:
        jvp(lambda p: grad(loss)(p, x, y), (params,), (params,))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--batches", type=int, default=4)
    parser.add_argument("--batch-size", type=int, default=64)
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    torch.manual_seed(0)
    device = torch.device("cuda" if torch.cuda.is_available() else "cpu")
    model = oba.models.create("resnet32", num_classes=10).to(device).eval()
    batches = [
        (torch.randn(args.batch_size, 3, 32, 32, device=device), torch.randint(0, 10, (args.batch_size,), device=device))
        for _ in range(args.batches)
    ]
    variants = {
        "gradient pass": lambda: gradient_pass(model, batches),
        "bare HVP (double backward)": lambda: bare_hvp(model, batches),
        "bare HVP (forward-over-reverse, torch.func)": lambda: forward_over_reverse_hvp(model, batches),
        **{name: (lambda name=name: oba.criteria.get(name).parameter_scores(model, batches, LOSS))
           for name in ("oba", "oba-released", "fastoba", "taylor-depth", "taylor2", "taylor")},
    }
    for fn in variants.values():
        fn()
    times: dict[str, list[float]] = {k: [] for k in variants}
    for _ in range(args.rounds):
        for name, fn in variants.items():
            if device.type == "cuda":
                torch.cuda.synchronize()
            start = time.perf_counter()
            fn()
            if device.type == "cuda":
                torch.cuda.synchronize()
            times[name].append(time.perf_counter() - start)
    med = {k: statistics.median(v) for k, v in times.items()}
    grad = med["gradient pass"]
    print(f"ResNet-32, {args.batches}x{args.batch_size}, {args.threads} threads, {device}, "
          f"torch {torch.__version__}, {platform.processor() or platform.machine()}, rounds={args.rounds}")
    print("| variant | median seconds | × gradient pass |")
    print("|---|---|---|")
    for name, sec in med.items():
        print(f"| {name} | {sec:.3f} | {sec / grad:.2f} |")
    print(f"oba / bare HVP = {med['oba'] / med['bare HVP (double backward)']:.3f}; "
          f"oba / taylor = {med['oba'] / med['taylor']:.2f}")
    print(json.dumps({"seconds": times}))


if __name__ == "__main__":
    main()
