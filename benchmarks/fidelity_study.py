"""Ranking fidelity and scoring cost of second-order criteria on the smoke suite's dense models.

Issue 10 item 8. For each (model, seed) of ``suites/smoke.toml`` this builds exactly the
context a smoke cell uses (``oba.suite.context.dense_context``: dense checkpoint, the 2
calibration batches of 64, every structured channel unit, the seeded sample of 32 units and
their actual loss changes ΔL measured in eval mode), scores every unit with each criterion
variant, and reports on the sample (``oba.criteria.fidelity.rank_fidelity``):

- signed ρ: Spearman(score, ΔL);  |ΔL| ρ: Spearman(score, |ΔL|);
- P@k: share of the k lowest-scored units among the k truly cheapest (k = 4 and 8 of 32;
  a cell's own k comes from its first pruning step, which this study does not run).

Cost: the median over ``--repeats`` of the criterion's ``group_scores`` wall time on all units,
divided by the median time of one plain gradient pass over the same calibration batches
(``oba.core.measure.gradient_seconds``), one thread.

Usage (from the repository root; the dense checkpoints must already be in the cache):

    PYTHONPATH=$PWD python benchmarks/fidelity_study.py --cache-dir /tmp/repro-after/cache-native \
        [--models resnet8 vgg-tiny] [--seeds 0 1 2] [--repeats 3] [--exact-repeats 1] [--variants obd obd-block ...] \
        [--json out.json]
    PYTHONPATH=$PWD python benchmarks/fidelity_study.py --check   # candidate vs a float64 autograd loop
"""
from __future__ import annotations

import argparse
import json
import statistics
import time
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

import torch
from torch import Tensor, nn

from oba import Group, ParamSlice
from oba.core.curvature import fisher_diagonal_sums, per_sample_gradients
from oba.core.groups import GroupLayout, check_groups
from oba.core.measure import gradient_seconds
from oba.criteria import registry
from oba.criteria.base import (
    Batch,
    Criterion,
    LossFn,
    require_batches,
    scoring_context,
    trainable_parameters,
)
from oba.criteria.fidelity import rank_fidelity
from oba.suite.cells import expand
from oba.suite.config import load_suite
from oba.suite.context import LOSS, dense_context

ROOT = Path(__file__).resolve().parents[1]


# The study's candidate (not a registered criterion: it did not beat obd on resnet8; see benchmarks/README.md).
# obd-block: the empirical-Fisher block form of a group's loss change, from per-sample gradients.
#
# For a group G with parameter elements S, calibration samples n = 1..N (all batches)
# and per-sample gradients g_n = ∇ℓ_n,
#
#    ΔL̂(G) = −ḡ_Sᵀ θ_S + ½ θ_Sᵀ F_SS θ_S,   F = (1/N) Σ_n g_n g_nᵀ (empirical Fisher),
#           = −(1/N) Σ_n d_{n,G} + ½ (1/N) Σ_n d_{n,G}²,   d_{n,G} = g_{n,S}ᵀ θ_S,
#
# score(G) = |ΔL̂(G)| (ΔL̂(G) when signed). ``linear=False`` drops the first-order term
# (score ½ θ_Sᵀ F_SS θ_S ≥ 0). ``obd`` is this quadratic form with F_SS cut to its diagonal;
# here the whole within-group block of the Fisher is kept, at obd's cost (one vmap of
# per-sample gradients), since θ_Sᵀ F_SS θ_S needs only the per-sample scalars d_{n,G}.
#
# Per parameter (a group of one element) the quantity is ``−ḡ_i θ_i + ½ F_ii θ_i²``
# (``½ F_ii θ_i²``, i.e. obd, with ``linear=False``).
#
# ``blocks="tensor"`` keeps only the blocks of each (group, parameter tensor) pair: the quadratic
# term is ``½ Σ_t θ_{S_t}ᵀ F_{S_t S_t} θ_{S_t}`` over the slices S_t of G in each tensor t.


def _per_sample_index_sums(tensor: Tensor, dim: int | None) -> Tensor:
    """``(chunk, size)`` sums of a ``(chunk, *shape)`` tensor per index along ``dim`` (flat when None)."""
    if dim is None:
        return tensor.reshape(tensor.shape[0], -1)
    moved = tensor.movedim(dim + 1, 1)
    return moved.reshape(moved.shape[0], moved.shape[1], -1).sum(2)


