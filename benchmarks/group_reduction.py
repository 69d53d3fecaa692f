"""The bookkeeping floor of every group score: summing per-parameter scores over each unit.

Before (issue 13, defect 3), ``reduce_groups`` looped over groups and slices:
per slice an ``index_select`` with its index copied to the scores' device and a
sum, per group a host copy (a device sync on a GPU). Now it is
:func:`oba.core.groups.layout_of` (built once per list of groups, remembered) and one
reduction per parameter plus one ``index_add``. This script times, in one
process and interleaved, the old loop (reimplemented here as the baseline), the
new reduction on its first call (layout built) and on later calls (layout
remembered), and one plain gradient pass on a batch of 64 for scale. Each time
is the fastest of ``--repeats``; results must agree to float32 rounding.

Usage: python benchmarks/group_reduction.py [--threads 2] [--device cpu] [--repeats 5] [--models vgg19 resnet32 vit-tiny]
"""
from __future__ import annotations

import argparse
import time
from typing import Callable

import torch
from torch import Tensor, nn

import oba.core.groups
import oba.models
from oba.core.curvature import gradient
from oba.core.groups import Group
from oba.core.measure import synchronize
from oba.criteria.base import reduce_groups, trainable_parameters
from oba.pruning.dependency_groups import find_groups


def per_group_loop(scores: dict[str, Tensor], groups: list[Group]) -> Tensor:
    """The old reduction: per slice a selection and a sum, per group one host copy."""
    sums = []
    for group in groups:
        parts = []
        for s in group.slices:
            index = s.index.to(scores[s.name].device)
            tensor = scores[s.name].reshape(-1) if s.dim is None else scores[s.name]
            parts.append(tensor.index_select(0 if s.dim is None else s.dim, index).sum())
        sums.append(torch.stack(parts).sum().detach().double().cpu())
    return torch.stack(sums).abs()


def fastest(fn: Callable[[], object], device: torch.device, repeats: int) -> float:
    best = float("inf")
    for _ in range(repeats):
        synchronize(device)
        start = time.perf_counter()
        fn()
        synchronize(device)
        best = min(best, time.perf_counter() - start)
    return best


def first_call(scores: dict[str, Tensor], units: list[Group], device: torch.device) -> float:
    """One reduction with the layout cache emptied first (the cost of the first call on new groups)."""
    oba.core.groups._RECENT_LAYOUTS.clear()
    synchronize(device)
    start = time.perf_counter()
    reduce_groups(scores, units)
    return time.perf_counter() - start


def measure(model_name: str, device: torch.device, repeats: int) -> dict[str, float]:
    torch.manual_seed(0)
    model = oba.models.create(model_name, num_classes=10, image_size=32).to(device).eval()
    _, found = find_groups(model, torch.randn(1, 3, 32, 32, device=device))
    units = [unit for group in found for unit in group.units]
    scores = {name: torch.randn_like(p) for name, p in model.named_parameters()}
    batch = (torch.randn(64, 3, 32, 32, device=device), torch.randint(0, 10, (64,), device=device))
    params = list(trainable_parameters(model).values())
    old, new = per_group_loop(scores, units), reduce_groups(scores, units)
    mass = per_group_loop({n: s.abs() for n, s in scores.items()}, units)
    if not ((old - new).abs() <= 1e-5 * mass).all():
        raise AssertionError(f"{model_name}: the reductions disagree beyond float32 rounding")
    loop = fastest(lambda: per_group_loop(scores, units), device, repeats)
    first = min(first_call(scores, units, device) for _ in range(repeats))
    reduce_groups(scores, units)
    remembered = fastest(lambda: reduce_groups(scores, units), device, repeats)
    grad = fastest(lambda: gradient(model, batch, nn.CrossEntropyLoss(), params), device, repeats)
    return {"units": len(units), "slices": sum(len(u.slices) for u in units), "loop": loop, "first": first,
            "remembered": remembered, "gradient": grad}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--device", default="cpu")
    parser.add_argument("--repeats", type=int, default=5)
    parser.add_argument("--models", nargs="+", default=["vgg19", "resnet32", "vit-tiny"])
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    device = torch.device(args.device)
    print("| model | units | slices | per-group loop s | first call s | later calls s | loop ÷ later | gradient pass (64) s |")
    print("|---|---|---|---|---|---|---|---|")
    for name in args.models:
        r = measure(name, device, args.repeats)
        print(f"| {name} | {r['units']} | {r['slices']} | {r['loop']:.4f} | {r['first']:.4f} | {r['remembered']:.4f} | "
              f"{r['loop'] / r['remembered']:.1f}× | {r['gradient']:.4f} |", flush=True)


if __name__ == "__main__":
    main()
