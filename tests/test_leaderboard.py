"""Leaderboard ranks against ranks derived by hand from small tables.

Tie rule under test (oba.report.leaderboard): with n ≥ 2 shared seeds, A and B
tie when d̄ ± t(0.975, n−1)·s_d/√n contains 0; with 3 seeds t(0.975, 2) = 4.3027.
With fewer than 2 shared seeds they tie when they differ by < 0.5 points.
"""
from __future__ import annotations

import math
import re
from pathlib import Path

import pandas as pd
import pytest
from results_fixtures import error_row, row, write_store

from oba.report import load_results, write_leaderboard
from oba.report.band import Band, MetricBand, SettingBand, setting_key
from oba.report.leaderboard import METHOD, render_markdown
from oba.report.ranking import boards, compare, overall


def _rows(accuracies: dict[str, list[float]], ratio: float = 0.5) -> list[dict]:
    """One ok row per (criterion, seed); accuracies in percent, seeds 0, 1, 2..."""
    return [
        row(criterion=name, ratio=ratio, seed=seed, final_acc=value / 100)
        for name, values in accuracies.items()
        for seed, value in enumerate(values)
    ]


# Board 1 (3 seeds). Means: A 91.000, B 90.833, C 89.000, D 88.933.
# A−B per seed: 0.2, −0.1, 0.4 → d̄ 0.1667, s_d 0.2517, half-width 4.3027·0.2517/√3 = 0.625
#   → [−0.459, 0.792] contains 0 → B ties with leader A: both "=1".
# A−C per seed: 1.9, 2.1, 2.0 → d̄ 2.0, s_d 0.1, half 0.248 → [1.75, 2.25] excludes 0 → C leads a new group, rank 3.
# C−D per seed: 0.2, −0.3, 0.3 → d̄ 0.0667, s_d 0.3215, half 0.799 → contains 0 → D ties with C: both "=3".
# Sample standard deviations over seeds: A 1.00, B 0.93.
BOARD_ONE = {
    "A": [90.0, 91.0, 92.0],
    "B": [89.8, 91.1, 91.6],
    "C": [88.1, 88.9, 90.0],
    "D": [87.9, 89.2, 89.7],
}
# Board 2 (one seed, ratio 0.7). C 90.6, A 90.0, B 88.0; E failed.
# C−A = 0.6 ≥ 0.5 → not tied: C rank 1. A leads the next group; A−B = 2.0 → B rank 3. E unranked.
BOARD_TWO = {"C": [90.6], "A": [90.0], "B": [88.0]}


def _ranks(board) -> dict[str, str]:
    return {entry.criterion: entry.rank_label for entry in board.entries}


def test_tie_and_clear_order_on_three_seeds() -> None:
    (board,) = boards(load_results(pd.DataFrame(_rows(BOARD_ONE))))
    assert _ranks(board) == {"A": "=1", "B": "=1", "C": "=3", "D": "=3"}
    assert [e.criterion for e in board.entries] == ["A", "B", "C", "D"]
    b = next(e for e in board.entries if e.criterion == "B")
    assert b.to_leader.difference * 100 == pytest.approx(-0.16667, abs=1e-4)
    assert b.to_leader.low * 100 == pytest.approx(-0.16667 - 0.62519, abs=1e-4)
    assert b.to_leader.high * 100 == pytest.approx(-0.16667 + 0.62519, abs=1e-4)
    assert b.mean * 100 == pytest.approx(90.8333, abs=1e-4)
    assert b.std * 100 == pytest.approx(pd.Series(BOARD_ONE["B"]).std(), abs=1e-9)


def test_groups_compare_with_their_leader_not_a_chain() -> None:
    # P−Q: 0.5, 0.2, 0.8 → d̄ 0.5, s_d 0.3, half 0.745 → [−0.245, 1.245]: tied.
    # Q−R: 0.6, 0.7, 0.2 → d̄ 0.5, s_d 0.2646, half 0.657 → [−0.157, 1.157]: tied.
    # P−R: 1.1, 0.9, 1.0 → d̄ 1.0, s_d 0.1, half 0.248 → [0.75, 1.25]: not tied.
    # Chaining would put all three at =1; compared with the leader P, R starts a new group at rank 3.
    accuracies = {"P": [80.0, 81.0, 82.0], "Q": [79.5, 80.8, 81.2], "R": [78.9, 80.1, 81.0]}
    table = load_results(pd.DataFrame(_rows(accuracies)))
    series = {name: group.set_index("seed")["final_acc"] for name, group in table.groupby("criterion")}
    assert compare(series["Q"], series["R"]).tied
    assert not compare(series["P"], series["R"]).tied
    (board,) = boards(table)
    assert _ranks(board) == {"P": "=1", "Q": "=1", "R": "3"}