class OBDBlock(Criterion):
    """``ΔL̂(G) = −ḡ_Sᵀθ_S + ½ θ_Sᵀ F_SS θ_S`` with the empirical Fisher block of each group.

    ``linear`` keeps the first-order term; ``chunk_size``/``memory_budget`` bound the
    per-sample gradients held at once, as in ``obd``. Batch norm in train mode couples
    the samples, so scoring such a model in train mode raises ``ValueError``.
    """

    signed_estimate = True

    def __init__(
        self,
        linear: bool = True,
        blocks: str = "group",
        chunk_size: int | None = None,
        memory_budget: int = 1 << 29,
        mode: str | None = None,
        signed: bool = False,
    ) -> None:
        super().__init__(mode, signed)
        if blocks not in ("group", "tensor"):
            raise ValueError(f"blocks must be 'group' or 'tensor', got {blocks!r}")
        self.linear = linear
        self.blocks = blocks
        self.chunk_size = chunk_size
        self.memory_budget = memory_budget

    def _chunk(self, named: dict[str, nn.Parameter]) -> int:
        if self.chunk_size is not None:
            return self.chunk_size
        per_sample = sum(p.numel() * p.element_size() for p in named.values())
        return max(1, self.memory_budget // max(1, per_sample))

    def parameter_scores(self, model: nn.Module, batches: Sequence[Batch], loss_fn: LossFn) -> dict[str, Tensor]:
        """``−ḡ_i θ_i + ½ F_ii θ_i²`` (without the first term when ``linear`` is false)."""
        require_batches(batches)
        named = trainable_parameters(model)
        with scoring_context(model, self.mode):
            sums, count = fisher_diagonal_sums(model, batches, loss_fn, list(named), self.chunk_size, self.memory_budget)
            fisher = {n: t / count for n, t in sums.items()}
            scores = {name: 0.5 * fisher[name] * p.detach().square() for name, p in named.items()}
            if self.linear:
                mean_grad = {name: torch.zeros_like(p, requires_grad=False) for name, p in named.items()}
                count = 0
                for batch in batches:
                    for grads in per_sample_gradients(model, batch, loss_fn, list(named), self._chunk(named)):
                        for name, g in grads.items():
                            mean_grad[name] += g.sum(0)
                    count += batch[1].shape[0]
                for name, p in named.items():
                    scores[name] = scores[name] - mean_grad[name] / count * p.detach()
        return scores

    def group_loss_changes(
        self, model: nn.Module, batches: Sequence[Batch], loss_fn: LossFn, groups: Sequence[Group]
    ) -> Tensor:
        """The estimate ``ΔL̂(G)`` of each group (float64, CPU)."""
        require_batches(batches)
        named = trainable_parameters(model)
        groups = check_groups(groups, named)
        if not groups:
            return torch.zeros(0, dtype=torch.float64)
        theta = {name: p.detach() for name, p in named.items()}
        membership = GroupLayout.of(groups, {name: t.shape for name, t in theta.items()}).members
        names = sorted({name for name, _ in membership})
        first = torch.zeros(len(groups), dtype=torch.float64)
        second = torch.zeros(len(groups), dtype=torch.float64)
        count = 0
        with scoring_context(model, self.mode):
            for batch in batches:
                for grads in per_sample_gradients(model, batch, loss_fn, names, self._chunk(named)):
                    chunk = next(iter(grads.values())).shape[0]
                    d = torch.zeros(chunk, len(groups), dtype=torch.float64)
                    for (name, dim), (index, gid) in membership.items():
                        sums = _per_sample_index_sums(grads[name] * theta[name], dim).double().cpu()
                        part = torch.zeros(chunk, len(groups), dtype=torch.float64).index_add_(1, gid, sums[:, index])
                        d += part
                        if self.blocks == "tensor":
                            second += part.square().sum(0)
                    first += d.sum(0)
                    if self.blocks == "group":
                        second += d.square().sum(0)
                count += batch[1].shape[0]
        quadratic = 0.5 * second / count
        return quadratic - first / count if self.linear else quadratic

    def group_scores(
        self, model: nn.Module, batches: Sequence[Batch], loss_fn: LossFn, groups: Sequence[Group]
    ) -> Tensor:
        """``|ΔL̂(G)|`` per group (``ΔL̂(G)`` when signed), float64 CPU."""
        return self.score_from_sums(self.group_loss_changes(model, batches, loss_fn, groups))

    def config(self) -> dict[str, Any]:
        return {**super().config(), "linear": self.linear, "blocks": self.blocks, "chunk_size": self.chunk_size,
                "memory_budget": self.memory_budget}


VARIANTS: dict[str, Callable[[int], object]] = {
    "obd": lambda seed: registry.get("obd", mode="eval"),
    "taylor": lambda seed: registry.get("taylor", mode="eval"),
    "taylor signed": lambda seed: registry.get("taylor", mode="eval", signed=True),
    "oba": lambda seed: registry.get("oba", mode="eval"),
    "oba-released": lambda seed: registry.get("oba-released", mode="eval"),
    "oba abs-sum": lambda seed: registry.get("oba", mode="eval", reduction="abs-sum"),
    "fastoba": lambda seed: registry.get("fastoba", mode="eval"),
    "taylor-depth": lambda seed: registry.get("taylor-depth", mode="eval"),
    "kfac-obd": lambda seed: registry.get("kfac-obd", mode="eval", seed=seed),
    "kfac-obs": lambda seed: registry.get("kfac-obs", mode="eval", seed=seed),
    "obd-hutchinson": lambda seed: registry.get("obd-hutchinson", mode="eval", seed=seed),
    "magnitude-l1": lambda seed: registry.get("magnitude-l1", mode="eval"),
    "random": lambda seed: registry.get("random", mode="eval", seed=seed),
    "taylor2": lambda seed: registry.get("taylor2", mode="eval"),
    "taylor2 signed": lambda seed: registry.get("taylor2", mode="eval", signed=True),
    "taylor2-group exact": lambda seed: registry.get("taylor2-group", mode="eval", probes=None),
    "taylor2-group p8": lambda seed: registry.get("taylor2-group", mode="eval", probes=8, seed=seed),
    "taylor2-group p8 signed": lambda seed: registry.get("taylor2-group", mode="eval", probes=8, seed=seed, signed=True),
    "obd-block quad": lambda seed: OBDBlock(linear=False, mode="eval"),
    "obd-block": lambda seed: OBDBlock(linear=True, mode="eval"),
    "obd-block signed": lambda seed: OBDBlock(linear=True, mode="eval", signed=True),
    "obd-tensor quad": lambda seed: OBDBlock(linear=False, blocks="tensor", mode="eval"),
    "obd-tensor": lambda seed: OBDBlock(linear=True, blocks="tensor", mode="eval"),
    "obd-tensor signed": lambda seed: OBDBlock(linear=True, blocks="tensor", mode="eval", signed=True),
}


def check_candidate() -> float:
    """Largest |difference| between OBDBlock and a per-sample autograd loop (float64 MLP, every option)."""
    torch.manual_seed(0)
    model = nn.Sequential(nn.Linear(5, 4), nn.Tanh(), nn.Linear(4, 3)).double()
    batches = [(torch.randn(6, 5, dtype=torch.float64), torch.randint(0, 3, (6,))) for _ in range(2)]
    groups = [Group((ParamSlice("0.weight", 0, torch.tensor([j])), ParamSlice("0.bias", 0, torch.tensor([j])),
                     ParamSlice("2.weight", 1, torch.tensor([j]))), f"n{j}") for j in range(4)]
    groups += [Group((ParamSlice("2.bias", None, torch.tensor([0, 2])),), "b"),
               Group((ParamSlice("0.weight", 1, torch.tensor([1])),), "in1")]
    named = dict(model.named_parameters())
    shapes = {n: p.shape for n, p in named.items()}
    per_sample = [dict(zip(named, torch.autograd.grad(LOSS(model(x[i:i + 1]), y[i:i + 1]), list(named.values()))))
                  for x, y in batches for i in range(len(y))]
    worst = 0.0
    for blocks in ("group", "tensor"):
        for linear in (True, False):
            reference = []
            for group in groups:
                masks = group.masks(shapes)
                parts = torch.stack([torch.stack([(g[n] * named[n].detach() * m).sum() for n, m in masks.items()])
                                     for g in per_sample])  # (samples, tensors of G): g_{n,S_t}ᵀ θ_{S_t}
                d = parts.sum(1)
                quadratic = 0.5 * (d.square().mean() if blocks == "group" else parts.square().sum(1).mean())
                reference.append(quadratic - d.mean() if linear else quadratic)
            got = OBDBlock(linear=linear, blocks=blocks, signed=True).group_scores(model, batches, LOSS, groups)
            worst = max(worst, float((got - torch.stack(reference)).abs().max()))
    return worst


def contexts(models: list[str], seeds: list[int], cache_dir: str):
    cells = expand(load_suite(ROOT / "suites" / "smoke.toml"))
    for model in models:
        for seed in seeds:
            cell = next(c for c in cells if c.model == model and c.seed == seed
                        and c.criterion == "obd" and c.config["ratio"] == 0.1)
            yield model, seed, dense_context(cell, None, False, cache_dir, torch.device("cpu"))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--cache-dir", help="dense checkpoint cache (required unless --check)")
    parser.add_argument("--models", nargs="+", default=["resnet8", "vgg-tiny"])
    parser.add_argument("--seeds", nargs="+", type=int, default=[0, 1, 2])
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--exact-repeats", type=int, default=1, help="repeats of the (slow) exact taylor2-group")
    parser.add_argument("--variants", nargs="+", default=list(VARIANTS))
    parser.add_argument("--json", default=None)
    parser.add_argument("--check", action="store_true", help="only check the candidate against autograd, then exit")
    args = parser.parse_args()
    torch.set_num_threads(1)
    if args.check:
        worst = check_candidate()
        print(f"obd-block vs per-sample autograd loop (float64): max |difference| {worst:.2e}")
        raise SystemExit(0 if worst < 1e-12 else 1)
    if not args.cache_dir:
        parser.error("--cache-dir is required")
    rows = []
    for model_name, seed, context in contexts(args.models, args.seeds, args.cache_dir):
        model = context.model
        grad_s = statistics.median(gradient_seconds(model, context.calibration, LOSS, "eval") for _ in range(args.repeats))
        print(f"# {model_name} seed {seed}: {len(context.fidelity_groups)} units, gradient pass {grad_s * 1e3:.1f} ms",
              flush=True)
        for variant in args.variants:
            times, scores = [], None
            repeats = args.exact_repeats if "exact" in variant else args.repeats
            for _ in range(repeats):
                criterion = VARIANTS[variant](seed)
                if variant == "taylor2-group exact":
                    criterion.signed = True
                start = time.perf_counter()
                scores = criterion.group_scores(model, context.calibration, LOSS, context.fidelity_groups)
                times.append(time.perf_counter() - start)
            forms = [(variant, scores)]
            if variant == "taylor2-group exact":  # its signed form is the same computation (|ΔL̂| vs ΔL̂): reuse the run
                forms = [(variant, scores.abs()), ("taylor2-group exact signed", scores)]
            for name, values in forms:
                sampled = values[context.fidelity_index]
                f4 = rank_fidelity(sampled, context.fidelity_changes, 4)
                f8 = rank_fidelity(sampled, context.fidelity_changes, 8)
                row = {"model": model_name, "seed": seed, "variant": name, "signed": f4.signed, "abs": f4.abs,
                       "p4": f4.precision, "p8": f8.precision, "seconds": statistics.median(times),
                       "per_grad": statistics.median(times) / grad_s}
                rows.append(row)
                print(f"{model_name:9s} {seed} {name:24s} ρ={row['signed']:+.3f} ρ|·|={row['abs']:+.3f} "
                      f"P@4={row['p4']:.2f} P@8={row['p8']:.2f} cost={row['per_grad']:.1f}×", flush=True)
    print("\n| criterion | model | signed ρ | |ΔL| ρ | P@4 | P@8 | × gradient |\n|---|---|---|---|---|---|---|")
    for variant in dict.fromkeys(r["variant"] for r in rows):
        for model_name in args.models:
            sel = [r for r in rows if r["variant"] == variant and r["model"] == model_name]
            if sel:
                mean = {k: statistics.mean(r[k] for r in sel) for k in ("signed", "abs", "p4", "p8")}
                cost = statistics.median(r["per_grad"] for r in sel)
                print(f"| {variant} | {model_name} | {mean['signed']:+.3f} | {mean['abs']:+.3f} | {mean['p4']:.2f} "
                      f"| {mean['p8']:.2f} | {cost:.1f} |")
    if args.json:
        Path(args.json).write_text(json.dumps(rows, indent=1))


if __name__ == "__main__":
    main()
