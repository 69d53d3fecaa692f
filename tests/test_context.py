"""Calibration and recalibration batches: fixed by the seed, disjoint, the same for every criterion."""
from __future__ import annotations

import pytest
import torch
from torch.utils.data import TensorDataset

from oba.suite.context import draw_batches


def _train(n: int = 50) -> TensorDataset:
    return TensorDataset(torch.arange(n, dtype=torch.float32)[:, None], torch.arange(n) % 10)


def test_batches_are_disjoint_seeded_and_cover_the_requested_counts() -> None:
    calibration, recalibration = draw_batches(_train(), (2, 3), 8, seed=4, device=torch.device("cpu"))
    assert [len(x) for x, _ in calibration] == [8, 8] and [len(x) for x, _ in recalibration] == [8, 8, 8]
    first = {int(v) for x, _ in calibration for v in x.flatten()}
    second = {int(v) for x, _ in recalibration for v in x.flatten()}
    assert len(first) == 16 and len(second) == 24 and not first & second
    for x, y in calibration + recalibration:
        assert torch.equal(y, x.flatten().long() % 10), "targets travel with their inputs"
    again = draw_batches(_train(), (2, 3), 8, seed=4, device=torch.device("cpu"))
    assert all(torch.equal(a[0], b[0]) for a, b in zip(calibration + recalibration, again[0] + again[1]))
    other = draw_batches(_train(), (2, 3), 8, seed=5, device=torch.device("cpu"))
    assert not torch.equal(calibration[0][0], other[0][0][0])


def test_a_small_split_wraps_around_and_zero_batches_is_empty() -> None:
    calibration, recalibration, none = draw_batches(_train(20), (2, 2, 0), 8, seed=0, device=torch.device("cpu"))
    assert [len(x) for x, _ in calibration] == [8, 8] and [len(x) for x, _ in recalibration] == [8, 8]
    assert none == []


def test_an_unstructured_cell_scores_its_sampled_weights_for_fidelity(tmp_path) -> None:
    """Unstructured cells cannot reuse unit scores from pruning: fidelity scores the sampled single weights."""
    import math

    from oba.suite.cell import run_cell
    from oba.suite.cells import expand
    from oba.suite.config import load_suite
    from suites import tiny_suite

    path = tiny_suite(tmp_path, criteria=("taylor",))
    path.write_text(path.read_text().replace("seeds = [0]", 'seeds = [0]\nstructures = ["unstructured"]', 1))
    (cell,) = expand(load_suite(path))
    assert cell.config["structure"] == "unstructured"
    row = run_cell(cell, cache_dir=str(tmp_path / "cache"))
    assert row["status"] == "ok", row.get("error")
    assert -1.0 <= row["fidelity"] <= 1.0 and not math.isnan(row["fidelity"])
    assert row["params_pruned"] < row["params_dense"] and 0.0 <= row["pruned_acc"] <= 1.0


SAMPLE = 24


def test_a_structured_cell_records_fidelity_to_signed_and_absolute_loss_changes_and_precision(tmp_path) -> None:
    """The row's fidelity columns, recomputed here from the context's sample: scipy's Spearman and brute-force P@k."""
    import json

    from scipy.stats import spearmanr

    from oba import criteria
    from oba.suite.cell import run_cell
    from oba.suite.cells import expand
    from oba.suite.config import load_suite
    from oba.suite.context import LOSS, dense_context
    from suites import tiny_suite

    path = tiny_suite(tmp_path, criteria=("taylor",), ratios=(0.5,))
    path.write_text(path.read_text().replace("fidelity_sample = 6", f"fidelity_sample = {SAMPLE}"))
    (cell,) = expand(load_suite(path))
    cache = str(tmp_path / "cache")
    row = run_cell(cell, cache_dir=cache)
    assert row["status"] == "ok", row.get("error")
    context = dense_context(cell, None, False, cache, torch.device("cpu"))
    scores = criteria.get("taylor", mode="eval").group_scores(
        context.fresh_model(), context.calibration, LOSS, context.fidelity_groups
    )
    sampled, changes = scores[context.fidelity_index].tolist(), context.fidelity_changes.tolist()
    assert len(set(sampled)) == len(set(changes)) == len(sampled) == SAMPLE, "brute-force P@k below assumes no ties"
    assert min(changes) < 0 < max(changes), "signed and absolute fidelity differ only when some ΔL < 0"
    assert row["fidelity"] == pytest.approx(spearmanr(sampled, changes).statistic, abs=1e-12)
    assert row["fidelity_abs"] == pytest.approx(spearmanr(sampled, [abs(c) for c in changes]).statistic, abs=1e-12)
    widths = json.loads(row["layer_widths"]) if isinstance(row["layer_widths"], str) else row["layer_widths"]
    removed = sum(w["dense"] - w["remaining"] for w in widths.values())  # one pruning step: step 1 is all of it
    dense = sum(w["dense"] for w in widths.values())
    k = max(1, int(SAMPLE * removed / dense + 0.5))

    def lowest(values: list[float]) -> set[int]:
        return set(sorted(range(SAMPLE), key=values.__getitem__)[:k])

    assert row["fidelity_k"] == k
    assert row["fidelity_precision"] == pytest.approx(len(lowest(sampled) & lowest(changes)) / k)
