"""Scoring cost of every registered criterion, next to Torch-Pruning's importances.

One subprocess per model builds the model and seeded random CIFAR-shaped
calibration batches (3×32×32, 10 classes, batches of 64), runs a warm-up
gradient pass, then walks through the methods, timing a plain gradient pass on
the same batches between consecutive methods. A method's ratio divides its
seconds by the mean of the gradient passes just before and just after it (same
process, same batches, interleaved; the data-free methods share their
neighbours' passes), once by wall-clock and once by process CPU time. Every
timing is the fastest of ``--repeats`` runs, the usual guard against other jobs
on a shared machine; workers default to ``OMP_WAIT_POLICY=PASSIVE`` because
spinning OpenMP threads slow down 10-40x whenever another process holds a core.
Memory: before each method freed heap is returned to the OS
(``malloc_trim``) and the kernel's peak-RSS mark is reset
(``/proc/self/clear_refs``, Linux); "extra peak" is the peak RSS during the
method minus the RSS before it (model, data and imports excluded). On a GPU it
is ``torch.cuda.max_memory_allocated`` growth instead.

Methods besides the criteria (which run with their defaults; ``taylor2-group`` runs
its probed form, ``probes=8``, on the model's Torch-Pruning units):
  gradient         one plain gradient pass (sanity row, ratio ≈ 1)
  hvp              one bare exact Hessian-vector product H θ per batch (double
                   backward): the floor of every exact second-order criterion
  reduce-groups    summing given per-parameter scores over every unit
                   (``reduce_groups``): the bookkeeping every group score pays
  tp-taylor        tp.importance.TaylorImportance over every Torch-Pruning group
  tp-hessian       tp.importance.HessianImportance: a per-sample backward loop
                   through the batch graph with accumulate_grad (1.6 keys its
                   accumulator inconsistently, so only the last sample's squared
                   gradient survives), then every group
  per-sample-loop  the obd Fisher diagonal by a plain loop of batch-of-one
                   backward passes (what obd computes with vmap)
The methods that loop over samples or probes (obd-hutchinson, taylor2-group,
tp-hessian, per-sample-loop, and obd again for comparison) run on the first
batch only (64 samples) against a one-batch gradient pass; the rest on all
batches. The vgg19 row checks obd's memory on a 20M-parameter model.

Usage: python benchmarks/scoring_cost.py [--threads 2] [--device cpu] [--timeout 1500] [--repeats 2] [--models ...] [--methods ...]
(resnet50 and vit_b_16 use 224² inputs, batches of 32, and are meant for ``--device cuda``)
"""
from __future__ import annotations

import argparse
import ctypes
import json
import os
import resource
import subprocess
import sys
import threading
import time
from dataclasses import dataclass
from typing import Any, Callable

import torch
import torch.nn.functional as F
from torch import nn

import oba.criteria as criteria
import oba.models
from oba.core.curvature import gradient, hvp
from oba.criteria.base import Batch, batch_loss, reduce_groups, scoring_context, trainable_parameters
from oba.pruning.dependency_groups import classifier_layer, find_groups


@dataclass(frozen=True)
class Setting:
    model: str
    batches: int
    batch_size: int = 64
    image_size: int = 32


SETTINGS = {
    "resnet32": Setting("resnet32", batches=4),
    "vit-tiny": Setting("vit-tiny", batches=4),
    "vgg19": Setting("vgg19", batches=1),
    "resnet50": Setting("resnet50", batches=2, batch_size=32, image_size=224),
    "vit_b_16": Setting("vit_b_16", batches=2, batch_size=32, image_size=224),
}
CPU_MODELS = ["resnet32", "vit-tiny", "vgg19"]
"""The default models; resnet50 and vit_b_16 (224² inputs) are meant for a GPU."""
PEER_METHODS = ["tp-taylor", "tp-hessian", "per-sample-loop"]


def make_batches(setting: Setting, device: torch.device) -> list[Batch]:
    generator = torch.Generator().manual_seed(0)
    return [
        (
            torch.randn(setting.batch_size, 3, setting.image_size, setting.image_size, generator=generator).to(device),
            torch.randint(0, 10, (setting.batch_size,), generator=generator).to(device),
        )
        for _ in range(setting.batches)
    ]


def gradient_pass(model: nn.Module, batches: list[Batch], loss_fn: nn.Module) -> None:
    params = list(trainable_parameters(model).values())
    for batch in batches:
        gradient(model, batch, loss_fn, params)


def tp_groups(model: nn.Module, example: torch.Tensor) -> list[Any]:
    import torch_pruning as tp

    dg = tp.DependencyGraph().build_dependency(model, example_inputs=example)
    head = classifier_layer(model, example)
    return list(dg.get_all_groups(ignored_layers=[head], root_module_types=(nn.modules.conv._ConvNd, nn.Linear)))