def test_single_seed_uses_the_margin_and_failed_criteria_are_unranked() -> None:
    rows = _rows(BOARD_TWO, ratio=0.7) + [error_row(criterion="E", ratio=0.7, seed=0)]
    (board,) = boards(load_results(pd.DataFrame(rows)))
    assert _ranks(board) == {"C": "1", "A": "2", "B": "3", "E": "–"}
    assert [e.criterion for e in board.entries] == ["C", "A", "B", "E"]
    e = board.entries[-1]
    assert (e.seeds, e.failed, e.to_leader) == (0, 1, None)
    a = board.entries[1]
    assert a.to_leader.n_pairs == 1 and math.isnan(a.to_leader.low)
    # 0.3 points apart on one seed: within the 0.5-point margin, so tied.
    (close,) = boards(load_results(pd.DataFrame(_rows({"X": [90.0], "Y": [89.7], "Z": [89.0]}))))
    assert _ranks(close) == {"X": "=1", "Y": "=1", "Z": "3"}


def test_overall_mean_rank_across_boards() -> None:
    rows = _rows(BOARD_ONE, ratio=0.5) + _rows(BOARD_TWO, ratio=0.7) + [error_row(criterion="E", ratio=0.7, seed=0)]
    table = overall(boards(load_results(pd.DataFrame(rows))))
    # A: ranks 1 and 2 → 1.5; B: 1 and 3 → 2.0; C: 3 and 1 → 2.0; D: 3 on one board; E: never ranked.
    assert table["criterion"].tolist() == ["A", "B", "C", "D", "E"]
    assert table["mean_rank"].tolist()[:4] == [1.5, 2.0, 2.0, 3.0]
    assert math.isnan(table["mean_rank"].iloc[4])
    assert table["boards"].tolist() == [2, 2, 2, 1, 0]
    # A and B share first place on board 1 (a tie is no win); C leads board 2 alone.
    assert table["sole_first_places"].tolist() == [0, 0, 1, 0, 0]
    assert table["failed_cells"].tolist() == [0, 0, 0, 0, 1]


def test_pages_are_written_from_a_parquet_store(tmp_path: Path) -> None:
    rows = _rows(BOARD_ONE, ratio=0.5) + _rows(BOARD_TWO, ratio=0.7) + [error_row(criterion="E", ratio=0.7, seed=0)]
    store = write_store(tmp_path / "results", rows)
    written = write_leaderboard(store, tmp_path / "board")
    assert set(written) == {"html", "markdown", "json", "csv", "parquet"}
    markdown = written["markdown"].read_text(encoding="utf-8")
    page = written["html"].read_text(encoding="utf-8")
    assert "## cnn · digits · structured · global allocation · ratio 50%" in markdown
    # Percentile bootstrap over 3 seeds: each extreme mean has probability 1/27 > 2.5 %, so the interval is [min, max].
    # vs dense: 91.00 − 95.00 = −4.00.
    assert "| =1 | A | 91.00 ± 1.00 | [90.00, 92.00] | leader | -4.00 | 3 (0) |" in markdown
    assert "| =1 | B | 90.83 ± 0.93 | [89.80, 91.60] | -0.17 [-0.79, +0.46] | -4.17 | 3 (0) |" in markdown
    assert "| – | E | – | – | – | – | 0 (1) |" in markdown
    # Across boards: A, B and C are ranked on both boards (D on one, E on none). Exact means rank A 1, B 2, C 3 on
    # board 1 and C 1, A 2, B 3 on board 2: mean ranks A 1.5, C 2.0, B 2.5. Nemenyi CD for k = 3, N = 2:
    # q = 3.3145/√2 = 2.3437 (Demšar's table: 2.343) · √(3·4/(6·2)) = 2.3437; intervals ± 1.1718.
    assert "| A | 1.50 | [0.33, 2.67] | 2 | 0 | 0 |" in markdown
    assert "| C | 2.00 | [0.83, 3.17] | 2 | 1 | 0 |" in markdown
    assert "| D | 3.00 | – | 1 | 0 | 0 |" in markdown
    assert "Nemenyi critical difference CD = 2.34 ranks. Left out (not ranked on every board): D." in markdown
    assert "paired Student-t interval" in markdown and "paired Student-t interval" in page
    assert "0123456789abcdef0123456789abcdef01234567" in markdown and "torch 2.14.1" in page
    # Two boards after fine-tuning and the same two before it (recalibrated pruned accuracy).
    assert page.count('<table class="board">') == 4
    assert "## Accuracy after fine-tuning" in markdown
    assert "## Accuracy after pruning, batch-norm recalibrated, before fine-tuning" in markdown
    assert "dense 95.00 ± 0.00 % (3 seeds)" in markdown


