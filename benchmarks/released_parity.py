"""oba-released and fastoba against the authors' released OBA and FastOBA scorers, on the same float64 models and batches.

The released scorer is NOT part of this repository: point ``--released`` at a checkout of the
authors' public code (NEU-REAL/OBA, whose folder holds ``torch_pruning/`` and ``modules/``; its
imports also need ``easydict``, ``thop`` and ``wandb`` importable, e.g. via ``--extra PATH``).
For each model and mode this script runs the authors' ``OBAPruner.obtain_importance`` on every
batch (their hooks, their passes, their delta 0) and their ``FastOBAPruner.obtain_importance``
(order 2, delta 1), reads their per-parameter accumulators (``group_importances[module]``)
and their channel scores (``estimate_importance``, normaliser ``max``), and compares them with
``oba-released`` and ``fastoba``:
the largest relative L2 difference per parameter tensor, and the Spearman correlation of
each coupled group's channel scores with ours (the ``released`` reduction), and the largest
difference of the channel scores once ours are divided as theirs are, by (max + 1e-6).

The authors' code ships its own ``torch_pruning`` package, which shadows the Torch-Pruning this
project uses, so their scorer runs in a child process of this script (``--worker``) and hands its
tensors back in a file read with ``weights_only=True``.

Usage: python benchmarks/released_parity.py --released /path/to/OBA [--extra /path/to/site] [--models ...]
"""
from __future__ import annotations

import argparse
import subprocess
import sys
import tempfile
from pathlib import Path

import torch
from torch.nn import functional as F

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "tests"))

from nets import ResidualCNN, SmallResNet, vgg_style  # noqa: E402

import oba.models  # noqa: E402


def models() -> dict[str, tuple]:
    return {
        "vgg-style": (lambda: vgg_style(in_chans=1, classes=10, widths=(4, 8)), (1, 16, 16)),
        "residual-cnn": (lambda: ResidualCNN(c=4, classes=10, in_chans=1), (1, 8, 8)),
        "small-resnet": (lambda: SmallResNet(classes=10, widths=(4, 8, 8), blocks=1), (3, 8, 8)),
        "resnet8": (lambda: oba.models.create("resnet8", 10, in_chans=1, image_size=8), (1, 8, 8)),
        "vgg-tiny": (lambda: oba.models.create("vgg-tiny", 10, in_chans=1, image_size=8), (1, 8, 8)),
    }


def read_pruner(pruner, model, bias_of) -> tuple[dict, dict]:
    """A released pruner's per-parameter scores (``bias_of(record)`` for a bias) and channel scores by root module."""
    names = {id(p): n for n, p in model.named_parameters()}
    module_names = {m: n for n, m in model.named_modules()}
    per_parameter = {}
    for module, record in pruner.group_importances.items():
        per_parameter[names[id(module.weight)]] = record["weight"] / record["count"]
        if module.bias is not None:
            per_parameter[names[id(module.bias)]] = bias_of(record)
    channels = {}
    for group in pruner.DG.get_all_groups(root_module_types=pruner.root_module_types, ignored_layers=pruner.ignored_layers):
        value = pruner.estimate_importance(group)
        if value is not None:
            channels[module_names[group[0].dep.target.module]] = value.double()
    return per_parameter, channels


def released_scores(tp, model, batches, mode):
    """The authors' OBA (delta 0): per-parameter accumulators and channel scores."""
    model.train(mode == "train")
    importance = tp.oba_importance.HessianImportance(normalizer="max", multivariable=True)
    pruner = tp.pruner.OBAPruner(model, batches[0][0], global_pruning=True, importance=importance, iterative_steps=1,
                                 pruning_ratio=0.5, delta=0.0)
    pruner.register_hooks()
    model.train(mode == "train")
    for x, y in batches:
        model.zero_grad()
        pruner.obtain_importance(F.cross_entropy(model(x), y))
    scores = read_pruner(pruner, model, lambda record: record["bias"] / record["count"])
    pruner.remove_hooks()
    return scores


def setting(name: str, mode: str, batches: int, batch_size: int) -> tuple[torch.nn.Module, list, dict]:
    """The float64 model (seed 0) and batches (seed 1) both processes score, and the model's initial state."""
    torch.set_default_dtype(torch.float64)
    build, shape = models()[name]
    torch.manual_seed(0)
    model = build().double()
    torch.manual_seed(1)
    data = [(torch.randn(batch_size, *shape), torch.randint(0, 10, (batch_size,))) for _ in range(batches)]
    return model, data, {k: v.clone() for k, v in model.state_dict().items()}