def prepare(method: str, model: nn.Module, batches: list[Batch], loss_fn: nn.Module) -> tuple[Callable[[], Any], dict]:
    """A zero-argument callable running ``method``; setup (group tracing) is done here, untimed."""
    if method == "gradient":
        return lambda: gradient_pass(model, batches, loss_fn), {}
    if method == "hvp":
        params = list(trainable_parameters(model).values())
        theta = [p.detach() for p in params]

        def bare_hvp() -> list[list[torch.Tensor]]:
            with scoring_context(model):  # the math attention kernel: fused ones have no double backward
                return [hvp(model, batch, loss_fn, params, theta) for batch in batches]

        return bare_hvp, {}
    if method == "reduce-groups":
        units = [u for g in find_groups(model, batches[0][0][:1])[1] for u in g.units]
        scores = {name: torch.rand_like(p) for name, p in trainable_parameters(model).items()}
        return lambda: reduce_groups(scores, units), {"groups": len(units)}
    if method == "taylor2-group":
        units = [u for g in find_groups(model, batches[0][0][:1])[1] for u in g.units]
        criterion = criteria.get("taylor2-group", probes=8)
        return lambda: criterion.group_scores(model, batches, loss_fn, units), {"groups": len(units), "probes": 8}
    if method in criteria.names():
        criterion = criteria.get(method)
        return lambda: criterion.parameter_scores(model, batches, loss_fn), {}
    if method == "per-sample-loop":
        params = list(trainable_parameters(model).values())

        def loop() -> list[torch.Tensor]:
            totals = [torch.zeros_like(p) for p in params]
            for x, y in batches:
                for n in range(len(y)):
                    grads = torch.autograd.grad(loss_fn(model(x[n : n + 1]), y[n : n + 1]), params)
                    for t, g in zip(totals, grads):
                        t.add_(g.square())
            return totals

        return loop, {}
    import torch_pruning as tp

    groups = tp_groups(model, batches[0][0][:1])
    if method == "tp-taylor":
        importance = tp.importance.TaylorImportance()

        def taylor() -> list[torch.Tensor]:
            model.zero_grad()
            for batch in batches:
                batch_loss(model, batch, loss_fn).backward()
            return [importance(g) for g in groups]

        return taylor, {"groups": len(groups)}
    if method == "tp-hessian":
        importance = tp.importance.HessianImportance()

        def hessian() -> list[torch.Tensor]:
            importance.zero_grad()
            for x, y in batches:
                for sample_loss in F.cross_entropy(model(x), y, reduction="none"):
                    model.zero_grad()
                    sample_loss.backward(retain_graph=True)
                    importance.accumulate_grad(model)
            return [importance(g) for g in groups]

        return hessian, {"groups": len(groups)}
    raise ValueError(f"unknown method {method!r}")


DATA_FREE = {"random", "magnitude-l1", "magnitude-l2"}
ONE_BATCH = ["obd", "obd-hutchinson", "taylor2-group", "tp-hessian", "per-sample-loop"]


def plan(model_name: str, device: torch.device) -> list[tuple[str, int]]:
    """(method, number of batches) in run order; data-free methods first (vgg19 on the CPU: obd's memory only)."""
    if model_name == "vgg19" and device.type == "cpu":
        return [("gradient", 1), ("obd", 1)]
    setting = SETTINGS[model_name]
    everything = ["gradient", "hvp", "reduce-groups", *criteria.names(), "tp-taylor"]
    full = sorted((m for m in everything if m not in ONE_BATCH), key=lambda m: m not in DATA_FREE)
    return [(m, setting.batches) for m in full] + [(m, 1) for m in ONE_BATCH]


class Memory:
    """Peak memory growth of one measured region (CPU: RSS high-water mark; GPU: allocator peak)."""

    def __init__(self, device: torch.device) -> None:
        self.device = device
        self.libc = ctypes.CDLL("libc.so.6") if device.type == "cpu" else None

    @staticmethod
    def _status_mb(field: str) -> float:
        with open("/proc/self/status") as status:
            for line in status:
                if line.startswith(field + ":"):
                    return int(line.split()[1]) / 1024
        raise RuntimeError(f"{field} missing from /proc/self/status")

    def start(self) -> None:
        if self.device.type == "cuda":
            torch.cuda.reset_peak_memory_stats(self.device)
            self.base = torch.cuda.memory_allocated(self.device) / 2**20
            return
        self.libc.malloc_trim(0)
        with open("/proc/self/clear_refs", "w") as refs:
            refs.write("5")
        self.base = self._status_mb("VmRSS")

    def extra_mb(self) -> float:
        if self.device.type == "cuda":
            return torch.cuda.max_memory_allocated(self.device) / 2**20 - self.base
        return self._status_mb("VmHWM") - self.base

    def peak_mb(self) -> float:
        if self.device.type == "cuda":
            return torch.cuda.max_memory_allocated(self.device) / 2**20
        return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024


def timed(fn: Callable[[], Any], device: torch.device, repeats: int) -> tuple[float, float]:
    """Fastest wall-clock and process CPU seconds of ``fn()`` over ``repeats`` runs (robust to other jobs)."""
    walls, cpus = [], []
    for _ in range(repeats):
        if device.type == "cuda":
            torch.cuda.synchronize(device)
        wall, cpu = time.perf_counter(), time.process_time()
        fn()
        if device.type == "cuda":
            torch.cuda.synchronize(device)
        walls.append(time.perf_counter() - wall)
        cpus.append(time.process_time() - cpu)
    return min(walls), min(cpus)


