"""Mutation testing of the regression checks: does ``oba snapshot check`` catch one-line changes to the criteria?

Each mutant below changes one line of a criterion or of the machinery under it. The working tree is frozen once
into a temporary folder; for the unmutated control and then every mutant, that frozen tree is copied into a fresh
temporary folder, the mutant's line is replaced there (its original text, indentation aside, must occur exactly
once in its file, or the script stops: a mutant never goes stale silently), and ``oba snapshot check --baseline
results/reference/snapshot`` runs in the copy; its exit code, the criteria it names as moved and its wall time are
tabulated. Mutants of kind ``scores`` change what a criterion scores (or how its scores are normalised and ranked):
the snapshot check must catch each (exit 1, naming criteria). Mutants of kind ``outcome`` change only what happens
after scoring; ``--outcome`` also runs the CI regression gate (``oba run suites/ci.toml`` without network, then
``oba check`` against ``results/reference/smoke``) on them.

Usage::

    .venv/bin/python benchmarks/mutants.py [--only ID ...] [--outcome] [--out FILE]

The table goes to stdout (and ``--out FILE``), progress to stderr. Exit 1 when the control fails or a ``scores``
mutant is not caught.

Isolation: a copy holds the files ``git ls-files -co --exclude-standard`` lists (tracked and untracked, nothing
ignored: no ``__pycache__``, ``.venv`` or results but the committed references, which must be listed). The venv's
interpreter runs in it with ``PYTHONPATH`` = cwd = the copy, so ``oba`` comes from the copy's
``sys.path`` entry before the editable install's finder (appended to ``sys.meta_path``) could map them to this
checkout; each copy imports both and the script stops unless their files lie inside it.
"""
from __future__ import annotations

import argparse
import os
import re
import shlex
import shutil
import signal
import subprocess
import sys
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
PYTHON = str(ROOT / ".venv" / "bin" / "python")
SNAPSHOT = "results/reference/snapshot"
GATE_BASELINE = "results/reference/smoke"
REQUIRED = ("fixtures/dense/", f"{SNAPSHOT}/snapshot.json", f"{SNAPSHOT}/scores.safetensors")


@dataclass(frozen=True)
class Mutant:
    """A one-line change: ``original`` (the line's text without indentation) becomes ``replacement`` in ``file``."""

    id: str
    file: str
    original: str
    replacement: str
    description: str
    kind: str = "scores"

    def __post_init__(self) -> None:
        if self.kind not in ("scores", "outcome"):
            raise ValueError(f"mutant {self.id}: kind must be 'scores' or 'outcome', not {self.kind!r}")


