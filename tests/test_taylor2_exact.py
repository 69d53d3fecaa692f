"""taylor2 (formerly oba), fastoba (θ⊙Hθ, twice the retired oba-hvp) and Taylor against an explicitly built Hessian (float64)."""
from __future__ import annotations

import functools

import pytest
import torch
from nets import MLP, AttentionNet, ResidualCNN, tiny_vit
from reference import as_dict, flat_parameters, per_batch_terms
from torch import nn

import oba

LOSS = nn.functional.cross_entropy


@functools.lru_cache(maxsize=None)
def _model_and_batches(kind: str):
    torch.manual_seed(0)
    if kind == "mlp":
        model = MLP()
        batches = [(torch.randn(5, 6), torch.randint(0, 3, (5,))) for _ in range(2)]
    elif kind == "cnn":
        model = ResidualCNN()
        with torch.no_grad():
            for m in model.modules():
                if isinstance(m, nn.BatchNorm2d):
                    m.running_mean.uniform_(-0.2, 0.2)
                    m.running_var.uniform_(0.5, 1.5)
                    m.weight.uniform_(0.5, 1.5)
                    m.bias.uniform_(-0.3, 0.3)
        batches = [(torch.randn(3, 2, 5, 5), torch.randint(0, 3, (3,))) for _ in range(2)]
    elif kind == "mha":
        model = AttentionNet()
        batches = [(torch.randn(3, 4, 8), torch.randint(0, 3, (3,))) for _ in range(2)]
    else:
        model = tiny_vit(classes=3, dim=8, depth=1, heads=2, image=8)
        batches = [(torch.randn(2, 3, 8, 8), torch.randint(0, 3, (2,))) for _ in range(2)]
    return model.double().eval(), [(x.double(), y) for x, y in batches]


@functools.lru_cache(maxsize=None)
def _terms(kind: str) -> list[tuple[torch.Tensor, torch.Tensor]]:
    model, batches = _model_and_batches(kind)
    return per_batch_terms(model, batches, LOSS)


def _expected(kind: str, criterion: str) -> dict[str, torch.Tensor]:
    model, _ = _model_and_batches(kind)
    _, _, theta = flat_parameters(model)
    total = torch.zeros_like(theta)
    for g, h in _terms(kind):
        first = -g * theta
        second = 0.5 * theta * (h @ theta)
        total += {"taylor2": first + second, "fastoba": 2 * second, "taylor": first}[criterion]
    return as_dict(model, total / len(_terms(kind)))


@pytest.mark.parametrize("kind", ["mlp", "cnn", "mha", "timm-vit"])
@pytest.mark.parametrize("name", ["taylor2", "fastoba", "taylor"])
def test_scores_equal_explicit_hessian_reference(kind: str, name: str) -> None:
    model, batches = _model_and_batches(kind)
    expected = _expected(kind, name)
    scores = oba.criteria.get(name).parameter_scores(model, batches, LOSS)
    assert list(scores) == [n for n, p in model.named_parameters() if p.requires_grad]
    scale = max(float(v.abs().max()) for v in expected.values())
    assert scale > 0
    for key, want in expected.items():
        torch.testing.assert_close(scores[key], want, rtol=1e-8, atol=1e-10 * scale, msg=key)


@pytest.mark.parametrize("kind", ["mlp", "cnn", "timm-vit"])
def test_fastoba_sums_to_twice_the_whole_quadratic_term(kind: str) -> None:
    model, batches = _model_and_batches(kind)
    _, _, theta = flat_parameters(model)
    quadratic = sum(theta @ h @ theta for _, h in _terms(kind)) / len(batches)
    scores = oba.criteria.get("fastoba").parameter_scores(model, batches, LOSS)
    total = sum(v.sum() for v in scores.values())
    assert abs(float(total - quadratic)) <= 1e-9 * abs(float(quadratic))


def test_taylor2_is_taylor_plus_half_fastoba() -> None:
    model, batches = _model_and_batches("cnn")
    parts = {n: oba.criteria.get(n).parameter_scores(model, batches, LOSS) for n in ("taylor2", "fastoba", "taylor")}
    for key in parts["taylor2"]:
        torch.testing.assert_close(parts["taylor2"][key], 0.5 * parts["fastoba"][key] + parts["taylor"][key], rtol=1e-12, atol=1e-14)


def test_default_group_score_is_absolute_sum_of_members() -> None:
    model, batches = _model_and_batches("mlp")
    scores = oba.criteria.get("taylor2").parameter_scores(model, batches, LOSS)
    groups = [
        oba.Group((oba.ParamSlice("fc1.weight", 0, torch.tensor([j])), oba.ParamSlice("fc1.bias", 0, torch.tensor([j])),
                   oba.ParamSlice("fc2.weight", 1, torch.tensor([j]))), label=f"n{j}")
        for j in range(7)
    ]
    got = oba.criteria.get("taylor2").group_scores(model, batches, LOSS, groups)
    want = torch.stack([abs(scores["fc1.weight"][j].sum() + scores["fc1.bias"][j] + scores["fc2.weight"][:, j].sum()) for j in range(7)])
    torch.testing.assert_close(got, want.double(), rtol=1e-12, atol=0)


def test_fastoba_default_group_score_is_mean_of_weight_members() -> None:
    """fastoba reduces with ``released-weights``: the mean over the unit's layer members of |Σ member|, biases left out."""
    model, batches = _model_and_batches("mlp")
    criterion = oba.criteria.get("fastoba")
    assert criterion.config()["reduction"] == "released-weights"
    scores = criterion.parameter_scores(model, batches, LOSS)
    groups = [
        oba.Group((oba.ParamSlice("fc1.weight", 0, torch.tensor([j])), oba.ParamSlice("fc1.bias", 0, torch.tensor([j])),
                   oba.ParamSlice("fc2.weight", 1, torch.tensor([j]))), label=f"n{j}")
        for j in range(7)
    ]
    got = criterion.group_scores(model, batches, LOSS, groups)
    want = torch.stack([(scores["fc1.weight"][j].sum().abs() + scores["fc2.weight"][:, j].sum().abs()) / 2 for j in range(7)])
    torch.testing.assert_close(got, want.double(), rtol=1e-12, atol=0)