def worker(model_name: str, threads: int, device_name: str, methods: list[str] | None, repeats: int) -> None:
    """Measure every planned method on one model; print one JSON line per method as it finishes."""
    torch.set_num_threads(threads)
    device = torch.device(device_name)
    setting = SETTINGS[model_name]
    torch.manual_seed(0)
    model = oba.models.create(setting.model, num_classes=10, image_size=setting.image_size).to(device).eval()
    all_batches = make_batches(setting, device)
    loss_fn = nn.CrossEntropyLoss()
    memory = Memory(device)
    steps = [step for step in plan(model_name, device) if methods is None or step[0] in methods]
    gradient_pass(model, all_batches[:1], loss_fn)
    pending: dict | None = None
    for i, (method, count) in enumerate(steps):
        batches = all_batches[:count]
        if method not in DATA_FREE or i == 0:
            grad_seconds = timed(lambda: gradient_pass(model, batches, loss_fn), device, repeats)
            if pending is not None and pending["batches"] == count:
                pending["gradient_after"] = grad_seconds
                emit(pending)
                pending = None
        row = {"model": model_name, "method": method, "batches": count, "samples": count * setting.batch_size,
               "params": sum(p.numel() for p in model.parameters()), "gradient_before": grad_seconds}
        try:
            run, info = prepare(method, model, batches, loss_fn)
            memory.start()
            row["seconds"], row["cpu_seconds"] = timed(run, device, repeats)
            row.update(extra_peak_mb=memory.extra_mb(), peak_mb=memory.peak_mb(), **info)
            model.zero_grad(set_to_none=True)
        except Exception as err:  # one failing method must not hide the others' measurements
            row["error"] = f"{type(err).__name__}: {err}"[:160]
        if pending is not None:
            emit(pending)
        last_of_block = i == len(steps) - 1 or steps[i + 1][1] != count
        if last_of_block:
            row["gradient_after"] = timed(lambda: gradient_pass(model, batches, loss_fn), device, repeats)
            emit(row)
            pending = None
        else:
            pending = row


def emit(row: dict) -> None:
    """Print one measurement; the ratio uses the gradient passes around it."""
    before = row["gradient_before"]
    after = row.get("gradient_after", before)
    row["gradient_seconds"] = (before[0] + after[0]) / 2
    row["gradient_cpu_seconds"] = (before[1] + after[1]) / 2
    if "seconds" in row:
        row["ratio"] = row["seconds"] / row["gradient_seconds"]
        row["cpu_ratio"] = row["cpu_seconds"] / row["gradient_cpu_seconds"]
    print(json.dumps(row), flush=True)


def table_row(r: dict) -> str:
    notes = ", ".join(f"{k}={r[k]}" for k in ("groups", "probes") if k in r)
    if "error" in r:
        return f"| {r['model']} | {r['method']} | {r['samples']} | | | | | | error: {r['error']} |"
    return (
        f"| {r['model']} | {r['method']} | {r['samples']} | {r['seconds']:.2f} | {r['ratio']:.1f} | {r['cpu_ratio']:.1f} "
        f"| {r['extra_peak_mb']:.0f} | {r['peak_mb']:.0f} | {notes} |"
    )


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--device", default="cpu")
    parser.add_argument("--timeout", type=float, default=1500.0, help="seconds per model")
    parser.add_argument("--models", nargs="*", default=CPU_MODELS, choices=list(SETTINGS))
    parser.add_argument("--repeats", type=int, default=2, help="runs per timing; the fastest counts")
    parser.add_argument("--methods", nargs="*", default=None, help="only these methods (default: all)")
    parser.add_argument("--worker", metavar="MODEL", help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.worker:
        worker(args.worker, args.threads, args.device, args.methods, args.repeats)
        return
    env = {**os.environ}
    env.setdefault("OMP_WAIT_POLICY", "PASSIVE")
    print(
        f"threads={args.threads} device={args.device} repeats={args.repeats} "
        f"OMP_WAIT_POLICY={env['OMP_WAIT_POLICY']} torch={torch.__version__}"
    )
    print("| model | method | samples | seconds | × gradient (wall) | × gradient (CPU) | extra peak MB | peak MB | notes |")
    print("|---|---|---:|---:|---:|---:|---:|---:|---|")
    for model_name in args.models:
        command = [sys.executable, __file__, "--worker", model_name, "--threads", str(args.threads), "--device", args.device,
                   "--repeats", str(args.repeats)]
        if args.methods is not None:
            command += ["--methods", *args.methods]
        process = subprocess.Popen(command, stdout=subprocess.PIPE, text=True, env=env)
        timer = threading.Timer(args.timeout, process.kill)
        timer.start()
        assert process.stdout is not None
        for line in process.stdout:
            print(table_row(json.loads(line)), flush=True)
        timer.cancel()
        if process.wait() != 0:
            print(f"| {model_name} | (remaining methods) | | | | | | | stopped: exit {process.returncode} |", flush=True)


if __name__ == "__main__":
    main()