MUTANTS = (
    Mutant("oba-no-curvature", "oba/criteria/oba.py",
           "totals[name].add_(theta * hv + self.delta * grads[name] * theta)",
           "totals[name].add_(self.delta * grads[name] * theta)", "OBA without its Hessian term θ ⊙ H_P θ."),
    Mutant("taylor2-no-second-order", "oba/criteria/taylor2.py",
           "return theta_hvp_sums(model, batches, loss_fn, self.mode, lambda t, g, ht: 0.5 * t * ht - g * t)",
           "return theta_hvp_sums(model, batches, loss_fn, self.mode, lambda t, g, ht: -g * t)",
           "taylor2 without its second-order term ½ θ ⊙ Hθ."),
    Mutant("taylor-sign", "oba/criteria/taylor.py", "total.sub_(g * p.detach())", "total.add_(g * p.detach())",
           "taylor scores +g θ instead of −g θ."),
    Mutant("taylor2-group-probe-sign", "oba/criteria/taylor2_group.py",
           "linear = layout.sums({n: -g * theta[n] for n, g in zip(named, grads) if n in members})",
           "linear = layout.sums({n: g * theta[n] for n, g in zip(named, grads) if n in members})",
           "Probed taylor2-group adds +gᵀθ_G instead of −gᵀθ_G."),
    Mutant("fisher-square-after-sum", "oba/core/curvature.py", "totals[n].add_(g.square().sum(0))",
           "totals[n].add_(g.sum(0).square())", "Empirical Fisher diagonal from (Σ_n g_n)² per chunk, not Σ_n g_n²."),
    Mutant("fisher-per-batch", "oba/core/curvature.py", "count += batch[1].shape[0]", "count += 1",
           "Fisher sums averaged over batches instead of samples."),
    Mutant("hvp-skip-batch", "oba/criteria/taylor2.py", "for batch in batches:", "for batch in batches[1:]:",
           "The shared θ ⊙ Hθ helper (taylor2, fastoba) skips the first calibration batch."),
    Mutant("kfac-damping-x10", "oba/criteria/kfac.py",
           "return damping * a.diagonal().mean() * g.diagonal().mean()",
           "return 10 * damping * a.diagonal().mean() * g.diagonal().mean()", "K-FAC damping λ ten times larger."),
    Mutant("kfac-obs-update-sign", "oba/criteria/kfac.py",
           "coupling = g @ weight.masked_fill(keep, 0) @ a  # H_KS w_S on K (λI does not couple K and S)",
           "coupling = -(g @ weight.masked_fill(keep, 0) @ a)", "K-FAC OBS compensation applied with the wrong sign."),
    Mutant("released-reduction-no-bias", "oba/criteria/reduction.py",
           "return _member_mean(model, scores, groups, signed, with_bias=True)",
           "return _member_mean(model, scores, groups, signed, with_bias=False)",
           "The released reduction leaves output biases out (becomes released-weights)."),
    Mutant("mean-normaliser-max", "oba/pruning/allocation.py", '"mean": lambda s: s.mean(),',
           '"mean": lambda s: s.max(),', "The mean normaliser divides by the layer's maximum."),
    Mutant("released-max-epsilon", "oba/pruning/allocation.py", '"released-max": lambda s: s.max() + 1e-6,',
           '"released-max": lambda s: s.max() + 1e-3,', "released-max adds 1e-3 to the maximum instead of 1e-6."),
    Mutant("hutchinson-probe-count", "oba/criteria/obd.py",
           "probes = (rademacher_like(params, generator) for _ in range(self.k))",
           "probes = (rademacher_like(params, generator) for _ in range(self.k - 1))",
           "obd-hutchinson draws k − 1 probes per batch but still divides by k."),
    Mutant("oba-released-no-repeat", "oba/criteria/oba.py", "repeat_after_residual = True",
           "repeat_after_residual = False", "oba-released counts layers after a residual addition once."),
    Mutant("skip-bn-recalibration", "oba/core/recalibration.py", "layers = batchnorm_layers(model)", "return 0",
           "recalibrate_batchnorm returns at once: pruned models keep stale running statistics.", "outcome"),
    Mutant("global-allocation-highest-first", "oba/pruning/allocation.py",
           "candidates += [(float(st.scores[i]), name, i) for i in range(len(st.scores))]",
           "candidates += [(-float(st.scores[i]), name, i) for i in range(len(st.scores))]",
           "The global allocation removes the highest normalised scores first.", "outcome"),
)


@dataclass
class Result:
    """One run: the snapshot check's exit code, the criteria it named as moved, its wall time, the gate's exit."""

    mutant: Mutant | None
    snapshot: int
    moved: list[str]
    seconds: float
    gate: str = ""

    @property
    def caught(self) -> bool:
        """The snapshot check named some criterion as moved (exit 1 from a crash names none)."""
        return self.snapshot == 1 and bool(self.moved)


def mutated(mutant: Mutant, text: str) -> str:
    """``text`` with the mutant's line replaced (indentation kept); raises unless the line occurs exactly once."""
    lines = text.splitlines(keepends=True)
    hits = [i for i, line in enumerate(lines) if line.strip() == mutant.original]
    if len(hits) != 1:
        raise SystemExit(f"mutant {mutant.id}: its line occurs {len(hits)} times in {mutant.file}, not once "
                         f"(update the mutant): {mutant.original!r}")
    line = lines[hits[0]]
    indent, ending = line[:len(line) - len(line.lstrip())], line[len(line.rstrip("\r\n")):]
    lines[hits[0]] = indent + mutant.replacement + ending
    compile("".join(lines), mutant.file, "exec")  # a mutant must still parse
    return "".join(lines)


