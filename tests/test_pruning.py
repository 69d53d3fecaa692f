"""Structured and unstructured pruning of real model shapes."""
from __future__ import annotations

import copy
from typing import Sequence

import pytest
import torch
from nets import SmallResNet, tiny_vit, vgg_style
from torch import Tensor, nn

import oba
from oba.core.measure import count_macs
from oba.criteria import Criterion, trainable_parameters
from oba.pruning.dependency_groups import find_groups

LOSS = nn.functional.cross_entropy


class FixedScores(Criterion):
    """Hands back preset per-parameter scores (for checking what the pruner removes)."""

    name = "fixed"

    def __init__(self, scores: dict[str, Tensor]) -> None:
        super().__init__()
        self.scores = scores

    def parameter_scores(self, model: nn.Module, batches: Sequence, loss_fn) -> dict[str, Tensor]:
        return {n: self.scores.get(n, torch.zeros_like(p)) for n, p in trainable_parameters(model).items()}


def _data(shape: tuple[int, ...], classes: int = 10, n: int = 8) -> list[tuple[Tensor, Tensor]]:
    return [(torch.randn(n, *shape), torch.randint(0, classes, (n,)))]


MODELS = {
    "vgg": (lambda: vgg_style(), (3, 32, 32)),
    "resnet": (lambda: SmallResNet(), (3, 32, 32)),
    "vit": (lambda: tiny_vit(dim=32, depth=2, heads=4, image=16), (3, 16, 16)),
}


@pytest.mark.parametrize("criterion, allocation", [("taylor2", "global"), ("taylor2", "uniform"), ("oba", "global")])
@pytest.mark.parametrize("kind", list(MODELS))
def test_structured_pruning_reaches_target_and_runs(kind: str, criterion: str, allocation: str) -> None:
    build, shape = MODELS[kind]
    model = build()
    batches = _data(shape)
    example = torch.randn(1, *shape)
    dense_macs = count_macs(model, example)
    model, record = oba.prune(model, example, batches, LOSS, criterion, ratio=0.5, steps=2, allocation=allocation)
    out = model(torch.randn(3, *shape))
    assert out.shape == (3, 10)
    measured = count_macs(model, example)
    assert record.macs_dense == dense_macs and record.macs_pruned == measured
    assert abs((1 - measured / dense_macs) - 0.5) <= 0.05
    assert record.params_pruned < record.params_dense
    assert record.scoring_seconds > 0
    assert record.macs_speedup == pytest.approx(dense_macs / measured)
    for width in record.layer_widths.values():
        assert 1 <= width["remaining"] <= width["dense"]
        assert width["dense"] - width["remaining"] <= int(0.9 * width["dense"])
    # Layers are listed in the order the model registers its modules (the forward order of these models).
    modules = [name for name, _ in model.named_modules()]
    assert list(record.layer_widths) == sorted(record.layer_widths, key=modules.index)


def test_resnet_residual_coupling_keeps_shapes_consistent() -> None:
    model = SmallResNet()
    _, groups = find_groups(model, torch.randn(1, 3, 32, 32))
    coupled = [g for g in groups if len(g.layers) > 1]
    assert coupled, "residual adds must couple several convs into one group"
    stage0 = next(g for g in coupled if "stem.0" in g.layers)
    assert {"stages.0.conv2", "stages.1.conv2"} <= set(stage0.layers)
    oba.prune(model, torch.randn(1, 3, 32, 32), _data((3, 32, 32)), LOSS, "taylor", ratio=0.4, steps=1)
    assert model.stem[0].out_channels == model.stages[0].conv2.out_channels == model.stages[1].conv2.out_channels
    assert model.stages[2].conv1.in_channels == model.stages[1].conv2.out_channels
    assert model.stem[0].out_channels < 8


def test_vit_heads_are_removed_whole() -> None:
    model = tiny_vit(dim=32, depth=2, heads=4, image=16)
    example = torch.randn(1, 3, 16, 16)
    model, record = oba.prune(model, example, _data((3, 16, 16)), LOSS, "taylor2", ratio=0.6, steps=2)
    heads = {k: v for k, v in record.layer_widths.items() if v["kind"] == "heads"}
    assert len(heads) == 2
    for block in model.blocks:
        attn = block.attn
        assert attn.qkv.out_features == 3 * attn.num_heads * attn.head_dim == 3 * attn.attn_dim
        assert attn.proj.in_features == attn.attn_dim
    assert model(torch.randn(2, 3, 16, 16)).shape == (2, 10)