def released_fastoba_scores(tp, model, batches, mode):
    """The authors' FastOBA (order 2, delta 1): per-parameter scores and channel scores (biases kept per batch)."""
    model.train(mode == "train")
    importance = tp.fastoba_importance.FastOBAImportance(normalizer="max", multivariable=True)
    pruner = tp.pruner.FastOBAPruner(model, batches[0][0], global_pruning=True, importance=importance, iterative_steps=1,
                                     pruning_ratio=0.5, delta=1.0)
    pruner.init_target_parameters()
    model.train(mode == "train")
    for x, y in batches:
        model.zero_grad()
        pruner.obtain_importance(F.cross_entropy(model(x), y), 2)
    return read_pruner(pruner, model, lambda record: record["bias"].mean(0))


def worker(args: argparse.Namespace) -> int:
    """Child process: the authors' scores of one setting, saved to ``args.out``."""
    sys.path.insert(0, args.released)
    if args.extra:
        sys.path.append(args.extra)
    import torch_pruning as tp

    model, data, state = setting(args.models[0], args.mode, args.batches, args.batch_size)
    per_parameter, channels = released_scores(tp, model, data, args.mode)
    model.load_state_dict(state)
    fast_parameters, fast_channels = released_fastoba_scores(tp, model, data, args.mode)
    torch.save({"oba-released": (per_parameter, channels), "fastoba": (fast_parameters, fast_channels)}, args.out)
    return 0


def theirs_of(args: argparse.Namespace, name: str, mode: str) -> dict:
    with tempfile.TemporaryDirectory() as folder:
        out = Path(folder) / "released.pt"
        command = [sys.executable, __file__, "--worker", "--released", args.released, "--models", name, "--mode", mode,
                   "--batches", str(args.batches), "--batch-size", str(args.batch_size), "--out", str(out)]
        if args.extra:
            command += ["--extra", args.extra]
        subprocess.run(command, check=True, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        return torch.load(out, weights_only=True)


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--released", required=True, help="a checkout of the authors' OBA code")
    parser.add_argument("--extra", default=None, help="a folder with easydict, thop and wandb, when not installed")
    parser.add_argument("--models", nargs="+", default=list(models()))
    parser.add_argument("--batches", type=int, default=2)
    parser.add_argument("--batch-size", type=int, default=8)
    parser.add_argument("--worker", action="store_true", help=argparse.SUPPRESS)
    parser.add_argument("--mode", default="eval", help=argparse.SUPPRESS)
    parser.add_argument("--out", default="", help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.worker:
        return worker(args)
    from scipy.stats import spearmanr

    import oba.criteria as criteria
    from oba.pruning.dependency_groups import find_groups
    print("| criterion | model | mode | parameter tensors | worst relative L2 | worst absolute (tensors whose released "
          "norm < 1e-12) | groups | lowest channel Spearman | worst channel score difference (both / (max + 1e-6)) |")
    print("|---|---|---|---|---|---|---|---|---|")
    for name in args.models:
        for mode in ("eval", "train"):
            released = theirs_of(args, name, mode)
            for criterion_name, (theirs, their_channels) in released.items():
                model, batches, _ = setting(name, mode, args.batches, args.batch_size)
                criterion = criteria.get(criterion_name, mode=mode)
                ours = criterion.parameter_scores(model, batches, F.cross_entropy)
                relative, absolute = 0.0, 0.0
                for pname, tensor in theirs.items():
                    norm = float(tensor.norm())
                    difference = float((tensor - ours[pname]).norm())
                    if norm < 1e-12:
                        absolute = max(absolute, difference)
                    else:
                        relative = max(relative, difference / norm)
                _, groups = find_groups(model, batches[0][0][:1])
                units = [u for g in groups for u in g.units]
                unit_scores = criterion.group_scores(model, batches, F.cross_entropy, units)
                lowest, compared, start, channel_error = 1.0, 0, 0, 0.0
                for group in groups:
                    mine = unit_scores[start:start + len(group)]
                    start += len(group)
                    if group.name in their_channels and len(group) > 2:
                        released_channels = their_channels[group.name]
                        rho = spearmanr(mine.numpy(), released_channels.numpy()).statistic
                        lowest, compared = min(lowest, float(rho)), compared + 1
                        normalised = mine / (mine.max() + 1e-6)
                        channel_error = max(channel_error, float((normalised - released_channels).abs().max()))
                print(f"| {criterion_name} | {name} | {mode} | {len(theirs)} | {relative:.1e} | {absolute:.1e} | {compared} "
                      f"| {lowest:.6f} | {channel_error:.1e} |")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