def tree_files(required: tuple[str, ...]) -> list[str]:
    """The files a copy holds: tracked and untracked, nothing ignored; ``required`` (files, or folders ending
    in ``/``) must be among them."""
    out = subprocess.run(["git", "-C", str(ROOT), "ls-files", "-co", "--exclude-standard", "-z"],
                         check=True, capture_output=True, text=True).stdout
    files = [f for f in out.split("\0") if f and (ROOT / f).is_file()]
    missing = [r for r in required if not any(f == r or (r.endswith("/") and f.startswith(r)) for f in files)]
    if missing:
        raise SystemExit(f"the copy would lack {', '.join(missing)} (ignored by git, or absent?)")
    return files


def copy_files(source: Path, files: list[str], target: Path) -> None:
    """Copy ``files`` (relative paths) from ``source`` into ``target``."""
    for name in files:
        (target / name).parent.mkdir(parents=True, exist_ok=True)
        shutil.copy2(source / name, target / name)


def make_copy(base: Path, files: list[str], target: Path, mutant: Mutant | None) -> None:
    """Copy the tree ``base`` into ``target``, apply ``mutant`` there, and check that Python imports the copy's
    packages."""
    copy_files(base, files, target)
    if mutant is not None:
        path = target / mutant.file
        path.write_text(mutated(mutant, path.read_text(encoding="utf-8")), encoding="utf-8")
    imported = subprocess.run([PYTHON, "-c", "import oba; print(oba.__file__)"],
                              cwd=target, env=environment(target), check=True, capture_output=True, text=True)
    for module_file in imported.stdout.splitlines():
        if not Path(module_file).resolve().is_relative_to(target.resolve()):
            raise SystemExit(f"the copy in {target} imports {module_file}: not isolated")


def environment(copy: Path) -> dict[str, str]:
    """The environment of every command run in ``copy``."""
    return {**os.environ, "PYTHONPATH": str(copy), "RAY_USAGE_STATS_ENABLED": "0"}


def oba_command(copy: Path, *args: str) -> subprocess.CompletedProcess[str]:
    """``python -m oba.cli ARGS`` with cwd = ``copy`` (output captured)."""
    return subprocess.run([PYTHON, "-m", "oba.cli", *args], cwd=copy, env=environment(copy), capture_output=True,
                          text=True)


def snapshot_check(copy: Path) -> tuple[int, list[str], float]:
    """Exit code, criteria named as moved, and wall time of ``oba snapshot check`` in ``copy``."""
    start = time.perf_counter()
    done = oba_command(copy, "snapshot", "check", "--baseline", SNAPSHOT)
    seconds = time.perf_counter() - start
    found = re.search(r"^\d+ criterion\(s\) moved: (.*)$", done.stdout, re.MULTILINE)
    if done.returncode != 0 and not found:
        print(done.stdout[-2000:], done.stderr[-2000:], sep="\n", file=sys.stderr)
    return done.returncode, found.group(1).split(", ") if found else [], seconds


def gate(copy: Path) -> str:
    """Exit code of the CI regression gate in ``copy``: ``oba run suites/ci.toml`` offline, then ``oba check``."""
    with tempfile.TemporaryDirectory(prefix="mutant-gate-") as scratch:
        results, cache = Path(scratch) / "results", Path(scratch) / "cache"
        command = shlex.join([PYTHON, "-m", "oba.cli", "run", "suites/ci.toml", "--results", str(results),
                              "--cache", str(cache)])
        run = subprocess.run(["unshare", "-n", "sh", "-c", f"ip link set lo up && exec {command}"],
                             cwd=copy, env=environment(copy), capture_output=True, text=True)
        if run.returncode != 0:
            print(run.stdout[-2000:], run.stderr[-2000:], sep="\n", file=sys.stderr)
            return f"run failed ({run.returncode})"
        check = oba_command(copy, "check", str(results), "--baseline", GATE_BASELINE,
                            "--suite", "suites/ci.toml")
        return str(check.returncode)


