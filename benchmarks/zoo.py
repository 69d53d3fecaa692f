"""The model zoo: every torchvision classifier and one model of each major timm family, random init, at the smallest
input each accepts, pruned by a few criteria; or refused up front, with the reason. One row per (model, criterion).

    .venv/bin/python benchmarks/zoo.py --out /tmp/zoo --jobs 2        # every model, default criteria, 2 at a time
    .venv/bin/python benchmarks/zoo.py --out /tmp/zoo --models torchvision:resnet18 timm:resnet10t
    .venv/bin/python benchmarks/zoo.py --out /tmp/tp --criteria torch-pruning --models torchvision:swin_t
    .venv/bin/python benchmarks/zoo.py --table /tmp/zoo /tmp/tp       # the Markdown table of finished runs

Each model runs in its own process with a time limit, so that a hang or a model too large for memory costs one row,
not the run. A row says: pruned (output shape kept, forward and backward run, MACs as the record reports them
equal to an independent count), refused (an error that names the model before any pruning, e.g. a graph the
pruner cannot follow), failed (anything else: a defect), or timeout. The criterion ``torch-pruning`` is
Torch-Pruning's own MetaPruner on the same model (its MACs are only counted), to compare what each prunes.
"""
from __future__ import annotations

import argparse
import json
import resource
import subprocess
import sys
import time
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

CRITERIA = ("magnitude-l1", "taylor", "oba", "obd")
TORCH_PRUNING = "torch-pruning"
"""A pseudo-criterion: Torch-Pruning's own MetaPruner on the same model, for comparison."""
FIRST_ORDER = ("magnitude-l1", "magnitude-l2", "random", TORCH_PRUNING)
"""Criteria run on models above :data:`oba.models.zoo.LARGE_MODEL_PARAMETERS` too (no Hessian-vector products)."""


def _case(name: str, criteria: list[str]) -> Iterator[dict]:
    """Build ``name`` at its smallest input and probe it as a suite's preflight does (one unit of every group removed,
    then a forward); if the probe passes, prune a freshly built model with each criterion (runs in a child). Rows are
    yielded as they are made, so a child stopped by the time limit keeps those it finished."""
    import torch
    from torch import nn

    import oba
    from oba._errors import UserError
    from oba.core.measure import count_macs, count_params
    from oba.models.zoo import LARGE_MODEL_PARAMETERS, at_smallest_input
    from oba.pruning.probe import pruning_problem

    torch.manual_seed(0)
    torch.set_num_threads(1)
    started = time.perf_counter()
    try:
        built = at_smallest_input(name)
    except Exception as err:  # a model that cannot be built or run at any size is refused, with the reason
        for c in criteria:
            yield {"model": name, "criterion": c, "outcome": "refused", "why": _line(err), "size": None,
                   "seconds": time.perf_counter() - started}
        return
    size, build_seconds = built.size, time.perf_counter() - started
    example = torch.randn(1, 3, size, size)
    batches = [(torch.randn(2, 3, size, size), torch.randint(0, 10, (2,)))]
    dense = count_macs(built.model, example)
    clock = time.perf_counter()
    problem = pruning_problem(built.model, example)
    probe_seconds = time.perf_counter() - clock
    del built
    for criterion in criteria:
        row = {"model": name, "criterion": criterion, "size": size, "macs_dense": dense, "build_seconds": build_seconds,
               "probe_seconds": probe_seconds}
        if problem is not None and criterion != TORCH_PRUNING:
            yield {**row, "outcome": "refused", "why": problem, "seconds": probe_seconds}
            continue
        torch.manual_seed(0)
        model = oba.models.create(name, 10, in_chans=3, image_size=size).eval()
        if criterion not in FIRST_ORDER and count_params(model) > LARGE_MODEL_PARAMETERS:
            yield {**row, "outcome": "skipped", "why": f"over {LARGE_MODEL_PARAMETERS:,} parameters", "seconds": 0}
            continue
        clock = time.perf_counter()
        try:
            if criterion == TORCH_PRUNING:
                pruned, reported = _torch_pruning(model, example), None
            else:
                pruned, record = oba.prune(model, example, batches, nn.functional.cross_entropy, criterion,
                                           ratio=0.2, steps=1)
                reported = record.macs_pruned
            out = pruned(torch.randn(2, 3, size, size))
            out.sum().backward()
            counted = count_macs(pruned.eval(), example)
            ok = out.shape == (2, 10) and counted == (reported or counted) and counted < dense
            row.update(outcome="pruned" if ok else "failed", macs_pruned=counted,
                       why="" if ok else f"shape {tuple(out.shape)}, MACs {counted} vs record {reported}")
        except Exception as err:
            refused = isinstance(err, (NotImplementedError, UserError))
            row.update(outcome="refused" if refused else "failed", why=_line(err))
        row["seconds"] = time.perf_counter() - clock
        del model
        yield row


def _torch_pruning(model, example):
    """Torch-Pruning's own ``MetaPruner`` with L1 magnitude, 20 % of every layer's channels, the 10-way head kept."""
    import torch_pruning as tp
    from torch import nn

    heads = [m for m in model.modules() if (isinstance(m, nn.Linear) and m.out_features == 10)
             or (isinstance(m, nn.Conv2d) and m.out_channels == 10)]
    pruner = tp.pruner.MetaPruner(model, example, importance=tp.importance.MagnitudeImportance(p=1), pruning_ratio=0.2,
                                  ignored_layers=heads)
    pruner.step()
    return model