def test_identical_small_per_seed_differences_are_ties_not_orders() -> None:
    from oba.report.ranking import compare

    a = pd.Series([0.9000, 0.8000], index=[0, 1])
    one_image = compare(a, a - 1 / 750)
    assert one_image.low == one_image.high, "zero spread collapses the t interval"
    assert one_image.tied, "a one-test-image gap on both seeds (0.13 pp) is below the 0.5 pp floor"
    two_points = compare(a, a - 0.02)
    assert not two_points.tied and two_points.difference == pytest.approx(0.02)


def test_a_criterion_tied_with_the_leader_ranks_with_it_even_below_a_separated_one() -> None:
    # L leads. M: L−M per seed 0.5, 0.5, 0.5 → zero-width interval [0.5, 0.5] excludes 0 and is not below
    # the 0.5 pp margin → M is separated from L. N: L−N per seed −1.0, 3.0, 0.1 → d̄ 0.7, s_d 2.0518,
    # half 4.3027·2.0518/√3 = 5.097 → [−4.40, 5.80] contains 0 → N is tied with the leader: "=1", not "=3".
    accuracies = {"L": [90.0, 91.0, 92.0], "M": [89.5, 90.5, 91.5], "N": [91.0, 88.0, 91.9]}
    (board,) = boards(load_results(pd.DataFrame(_rows(accuracies))))
    assert _ranks(board) == {"L": "=1", "N": "=1", "M": "3"}


def test_boards_say_when_they_cannot_tell() -> None:
    (few,) = boards(load_results(pd.DataFrame(_rows({"A": [90.0, 91.0], "B": [80.0, 81.5]}))))
    assert any("Only 2 seed(s)" in note for note in few.notes)
    (tied,) = boards(load_results(pd.DataFrame(_rows({"A": [90.0, 91.0, 92.0], "B": [90.5, 90.0, 92.2]}))))
    assert _ranks(tied) == {"A": "=1", "B": "=1"}
    assert tied.notes == ["Every criterion is tied with the leader: the seeds cannot separate any of them on this board."]
    (clear,) = boards(load_results(pd.DataFrame(_rows(BOARD_ONE))))
    assert clear.notes == []


def test_pre_fine_tune_boards_rank_recalibrated_accuracy_and_show_dense_accuracy() -> None:
    rows = [
        row(criterion=name, seed=seed, pruned_acc=value / 100, final_acc=0.95, dense_acc=0.96 + seed / 100)
        for name, values in {"A": [70.0, 72.0, 71.0], "B": [80.0, 83.0, 81.5]}.items()
        for seed, value in enumerate(values)
    ]
    table = load_results(pd.DataFrame(rows))
    (before,) = boards(table, "pruned_acc")
    assert [e.criterion for e in before.entries] == ["B", "A"] and _ranks(before) == {"B": "1", "A": "2"}
    assert before.dense_label == "dense 97.00 ± 1.00 % (3 seeds)"
    (after,) = boards(table, "final_acc")
    assert _ranks(after) == {"A": "=1", "B": "=1"}
    with pytest.raises(ValueError, match="valid: final_acc, pruned_acc"):
        boards(table, "fidelity")


def test_boards_show_mean_signed_and_absolute_fidelity_and_precision_at_k() -> None:
    per_seed = {
        "A": {"fidelity": [0.1, 0.2, 0.6], "fidelity_abs": [0.5, 0.6, 0.7], "fidelity_precision": [0.5, 1.0, 0.75],
              "fidelity_k": [2, 2, 3]},
        "B": {"fidelity": [-0.3, -0.1, -0.2], "fidelity_abs": [None] * 3, "fidelity_precision": [0.25] * 3,
              "fidelity_k": [4] * 3},
    }
    rows = [
        row(criterion=name, seed=seed, final_acc=0.9 - 0.05 * (name == "B"),
            **{column: values[seed] for column, values in columns.items()})
        for name, columns in per_seed.items()
        for seed in range(3)
    ]
    table = load_results(pd.DataFrame(rows))
    (board,) = boards(table)
    a, b = board.entries
    assert (a.fidelity, a.fidelity_abs, a.fidelity_precision) == pytest.approx((0.3, 0.6, 0.75))
    assert a.fidelity_k == (2, 3)
    assert math.isnan(b.fidelity_abs) and b.fidelity == pytest.approx(-0.2)
    markdown = render_markdown(table)
    assert "| ρ signed ΔL | ρ \\|ΔL\\| | P@k (k) |" in markdown
    assert "| 0.300 | 0.600 | 0.750 (k=2–3) |" in markdown
    assert "| -0.200 | – | 0.250 (k=4) |" in markdown
    assert "P@k" in METHOD and "signed loss change" in METHOD