def test_lowest_scored_channels_are_the_ones_removed() -> None:
    torch.manual_seed(1)
    model = nn.Sequential(nn.Conv2d(3, 8, 3, padding=1), nn.ReLU(), nn.Conv2d(8, 8, 3, padding=1), nn.ReLU(),
                          nn.AdaptiveAvgPool2d(1), nn.Flatten(), nn.Linear(8, 5))
    original = model[0].weight.detach().clone()
    channel_score = torch.tensor([5.0, 0.1, 3.0, 0.2, 4.0, 0.3, 6.0, 7.0])
    row = channel_score / original[0].numel()
    scores = {"0.weight": row.view(8, 1, 1, 1).expand_as(original).clone()}
    example = torch.randn(1, 3, 8, 8)
    model, _ = oba.prune(model, example, _data((3, 8, 8), classes=5), LOSS, FixedScores(scores),
                         ratio=0.2, steps=1, normalisation="none", layer_cap=0.5, ignored_layers=[model[2]])
    kept = [int(torch.nonzero((original == w).flatten(1).all(1))[0]) for w in model[0].weight.detach()]
    removed = sorted(set(range(8)) - set(kept))
    assert removed, "ratio 0.2 must remove channels of the first conv"
    assert removed == sorted(torch.argsort(channel_score)[: len(removed)].tolist())
    assert model[2].in_channels == len(kept)


def test_global_allocation_normalises_once_per_step() -> None:
    """Every correction pick of a step ranks by the step-start normalisation (mean over all of a group's units).

    With two coupled convs the first pick falls short (removing channels on both
    sides of conv 2 saves less than the per-unit estimates), so the step picks
    again; re-normalising by the survivors' mean would then let a unit of conv 0
    with a high step-normalised score go before cheaper units of conv 2.
    """
    torch.manual_seed(0)
    model = nn.Sequential(nn.Conv2d(3, 8, 3, padding=1), nn.ReLU(), nn.Conv2d(8, 8, 3, padding=1), nn.ReLU(),
                          nn.AdaptiveAvgPool2d(1), nn.Flatten(), nn.Linear(8, 5))
    scores = {"0.bias": torch.tensor([1.0, 1.1, 1.2, 1.3, 10.0, 10.5, 11.0, 11.5]),
              "2.bias": torch.tensor([2.0, 3.0, 4.0, 5.0, 6.0, 7.0, 8.0, 9.0])}
    biases = {name: dict(model.named_parameters())[name].detach().clone() for name in scores}
    model, record = oba.prune(model, torch.randn(1, 3, 8, 8), _data((3, 8, 8), classes=5), LOSS, FixedScores(scores),
                              ratio=0.8, steps=1, normalisation="mean", layer_cap=0.9)
    removed, kept = [], []
    for name, s in scores.items():
        normalised = s / s.mean()
        survivors = {int(torch.nonzero(biases[name] == b)[0]) for b in dict(model.named_parameters())[name].detach()}
        capped = len(survivors) == 8 - int(0.9 * 8)
        removed += [float(normalised[i]) for i in range(8) if i not in survivors]
        kept += [float(normalised[i]) for i in survivors if not capped]
    assert removed and kept and record.macs_removed > 0.75
    assert max(removed) < min(kept)


def test_prune_scores_an_instance_in_the_mode_it_is_asked_for() -> None:
    """A criterion instance built for train mode scores in eval mode under prune(mode="eval"), then is train again."""
    torch.manual_seed(0)
    model = SmallResNet(widths=(4, 8, 8), blocks=1)
    example, batches = torch.randn(1, 3, 16, 16), _data((3, 16, 16))
    dense = copy.deepcopy(model)
    units = [u for g in find_groups(dense, example)[1] for u in g.units]
    eval_scores = oba.criteria.get("taylor", mode="eval").group_scores(dense, batches, LOSS, units)
    train_scores = oba.criteria.get("taylor", mode="train").group_scores(dense, batches, LOSS, units)
    assert not torch.allclose(eval_scores, train_scores)
    criterion = oba.criteria.get("taylor", mode="train")
    _, record = oba.prune(model, example, batches, LOSS, criterion, ratio=0.2, steps=1, mode="eval")
    torch.testing.assert_close(record.dense_unit_scores, eval_scores, rtol=1e-6, atol=0)
    assert record.mode == "eval" and record.criterion_config["mode"] == "eval"
    assert criterion.mode == "train"


