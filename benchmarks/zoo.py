"""The model zoo: every torchvision classifier and one model of each major timm family, random init, at the smallest
input each accepts, pruned by a few criteria; or refused up front, with the reason. One row per (model, criterion).

    .venv/bin/python benchmarks/zoo.py --out /tmp/zoo                 # every model, default criteria
    .venv/bin/python benchmarks/zoo.py --out /tmp/zoo --models torchvision:resnet18 timm:resnet10t
    .venv/bin/python benchmarks/zoo.py --table /tmp/zoo               # the Markdown table of a finished run

Each model runs in its own process with a time limit, so that a hang or a model too large for memory costs one row,
not the run. A row says: pruned (output shape kept, forward and backward run, MACs as the record reports them
equal to an independent count), refused (an error that names the model before any pruning, e.g. a graph the
pruner cannot follow), failed (anything else: a defect), or timeout.
"""
from __future__ import annotations

import argparse
import json
import subprocess
import sys
import time
from pathlib import Path

CRITERIA = ("magnitude-l1", "taylor", "oba", "obd")
TIMM_FAMILIES = (
    "resnet10t", "resnext26ts", "regnetx_002", "regnety_002", "efficientnet_b0", "mobilenetv3_small_050",
    "mobilenetv4_conv_small", "mobilevit_xxs", "convnext_atto", "convnextv2_atto", "ghostnet_050", "densenet121",
    "dla34", "dpn48b", "hrnet_w18_small", "rexnet_100", "lcnet_050", "tinynet_e", "vgg11", "repvgg_a0",
    "levit_128s", "deit_tiny_patch16_224", "vit_tiny_patch16_224", "swin_tiny_patch4_window7_224",
    "efficientformer_l1", "poolformer_s12", "coatnet_nano_rw_224", "maxvit_nano_rw_256", "edgenext_xx_small",
    "fastvit_t8", "inception_v3", "xception41", "res2net50_14w_8s", "cspresnet50", "darknet17", "ese_vovnet19b_slim",
    "mixnet_s", "mnasnet_050", "hardcorenas_a", "fbnetc_100", "pit_ti_224", "cait_xxs24_224", "crossvit_tiny_240",
    "twins_svt_small", "tresnet_m", "nfnet_l0", "regnetz_005", "efficientvit_b0", "tiny_vit_5m_224",
)
SIZES = (32, 64, 96, 128, 160, 224, 256, 299)
"""Input sizes tried, smallest first: a model runs at the first one its forward accepts."""


def zoo_names() -> list[str]:
    """``torchvision:NAME`` for every classifier torchvision lists, then ``timm:NAME`` for each family above."""
    import torchvision

    return ([f"torchvision:{name}" for name in torchvision.models.list_models(module=torchvision.models)]
            + [f"timm:{name}" for name in TIMM_FAMILIES])


def _case(name: str, criteria: list[str]) -> list[dict]:
    """Build ``name`` at its smallest input, then prune a fresh copy with each criterion (runs in a child)."""
    import copy

    import torch
    from torch import nn

    import oba
    from oba._errors import UserError
    from oba.core.measure import count_macs

    torch.manual_seed(0)
    torch.set_num_threads(1)
    rows, started = [], time.perf_counter()
    try:
        model, size = _smallest(name)
    except Exception as err:  # a model that cannot be built or run at any size is refused, with the reason
        return [{"model": name, "criterion": c, "outcome": "refused", "why": _line(err), "size": None,
                 "seconds": time.perf_counter() - started} for c in criteria]
    example = torch.randn(1, 3, size, size)
    batches = [(torch.randn(2, 3, size, size), torch.randint(0, 10, (2,)))]
    dense = count_macs(model, example)
    for criterion in criteria:
        clock = time.perf_counter()
        row = {"model": name, "criterion": criterion, "size": size, "macs_dense": dense}
        try:
            pruned, record = oba.prune(copy.deepcopy(model), example, batches, nn.functional.cross_entropy, criterion,
                                       ratio=0.2, steps=1)
            out = pruned(torch.randn(2, 3, size, size))
            out.sum().backward()
            counted = count_macs(pruned.eval(), example)
            ok = out.shape == (2, 10) and counted == record.macs_pruned and counted < dense
            row.update(outcome="pruned" if ok else "failed", macs_pruned=counted,
                       why="" if ok else f"shape {tuple(out.shape)}, MACs {counted} vs record {record.macs_pruned}")
        except Exception as err:
            refused = isinstance(err, (NotImplementedError, UserError))
            row.update(outcome="refused" if refused else "failed", why=_line(err))
        row["seconds"] = time.perf_counter() - clock
        rows.append(row)
    return rows


