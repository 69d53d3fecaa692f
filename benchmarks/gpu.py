"""The GPU check and benchmark: the CUDA path end to end, reproducible training, every criterion's cost.

Sections, each printing one JSON line per result (also appended to OUT/gpu.jsonl):

  environment   torch and CUDA versions, the GPU's name
  reproducible  the same dense training twice on CUDA gives identical weights (and another seed does not)
  cells         the cells of ``--suite`` (default suites/gpu-smoke.toml) through ``run_cell`` on CUDA,
                in-process without Ray, one model after the other in round robin, until ``--deadline``
                seconds have passed: status, accuracies, scoring time, fidelity, device
  scoring       benchmarks/scoring_cost.py on CUDA for vgg19, resnet32 (32², batches of 64) and
                resnet50, vit_b_16 (224², batches of 32): every criterion, a bare Hessian-vector
                product and ``reduce_groups`` against a gradient pass, and peak memory

Usage (from the repository root, on a machine with CUDA):

    python benchmarks/gpu.py --out /tmp/gpu [--cache DIR] [--deadline 200] [--scoring-timeout 50]
        [--sections ...] [--criteria ...] [--scoring-models ...]
"""
from __future__ import annotations

import argparse
import hashlib
import itertools
import json
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

import torch

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from oba import data, models  # noqa: E402
from oba.suite.cell import run_cell  # noqa: E402
from oba.suite.cells import expand  # noqa: E402
from oba.suite.config import load_suite  # noqa: E402
from oba.training.train import Recipe, train  # noqa: E402

SCORING_MODELS = ["vgg19", "resnet32", "resnet50", "vit_b_16"]


class Log:
    """Prints each result as a JSON line and appends it to OUT/gpu.jsonl."""

    def __init__(self, out: Path) -> None:
        out.mkdir(parents=True, exist_ok=True)
        self.path = out / "gpu.jsonl"

    def __call__(self, section: str, **fields: Any) -> None:
        line = json.dumps({"section": section, **fields}, default=str)
        print(line, flush=True)
        with self.path.open("a") as sink:
            sink.write(line + "\n")


def _digest(model: torch.nn.Module) -> str:
    digest = hashlib.sha256()
    for name, tensor in sorted(model.state_dict().items()):
        digest.update(name.encode())
        digest.update(tensor.detach().cpu().contiguous().numpy().tobytes())
    return digest.hexdigest()[:16]


def reproducible(log: Log, device: torch.device) -> None:
    """Train resnet32 for one epoch on generated data three times (seeds 0, 0, 1) and compare the weights."""
    splits = data.load("synthetic", num_classes=10, image_size=32, channels=3, n=1024)
    digests = []
    for seed in (0, 0, 1):
        torch.manual_seed(seed)
        model = models.create("resnet32", 10, 3, 32)
        start = time.perf_counter()
        result = train(model, splits, Recipe(epochs=1, batch_size=64, lr=0.05, seed=seed), device=device)
        digests.append(_digest(model))
        log("reproducible", seed=seed, digest=digests[-1], seconds=round(time.perf_counter() - start, 2),
            val_top1=result.val["top1"])
    log("reproducible", same_seed_identical=digests[0] == digests[1], other_seed_differs=digests[0] != digests[2])


def cells(
    log: Log, suite_path: str, cache: Path, deadline: float, device: torch.device, only: list[str] | None
) -> None:
    """Run the suite's cells (of the ``only`` criteria, when given) on ``device``, round robin over models,
    until ``deadline`` seconds have passed."""
    by_model: dict[str, list] = {}
    for cell in expand(load_suite(suite_path)):
        if only is None or cell.criterion in only:
            by_model.setdefault(cell.model, []).append(cell)
    order = [c for group in itertools.zip_longest(*by_model.values()) for c in group if c is not None]
    start = time.perf_counter()
    for done, cell in enumerate(order):
        if time.perf_counter() - start > deadline:
            log("cells", stopped_at_deadline=True, ran=done, of=len(order))
            return
        row = run_cell(cell, cache_dir=str(cache), device=device)
        keys = ("model", "criterion", "status", "dense_acc", "pruned_acc_raw", "pruned_acc", "final_acc",
                "macs_speedup", "latency_speedup", "scoring_seconds", "scoring_seconds_per_grad", "fidelity",
                "fidelity_abs", "fidelity_precision", "compute_seconds", "device")
        summary = {k: row.get(k) for k in keys}
        if row["status"] != "ok":
            summary["error"] = str(row.get("error", ""))[-600:]
        log("cells", **summary)
    log("cells", stopped_at_deadline=False, ran=len(order), of=len(order))


def scoring(log: Log, timeout: float, models_: list[str]) -> None:
    """benchmarks/scoring_cost.py on CUDA for ``models_``, its table rows passed through."""
    command = [sys.executable, str(ROOT / "benchmarks" / "scoring_cost.py"), "--device", "cuda", "--repeats", "3",
               "--timeout", str(timeout), "--models", *models_]
    done = subprocess.run(command, cwd=ROOT, capture_output=True, text=True)
    for line in done.stdout.splitlines():
        log("scoring", line=line)
    if done.returncode != 0:
        log("scoring", returncode=done.returncode, stderr=done.stderr[-2000:])


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--out", type=Path, required=True)
    parser.add_argument("--suite", default=str(ROOT / "suites" / "gpu-smoke.toml"))
    parser.add_argument("--cache", type=Path, default=Path("/tmp/oba-gpu-cache"), help="dense-checkpoint cache")
    parser.add_argument("--deadline", type=float, default=200.0, help="seconds for the cells section")
    parser.add_argument("--scoring-timeout", type=float, default=50.0, help="seconds per model in the scoring section")
    parser.add_argument("--sections", nargs="*", default=["environment", "reproducible", "cells", "scoring"])
    parser.add_argument("--device", default="cuda", help="cuda (the point); cpu only to try the script itself")
    parser.add_argument("--criteria", nargs="*", default=None, help="cells section: only these criteria")
    parser.add_argument("--scoring-models", nargs="*", default=SCORING_MODELS)
    args = parser.parse_args()
    device = torch.device(args.device)
    if device.type == "cuda" and not torch.cuda.is_available():
        print("benchmarks/gpu.py needs CUDA; none is available here", file=sys.stderr)
        return 2
    log = Log(args.out)
    for section in args.sections:
        start = time.perf_counter()
        try:
            if section == "environment":
                gpu = torch.cuda.get_device_name(device) if device.type == "cuda" else None
                log("environment", torch=torch.__version__, cuda=torch.version.cuda, gpu=gpu,
                    python=sys.version.split()[0])
            elif section == "reproducible":
                reproducible(log, device)
            elif section == "cells":
                cells(log, args.suite, args.cache, args.deadline, device, args.criteria)
            elif section == "scoring":
                scoring(log, args.scoring_timeout, args.scoring_models)
        except Exception as err:  # one broken section must not hide the others' results
            log(section, failed=f"{type(err).__name__}: {err}"[:2000])
        log(section, section_seconds=round(time.perf_counter() - start, 1))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