def _band(sigmas: dict[str, float], ratio: float = 0.5) -> Band:
    """A band whose final_acc σ (percent) per criterion is given; the rest of each entry is irrelevant here."""
    band = Band(z=3.0, floor=0.5, machines=["native", "avx2", "sse41"], created="2026-11-30T00:00:00Z")
    for name, sigma in sigmas.items():
        key = setting_key(row(criterion=name, ratio=ratio))
        band.settings[key] = SettingBand(key, {"final_acc": MetricBand(90.0, 3, 1.0, sigma, 3, sigma, 3 * 2**0.5 * sigma)})
    return band


def test_a_measured_noise_band_ties_what_a_change_of_machine_could_move() -> None:
    """Board 1 again: A−C is 2.0 points with a tight interval [1.75, 2.25] (rank 3 without a band).

    With σ_A = σ_C = 0.8 points of machine noise, 2·√(0.8² + 0.8²) = 2.26 > 2.0: C ties with A.
    With σ = 0.6, 2·√(0.72) = 1.70 < 2.0: C stays separated. D (no σ in the band: 0) against A:
    d̄ 2.0667; with σ_A = 0.8 alone, 2·0.8 = 1.6 < 2.07, so D is not tied with A.
    """
    table = load_results(pd.DataFrame(_rows(BOARD_ONE)))
    (wide,) = boards(table, band=_band({"A": 0.8, "B": 0.8, "C": 0.8}))
    assert _ranks(wide) == {"A": "=1", "B": "=1", "C": "=1", "D": "4"}
    c = next(e for e in wide.entries if e.criterion == "C")
    assert c.to_leader.tied and c.to_leader.high * 100 == pytest.approx(-1.7516, abs=1e-3)
    (narrow,) = boards(table, band=_band({"A": 0.6, "B": 0.6, "C": 0.6}))
    assert _ranks(narrow) == {"A": "=1", "B": "=1", "C": "=3", "D": "=3"}
    markdown = render_markdown(table, _band({"A": 0.8}))
    assert "**Noise band**: measured on 3 machines (native, avx2, sse41)" in markdown
    assert "**Noise band**: none" in render_markdown(table)


def test_the_leaderboard_states_each_criterion_s_reduction_and_normaliser() -> None:
    import json

    import pandas as pd

    from oba.report.leaderboard import reductions

    rows = pd.DataFrame({
        "criterion": ["oba", "oba", "taylor", "magnitude-l1"],
        "criterion_config": [json.dumps({"reduction": "released", "normaliser": "mean"}),
                             json.dumps({"reduction": "released", "normaliser": "max"}),
                             json.dumps({"reduction": "abs-sum", "normaliser": "mean"}), ""],
    })
    assert reductions(rows) == "oba: released, max / released, mean; taylor: abs-sum, mean"


HOSTILE = {
    "<script>alert(1)</script>": [90.0, 91.0, 92.0],
    "<img src=x onerror=alert(1)>": [88.0, 89.0, 90.0],
    "a|b & c\nd": [85.0, 86.0, 87.0],
    "[x](javascript:alert(1))": [80.0, 81.0, 82.0],
}


def test_markdown_shows_text_from_the_data_as_written_never_as_html_or_markup(tmp_path: Path) -> None:
    suite = "<b>suite</b> & co"
    rows = [row(suite=suite, model="<i>cnn</i>", criterion=name, seed=seed, final_acc=value / 100)
            for name, values in HOSTILE.items() for seed, value in enumerate(values)]
    rows.append(error_row(suite=suite, criterion="<script>bad()</script>", seed=0, error="<script>steal()</script>"))
    written = write_leaderboard(write_store(tmp_path / "results", rows), tmp_path / "board",
                                report=tmp_path / "my report (1).html")
    markdown = written["markdown"].read_text(encoding="utf-8")
    assert "<script" not in markdown and "<img" not in markdown and "<b>" not in markdown and "<i>" not in markdown
    assert "](javascript" not in markdown
    assert "&lt;script&gt;alert(1)&lt;/script&gt;" in markdown and "&lt;img src=x onerror=alert(1)&gt;" in markdown
    assert "- **Suite**: &lt;b&gt;suite&lt;/b&gt; &amp; co" in markdown
    assert "### &lt;i&gt;cnn&lt;/i&gt; · digits · structured · global allocation · ratio 50%" in markdown
    assert "| a\\|b &amp; c d |" in markdown, "a pipe is escaped and a newline joins the cell's text"
    assert "- **Report**: [../my report (1).html](../my%20report%20%281%29.html)" in markdown
    tables = [block.splitlines() for block in markdown.split("\n\n") if block.startswith("|")]
    assert len(tables) > 3
    for table in tables:
        assert len({len(re.findall(r"(?<!\\)\|", line)) for line in table}) == 1, "every row keeps the header's cells"
    page = written["html"].read_text(encoding="utf-8")
    assert "&lt;script&gt;alert(1)&lt;/script&gt;" in page and "<script>alert" not in page