def _smallest(name: str):
    """The model built for 10 classes and the smallest input size of :data:`SIZES` its forward accepts."""
    import torch

    import oba

    last: Exception | None = None
    for size in SIZES:
        try:
            model = oba.models.create(name, num_classes=10, in_chans=3, image_size=size).eval()
            with torch.no_grad():
                model(torch.randn(1, 3, size, size))
            return model, size
        except Exception as err:
            last = err
    raise RuntimeError(f"no input size of {SIZES} runs: {_line(last)}")


def _line(err: BaseException | None) -> str:
    text = str(err).strip().splitlines()
    return f"{type(err).__name__}: {text[0][:300] if text else ''}"


def run(names: list[str], criteria: list[str], out: Path, limit: float) -> None:
    """One child process per model; rows appended to ``out/rows.jsonl`` as each ends (a rerun skips done models)."""
    out.mkdir(parents=True, exist_ok=True)
    path = out / "rows.jsonl"
    done = {json.loads(line)["model"] for line in path.read_text().splitlines()} if path.exists() else set()
    for name in names:
        if name in done:
            continue
        started = time.perf_counter()
        try:
            child = subprocess.run([sys.executable, __file__, "--child", name, "--criteria", *criteria],
                                   capture_output=True, text=True, timeout=limit)
            rows = [json.loads(line) for line in child.stdout.splitlines() if line.startswith("{")]
            if not rows:
                tail = (child.stderr.strip().splitlines() or ["no output"])[-1]
                rows = [{"model": name, "criterion": c, "outcome": "failed", "why": f"exit {child.returncode}: {tail}"}
                        for c in criteria]
        except subprocess.TimeoutExpired:
            rows = [{"model": name, "criterion": c, "outcome": "timeout", "why": f"over {limit:g} s"} for c in criteria]
        for row in rows:
            row.setdefault("seconds", time.perf_counter() - started)
        with path.open("a") as sink:
            sink.writelines(json.dumps(row) + "\n" for row in rows)
        print(f"{name}: " + ", ".join(f"{r['criterion']} {r['outcome']}" for r in rows), flush=True)


def table(out: Path) -> str:
    """A Markdown table: model, input size, each criterion's outcome and seconds, and the first reason."""
    rows = [json.loads(line) for line in (out / "rows.jsonl").read_text().splitlines()]
    criteria = list(dict.fromkeys(r["criterion"] for r in rows))
    models = list(dict.fromkeys(r["model"] for r in rows))
    lines = ["| model | input | " + " | ".join(criteria) + " | why (first) |",
             "|---|---|" + "---|" * len(criteria) + "---|"]
    for model in models:
        own = {r["criterion"]: r for r in rows if r["model"] == model}
        cells = [f"{own[c]['outcome']} ({own[c]['seconds']:.1f} s)" if c in own else "" for c in criteria]
        why = next((own[c]["why"] for c in criteria if c in own and own[c].get("why")), "")
        size = next((own[c].get("size") for c in criteria if c in own and own[c].get("size")), "")
        lines.append(f"| {model} | {size} | " + " | ".join(cells) + f" | {why.replace('|', '/')} |")
    return "\n".join(lines)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--out", type=Path, help="folder for rows.jsonl")
    parser.add_argument("--models", nargs="*", help="models to run (default: the whole zoo)")
    parser.add_argument("--criteria", nargs="*", default=list(CRITERIA))
    parser.add_argument("--limit", type=float, default=600, help="seconds per model (default 600)")
    parser.add_argument("--table", type=Path, help="print the Markdown table of this finished run's folder")
    parser.add_argument("--child", help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.child:
        for row in _case(args.child, args.criteria):
            print(json.dumps(row), flush=True)
    elif args.table:
        print(table(args.table))
    else:
        run(args.models or zoo_names(), args.criteria, args.out, args.limit)


if __name__ == "__main__":
    main()