def run_one(base: Path, files: list[str], mutant: Mutant | None, with_gate: bool) -> Result:
    """Copy the tree, mutate it, run the snapshot check (and, for an outcome mutant, the gate)."""
    with tempfile.TemporaryDirectory(prefix="mutant-") as folder:
        copy = Path(folder)
        make_copy(base, files, copy, mutant)
        code, moved, seconds = snapshot_check(copy)
        result = Result(mutant, code, moved, seconds)
        if with_gate and mutant is not None and mutant.kind == "outcome":
            result.gate = gate(copy)
    return result


def table(results: list[Result], with_gate: bool) -> str:
    """The markdown table of ``results`` and the summary line."""
    head = ["mutant", "file", "description", "kind", "snapshot exit", "criteria moved", "time (s)"]
    head += ["gate exit"] if with_gate else []
    lines = ["| " + " | ".join(head) + " |", "|" + "---|" * len(head)]
    for r in results:
        m = r.mutant
        row = [m.id, f"`{m.file}`", m.description, m.kind] if m else ["control", "-", "unmutated copy", "-"]
        row += [str(r.snapshot), ", ".join(r.moved) or "-", f"{r.seconds:.0f}"]
        row += [r.gate or "-"] if with_gate else []
        lines.append("| " + " | ".join(row) + " |")
    scores = [r for r in results if r.mutant and r.mutant.kind == "scores"]
    caught = sum(r.caught for r in scores)
    return "\n".join(lines) + f"\n\nsnapshot check caught {caught} of {len(scores)} score-changing mutants\n"


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--only", nargs="+", metavar="ID", help="run only these mutants (by id)")
    parser.add_argument("--outcome", action="store_true", help="also run the CI gate on outcome mutants")
    parser.add_argument("--out", type=Path, help="also write the table to this file")
    args = parser.parse_args(argv)
    signal.signal(signal.SIGTERM, lambda *_: sys.exit(143))  # a terminated run still removes its temporary copies
    unknown = set(args.only or ()) - {m.id for m in MUTANTS}
    if unknown:
        parser.error(f"unknown mutant(s) {', '.join(sorted(unknown))}; known: {', '.join(m.id for m in MUTANTS)}")
    chosen = [m for m in MUTANTS if not args.only or m.id in args.only]
    for mutant in chosen:  # fail before any run when a mutant has gone stale
        mutated(mutant, (ROOT / mutant.file).read_text(encoding="utf-8"))
    files = tree_files(REQUIRED + ((GATE_BASELINE + "/",) if args.outcome else ()))
    results = []
    with tempfile.TemporaryDirectory(prefix="mutant-base-") as folder:
        base = Path(folder)  # the tree frozen once, so that edits made while the runs go on reach no copy
        copy_files(ROOT, files, base)
        for mutant in [None, *chosen]:
            results.append(run_one(base, files, mutant, args.outcome))
            r = results[-1]
            print(f"{mutant.id if mutant else 'control'}: snapshot exit {r.snapshot}, moved {', '.join(r.moved) or '-'}"
                  f", {r.seconds:.0f} s{', gate ' + r.gate if r.gate else ''}", file=sys.stderr, flush=True)
    text = table(results, args.outcome)
    print(text, end="")
    if args.out:
        args.out.write_text(text, encoding="utf-8")
    control_ok = results[0].snapshot == 0
    missed = [r for r in results[1:] if r.mutant.kind == "scores" and not r.caught]
    return 0 if control_ok and not missed else 1


if __name__ == "__main__":
    sys.exit(main())