def test_unstructured_masks_the_lowest_scores_and_keeps_them_masked() -> None:
    model = nn.Sequential(nn.Linear(6, 10), nn.ReLU(), nn.Linear(10, 3))
    scores = {n: torch.randn_like(p) for n, p in model.named_parameters()}
    model, record = oba.prune(model, torch.randn(1, 6), [(torch.randn(4, 6), torch.randint(0, 3, (4,)))], LOSS,
                              FixedScores(scores), ratio=0.3, structure="unstructured", steps=1)
    everything = torch.cat([scores["0.weight"].abs().flatten(), scores["2.weight"].abs().flatten()])
    threshold = everything.sort().values[int(round(0.3 * everything.numel())) - 1]
    for name in ("0.weight", "2.weight"):
        mask = record.masks[name]
        assert torch.equal(~mask, scores[name].abs() <= threshold)
        assert torch.all(dict(model.named_parameters())[name][~mask] == 0)
    assert sum(int((~m).sum()) for m in record.masks.values()) == round(0.3 * everything.numel())
    opt = torch.optim.SGD(model.parameters(), lr=0.5, momentum=0.9)
    for _ in range(3):
        opt.zero_grad()
        LOSS(model(torch.randn(8, 6)), torch.randint(0, 3, (8,))).backward()
        opt.step()
    for name in ("0.weight", "2.weight"):
        assert torch.all(dict(model.named_parameters())[name][~record.masks[name]] == 0)


@pytest.mark.parametrize(
    "kwargs, message",
    [
        ({"structure": "blocks"}, "channels"),
        ({"allocation": "greedy"}, "uniform"),
        ({"ratio": 1.5}, "ratio"),
        ({"normalisation": "median"}, "mean"),
    ],
)
def test_bad_pruning_options_are_named(kwargs: dict, message: str) -> None:
    with pytest.raises(ValueError, match=message):
        oba.prune(vgg_style(), torch.randn(1, 3, 32, 32), _data((3, 32, 32)), LOSS, "taylor", **kwargs)


def test_unstructured_masks_survive_fine_tuning() -> None:
    from oba.training.train import Recipe, fine_tune

    data = oba.data.load("synthetic", num_classes=3, image_size=8, channels=1, n=96)
    model = nn.Sequential(nn.Flatten(), nn.Linear(64, 16), nn.ReLU(), nn.Linear(16, 3))
    batch = next(iter(torch.utils.data.DataLoader(data.train, batch_size=16)))
    model, record = oba.prune(model, torch.randn(1, 1, 8, 8), [batch], LOSS, "magnitude-l1", ratio=0.5,
                              structure="unstructured", steps=2)
    fine_tune(model, data, Recipe(epochs=2, batch_size=16, lr=0.1, weight_decay=5e-4), device="cpu")
    params = dict(model.named_parameters())
    for name, mask in record.masks.items():
        assert torch.all(params[name][~mask] == 0), name
        assert torch.any(params[name][mask] != 0), name


def _small_cnn() -> nn.Module:
    torch.manual_seed(3)
    return nn.Sequential(nn.Conv2d(3, 8, 3, padding=1), nn.ReLU(), nn.Conv2d(8, 12, 3, padding=1), nn.ReLU(),
                         nn.AdaptiveAvgPool2d(1), nn.Flatten(), nn.Linear(12, 5))


def _units_removed(record: oba.PruneRecord) -> int:
    return sum(w["dense"] - w["remaining"] for w in record.layer_widths.values())


def test_structured_record_counts_the_units_the_first_step_removed() -> None:
    """Step 1 of 2 at ratio r aims where one step at r / 2 aims, from the same dense scores: it removes as many units."""
    import copy

    dense, example, batches = _small_cnn(), torch.randn(1, 3, 8, 8), _data((3, 8, 8), classes=5)
    _, one = oba.prune(copy.deepcopy(dense), example, batches, LOSS, "magnitude-l1", ratio=0.2, steps=1)
    _, two = oba.prune(copy.deepcopy(dense), example, batches, LOSS, "magnitude-l1", ratio=0.4, steps=2)
    assert one.first_step_units_removed == _units_removed(one) > 0
    assert two.first_step_units_removed == _units_removed(one) < _units_removed(two)
    assert one.dense_units == two.dense_units == 8 + 12


def test_unstructured_record_counts_the_weights_the_first_step_masked() -> None:
    model = nn.Sequential(nn.Linear(6, 10), nn.ReLU(), nn.Linear(10, 3))
    batches = [(torch.randn(4, 6), torch.randint(0, 3, (4,)))]
    _, record = oba.prune(model, torch.randn(1, 6), batches, LOSS, "magnitude-l1", ratio=0.5, structure="unstructured",
                          steps=3)
    assert record.dense_units == 6 * 10 + 10 * 3
    assert record.first_step_units_removed == round(0.5 / 3 * 90) == 15
    assert _units_removed(record) == 45