def _line(err: BaseException | None) -> str:
    text = str(err).strip().splitlines()
    return f"{type(err).__name__}: {text[0][:300] if text else ''}"


def _model_rows(name: str, criteria: list[str], limit: float, memory_gb: float) -> list[dict]:
    """The rows of one model, from a child process with ``limit`` seconds and ``memory_gb`` of address space."""
    def cap_memory() -> None:
        size = int(memory_gb * 2**30)
        resource.setrlimit(resource.RLIMIT_AS, (size, size))

    started = time.perf_counter()
    try:
        child = subprocess.run([sys.executable, __file__, "--child", name, "--criteria", *criteria],
                               capture_output=True, text=True, timeout=limit, preexec_fn=cap_memory)
        rows = [json.loads(line) for line in child.stdout.splitlines() if line.startswith("{")]
        if not rows:
            tail = (child.stderr.strip().splitlines() or ["no output"])[-1]
            rows = [{"model": name, "criterion": c, "outcome": "failed", "why": f"exit {child.returncode}: {tail}"}
                    for c in criteria]
    except subprocess.TimeoutExpired as stopped:
        partial = stopped.stdout.decode() if isinstance(stopped.stdout, bytes) else stopped.stdout or ""
        rows = [json.loads(line) for line in partial.splitlines() if line.startswith("{")]
        done = {row["criterion"] for row in rows}
        rows += [{"model": name, "criterion": c, "outcome": "timeout", "why": f"over {limit:g} s"}
                 for c in criteria if c not in done]
    for row in rows:
        row.setdefault("seconds", time.perf_counter() - started)
    return rows


def run(names: list[str], criteria: list[str], out: Path, limit: float, jobs: int, memory_gb: float) -> None:
    """One child process per model, ``jobs`` at a time; rows appended to ``out/rows.jsonl`` as each model ends (a
    rerun skips models already there)."""
    out.mkdir(parents=True, exist_ok=True)
    path = out / "rows.jsonl"
    done = {json.loads(line)["model"] for line in path.read_text().splitlines()} if path.exists() else set()
    todo = [name for name in names if name not in done]
    with ThreadPoolExecutor(jobs) as pool:
        for name, rows in zip(todo, pool.map(lambda n: _model_rows(n, criteria, limit, memory_gb), todo)):
            with path.open("a") as sink:
                sink.writelines(json.dumps(row) + "\n" for row in rows)
            print(f"{name}: " + ", ".join(f"{r['criterion']} {r['outcome']}" for r in rows), flush=True)


def table(outs: list[Path]) -> str:
    """A Markdown table of one or more runs' rows (merged per model and criterion): model, input size, the probe's
    outcome, each criterion's outcome and seconds, and why (the documented reason for a refusal,
    :data:`oba.models.zoo.REFUSALS`; the error otherwise)."""
    from oba.models.zoo import REFUSALS

    rows = [json.loads(line) for out in outs for line in (out / "rows.jsonl").read_text().splitlines()]
    criteria = list(dict.fromkeys(r["criterion"] for r in rows))
    models = list(dict.fromkeys(r["model"] for r in rows))
    lines = ["| model | input | probe | " + " | ".join(criteria) + " | why |",
             "|---|---|---|" + "---|" * len(criteria) + "---|"]
    for model in models:
        own = {r["criterion"]: r for r in rows if r["model"] == model}
        first = next(iter(own.values()))
        refused = any(r["outcome"] == "refused" for c, r in own.items() if c != TORCH_PRUNING)
        probe = f"{'refused' if refused else 'passed'} ({first['probe_seconds']:.1f} s)" if "probe_seconds" in first \
            else "not run"
        cells = [_cell(own[c]) if c in own else "" for c in criteria]
        why = REFUSALS[model].why if refused and model in REFUSALS else next(
            (f"{c}: {own[c]['why']}" for c in criteria if c in own and own[c]["outcome"] not in ("pruned", "skipped")),
            "")
        lines.append(f"| `{model}` | {first.get('size') or ''} | {probe} | " + " | ".join(cells)
                     + f" | {why.replace('|', '/')} |")
    return "\n".join(lines)


def _cell(row: dict) -> str:
    if row["outcome"] in ("pruned", "failed", "timeout"):
        return f"{row['outcome']} ({row['seconds']:.1f} s)"
    return row["outcome"]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--out", type=Path, help="folder for rows.jsonl")
    parser.add_argument("--models", nargs="*", help="models to run (default: the whole zoo)")
    parser.add_argument("--criteria", nargs="*", default=list(CRITERIA))
    parser.add_argument("--limit", type=float, default=600, help="seconds per model (default 600)")
    parser.add_argument("--jobs", type=int, default=1, help="models run at once (default 1)")
    parser.add_argument("--memory-gb", type=float, default=16, help="address space per model's process (default 16)")
    parser.add_argument("--table", type=Path, nargs="+", help="print the Markdown table of these finished runs' folders")
    parser.add_argument("--child", help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.child:
        for row in _case(args.child, args.criteria):
            print(json.dumps(row), flush=True)
    elif args.table:
        print(table(args.table))
    else:
        from oba.models.zoo import zoo_names

        run(args.models or zoo_names(), args.criteria, args.out, args.limit, args.jobs, args.memory_gb)


if __name__ == "__main__":
    main()
