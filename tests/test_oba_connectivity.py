"""OBA (paper), oba-released and fastoba against independently built second derivatives (float64)."""
from __future__ import annotations

import math

import pytest
import torch
from nets import ResidualCNN, vgg_style
from torch import nn
from torch.func import functional_call
from torch.nn import functional as F

import oba.criteria as criteria
from oba.core.connectivity import connectivity_products, layer_parameters
from oba.criteria.reduction import REDUCTIONS
from oba.pruning.dependency_groups import find_groups

LOSS = F.cross_entropy


class TinyAttention(nn.Module):
    """Single-head self-attention written out: q, k, v projections, softmax(q kᵀ/√d) v, a linear head."""

    def __init__(self, dim: int = 4, classes: int = 3) -> None:
        super().__init__()
        self.q, self.k, self.v = nn.Linear(dim, dim), nn.Linear(dim, dim), nn.Linear(dim, dim)
        self.norm = nn.LayerNorm(dim)
        self.head = nn.Linear(dim, classes)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        q, k, v = self.q(x), self.k(x), self.v(x)
        out = F.scaled_dot_product_attention(q, k, v)
        return self.head(self.norm(x + out).mean(dim=1))


def _nodes(model: nn.Module, params: dict[str, torch.Tensor], x: torch.Tensor) -> list[tuple]:
    """Every bilinear product of a forward at ``params``: (operand a, operand b, output, product), by hand."""
    found: list[tuple] = []
    hooks = []
    for module in model.modules():
        if isinstance(module, (nn.Linear, nn.Conv2d)):
            def hook(m, inputs, output):
                product = (lambda a, b: F.linear(a, b)) if isinstance(m, nn.Linear) else (
                    lambda a, b, m=m: F.conv2d(a, b, None, m.stride, m.padding, m.dilation, m.groups))
                found.append(("layer", inputs[0], m.weight, output, product))
            hooks.append(module.register_forward_hook(hook))
    try:
        if isinstance(model, TinyAttention):
            q = functional_call(model.q, {"weight": params["q.weight"], "bias": params["q.bias"]}, (x,))
            k = functional_call(model.k, {"weight": params["k.weight"], "bias": params["k.bias"]}, (x,))
            v = functional_call(model.v, {"weight": params["v.weight"], "bias": params["v.bias"]}, (x,))
            scores = q @ k.transpose(-2, -1)
            found.append(("pair", q, k.transpose(-2, -1), scores, torch.matmul))
            attention = torch.softmax(scores / math.sqrt(q.shape[-1]), dim=-1)
            out = attention @ v
            found.append(("pair", attention, v, out, torch.matmul))
            pooled = F.layer_norm(x + out, (x.shape[-1],), params["norm.weight"], params["norm.bias"]).mean(dim=1)
            logits = functional_call(model.head, {"weight": params["head.weight"], "bias": params["head.bias"]}, (pooled,))
        else:
            logits = functional_call(model, {**params, **{n: b.clone() for n, b in model.named_buffers()}}, (x,))
    finally:
        for h in hooks:
            h.remove()
    return found, logits


def explicit_oba(model: nn.Module, batch: tuple, mode: str) -> dict[str, torch.Tensor]:
    """θ ⊙ H_P θ with H_P = Σ_v (C_v + C_vᵀ), C_v = ∂²⟨c_v, B_v(a(θ), b(θ'))⟩/∂θ∂θ' built with jacrev(grad).

    c_v = ∂L/∂(output of node v) at θ, held fixed; θ runs over the parameter layers' weights and biases.
    """
    model.train(mode == "train")
    x, y = batch
    base = {n: p.detach().clone() for n, p in model.named_parameters()}
    buffers = {n: b.clone() for n, b in model.named_buffers()}
    names = list(layer_parameters(model))
    shapes = [base[n].shape for n in names]
    flat0 = torch.cat([base[n].reshape(-1) for n in names])

    def unflat(flat: torch.Tensor) -> dict[str, torch.Tensor]:
        out, start = dict(base), 0
        for n, shape in zip(names, shapes):
            out[n] = flat[start:start + shape.numel()].view(shape)
            start += shape.numel()
        return out

    def run(flat: torch.Tensor):
        with torch.no_grad():
            for n, b in model.named_buffers():
                b.copy_(buffers[n])
        return _nodes(model, unflat(flat), x)

    leaf = flat0.clone().requires_grad_(True)
    nodes, logits = run(leaf)
    adjoints = torch.autograd.grad(LOSS(logits, y), [n[3] for n in nodes])
    hessian = torch.zeros(len(flat0), len(flat0), dtype=flat0.dtype)
    for index, c in enumerate(adjoints):
        first, second = flat0.clone().requires_grad_(True), flat0.clone().requires_grad_(True)
        a = run(first)[0][index][1]
        _, _, b, _, product = run(second)[0][index]
        (by_first,) = torch.autograd.grad((product(a, b) * c.detach()).sum(), first, create_graph=True, allow_unused=True)
        if by_first is None:
            continue
        cross = torch.stack([
            _zeros_if_none(torch.autograd.grad(by_first[i], second, retain_graph=True, allow_unused=True)[0], flat0)
            if by_first[i].requires_grad else torch.zeros_like(flat0)
            for i in range(len(flat0))
        ])
        hessian += cross + cross.T
    for n, b in model.named_buffers():
        b.copy_(buffers[n])
    scores = flat0 * (hessian @ flat0)
    return {n: t.view(s) for n, t, s in zip(names, scores.split([s.numel() for s in shapes]), shapes)}


def _zeros_if_none(t: torch.Tensor | None, like: torch.Tensor) -> torch.Tensor:
    return torch.zeros_like(like) if t is None else t


def nets() -> list[tuple[str, nn.Module, tuple]]:
    torch.manual_seed(0)
    residual = ResidualCNN(c=3, classes=3, in_chans=2).double()
    chain = vgg_style(in_chans=1, classes=3, widths=(3, 4), hidden=6).double()
    attention = TinyAttention().double()
    return [
        ("residual", residual, (torch.randn(6, 2, 5, 5, dtype=torch.float64), torch.randint(0, 3, (6,)))),
        ("batch-norm chain", chain, (torch.randn(6, 1, 16, 16, dtype=torch.float64), torch.randint(0, 3, (6,)))),
        ("attention", attention, (torch.randn(6, 5, 4, dtype=torch.float64), torch.randint(0, 3, (6,)))),
    ]


@pytest.mark.parametrize("mode", ["eval", "train"])
@pytest.mark.parametrize("case", range(3))
def test_oba_equals_explicit_cross_derivatives_of_every_bilinear_product(case: int, mode: str) -> None:
    name, model, batch = nets()[case]
    if name == "batch-norm chain":
        for m in model.modules():
            if isinstance(m, nn.BatchNorm2d):
                m.running_mean.uniform_(-0.2, 0.2)
                m.running_var.uniform_(0.5, 1.5)
    expected = explicit_oba(model, batch, mode)
    scores = criteria.get("oba", mode=mode).parameter_scores(model, [batch], LOSS)
    for pname, tensor in expected.items():
        assert torch.allclose(scores[pname], tensor, rtol=1e-9, atol=1e-12 * float(tensor.abs().max()) + 1e-15), (name, pname)
    others = set(scores) - set(expected)
    assert others and all(float(scores[n].abs().max()) == 0.0 for n in others), "norm γ/β are not scored"


def test_oba_on_a_piecewise_linear_net_is_theta_times_the_hessian_without_its_gauss_newton_part() -> None:
    from oba.core.curvature import gradient_and_functional_hvp

    _, model, batch = nets()[1]
    model.eval()
    layers = layer_parameters(model)
    named = dict(model.named_parameters())
    vector = [p.detach() if n in layers else torch.zeros_like(p) for n, p in named.items()]
    _, _, h_theta = gradient_and_functional_hvp(model, batch, LOSS, list(named.values()), vector)
    scores = criteria.get("oba", mode="eval").parameter_scores(model, [batch], LOSS)
    for (pname, p), hv in zip(named.items(), h_theta):
        if pname in layers:
            assert torch.allclose(scores[pname], p.detach() * hv, rtol=1e-9, atol=1e-14), pname


def test_fastoba_is_theta_times_the_exact_hessian_times_theta() -> None:
    _, model, batch = nets()[0]
    model.eval()
    names = [n for n, _ in model.named_parameters()]
    shapes = [p.shape for _, p in model.named_parameters()]
    flat = torch.cat([p.detach().reshape(-1) for p in model.parameters()])

    def loss(f: torch.Tensor) -> torch.Tensor:
        params = dict(zip(names, (t.view(s) for t, s in zip(f.split([s.numel() for s in shapes]), shapes))))
        return LOSS(functional_call(model, params, (batch[0],)), batch[1])

    expected = (flat * (torch.autograd.functional.hessian(loss, flat) @ flat)).split([s.numel() for s in shapes])
    scores = criteria.get("fastoba", mode="eval").parameter_scores(model, [batch], LOSS)
    for pname, e, s in zip(names, expected, shapes):
        assert torch.allclose(scores[pname], e.view(s), rtol=1e-9, atol=1e-14), pname


def test_oba_released_equals_oba_where_the_slips_change_nothing() -> None:
    """A chain of linear maps (conv, eval batch norm, average pooling, linear): tangents need no linearisation point."""
    torch.manual_seed(1)
    model = nn.Sequential(nn.Conv2d(2, 3, 3), nn.BatchNorm2d(3), nn.AvgPool2d(2), nn.Flatten(), nn.Linear(12, 3)).double()
    model[1].running_var.uniform_(0.5, 1.5)
    batch = (torch.randn(5, 2, 6, 6, dtype=torch.float64), torch.randint(0, 3, (5,)))
    paper = criteria.get("oba", mode="eval").parameter_scores(model, [batch], LOSS)
    released = criteria.get("oba-released", mode="eval").parameter_scores(model, [batch], LOSS)
    for pname in layer_parameters(model):
        assert torch.allclose(paper[pname], released[pname], rtol=1e-12, atol=1e-16), pname


def test_oba_released_linearises_each_relu_at_the_tangent() -> None:
    """Three linear layers with ReLUs, by hand: the released tangent into layer 3 is relu(y2 + W2 relu(t1)), t1 = y1."""
    torch.manual_seed(2)
    model = nn.Sequential(nn.Linear(4, 5), nn.ReLU(), nn.Linear(5, 5), nn.ReLU(), nn.Linear(5, 3)).double()
    x, y = torch.randn(7, 4, dtype=torch.float64), torch.randint(0, 3, (7,))
    w1, w2, w3 = model[0].weight, model[2].weight, model[4].weight
    y1 = model[0](x)
    y2 = model[2](torch.relu(y1))
    logits = model[4](torch.relu(y2))
    c3 = torch.autograd.grad(LOSS(logits, y), logits)[0]
    t1 = y1
    t2 = y2 + F.linear(torch.relu(t1), w2)
    downward3 = c3.T @ torch.relu(t2)
    exact_t2 = y2 + F.linear(t1 * (y1 > 0), w2)
    exact_downward3 = c3.T @ (exact_t2 * (y2 > 0))
    _, upward_and_downward = connectivity_products(model, (x, y), LOSS, "tangent", True)
    _, exact = connectivity_products(model, (x, y), LOSS, "activation", False)
    assert torch.allclose(upward_and_downward["4.weight"], downward3.detach(), rtol=1e-12)
    assert torch.allclose(exact["4.weight"], exact_downward3.detach(), rtol=1e-12)
    assert not torch.allclose(downward3, exact_downward3)


def test_oba_released_counts_the_downward_term_twice_after_the_first_residual_add() -> None:
    _, model, batch = nets()[0]
    model.eval()
    _, once = connectivity_products(model, batch, LOSS, "tangent", False)
    _, twice = connectivity_products(model, batch, LOSS, "tangent", True)
    assert torch.allclose(twice["head.weight"], 2 * once["head.weight"], rtol=1e-12)
    for pname in ("conv0.weight", "conv1.weight", "conv2.weight"):
        assert torch.equal(twice[pname], once[pname]), pname


def test_oba_released_in_train_mode_on_a_batch_norm_chain_is_depth_weighted_taylor() -> None:
    """Train-mode batch norm is scale-invariant (up to its eps, here 1e-12), so the tangent it passes on, linearised
    at itself, vanishes: only the upward terms stay, and on a chain each of the n layers downstream adds g ⊙ θ."""
    torch.manual_seed(4)
    model = nn.Sequential(nn.Conv2d(1, 3, 3), nn.BatchNorm2d(3, eps=1e-12), nn.ReLU(), nn.Conv2d(3, 4, 3),
                          nn.BatchNorm2d(4, eps=1e-12), nn.ReLU(), nn.MaxPool2d(2), nn.Flatten(), nn.Linear(16, 3)).double()
    batch = (torch.randn(6, 1, 8, 8, dtype=torch.float64), torch.randint(0, 3, (6,)))
    scores = criteria.get("oba-released", mode="train").parameter_scores(model, [batch], LOSS)
    upward_only = criteria.get("taylor-depth", mode="train").parameter_scores(model, [batch], LOSS)
    gradients = criteria.get("taylor", mode="train").parameter_scores(model, [batch], LOSS)
    layers = [n for n in layer_parameters(model) if n.endswith("weight")]
    scale = max(float(scores[n].abs().max()) for n in layers)
    for position, pname in enumerate(layers):
        downstream = len(layers) - 1 - position
        expected = -downstream * gradients[pname]
        assert torch.allclose(scores[pname], expected, rtol=1e-6, atol=1e-9 * scale), pname
        assert torch.allclose(upward_only[pname], expected, rtol=1e-9, atol=1e-12 * scale), pname


def test_taylor_depth_sums_each_downstream_layers_first_order_view_on_a_residual_net() -> None:
    """θ_i Σ_l ∂⟨c_l, y_l⟩/∂θ_i over the layers l other than θ_i's own, c_l = ∂L/∂y_l held fixed, by hooks."""
    _, model, batch = nets()[0]
    model.eval()
    outputs: dict[str, torch.Tensor] = {}
    hooks = [m.register_forward_hook(lambda m, i, o, name=name: outputs.__setitem__(name, o))
             for name, m in model.named_modules() if isinstance(m, (nn.Linear, nn.Conv2d))]
    try:
        loss = LOSS(model(batch[0]), batch[1])
    finally:
        for h in hooks:
            h.remove()
    layers = layer_parameters(model)
    adjoints = dict(zip(outputs, torch.autograd.grad(loss, list(outputs.values()), retain_graph=True)))
    expected = {n: torch.zeros_like(p) for n, p in layers.items()}
    for name, y in outputs.items():
        views = torch.autograd.grad((y * adjoints[name]).sum(), list(layers.values()), retain_graph=True, allow_unused=True)
        for (pname, p), view in zip(layers.items(), views):
            if view is not None and not pname.startswith(name + "."):
                expected[pname] += p.detach() * view
    depth = criteria.get("taylor-depth", mode="eval").parameter_scores(model, [batch], LOSS)
    for pname in layers:
        assert torch.allclose(depth[pname], expected[pname], rtol=1e-10, atol=1e-15), pname
    assert float(depth["head.weight"].abs().max()) == 0.0, "nothing lies downstream of the classifier"


def test_released_reduction_is_the_mean_over_layer_members_of_their_absolute_index_sums() -> None:
    """Per member (a layer's output rows with biases, or its input columns): Σ over the unit's indices of |Σ index|;
    vgg_style flattens its last channels into 64 columns of a Linear layer each."""
    torch.manual_seed(3)
    model = vgg_style(in_chans=1, classes=3, widths=(3, 4)).double().eval()
    _, groups = find_groups(model, torch.randn(1, 1, 16, 16, dtype=torch.float64))
    units = [u for g in groups for u in g.units]
    scores = {n: torch.randn_like(p) for n, p in model.named_parameters()}
    layers = set(layer_parameters(model))
    for with_bias, reduction in ((True, "released"), (False, "released-weights")):
        got = REDUCTIONS.get(reduction)(model, scores, units, False)
        for unit, value in zip(units, got):
            planes: dict[tuple[str, str, int], float] = {}
            for s in unit.slices:
                module, _, kind = s.name.rpartition(".")
                if s.name not in layers or (kind == "bias" and not with_bias):
                    continue
                role = "in" if kind == "weight" and s.dim == 1 else "out"
                for index in s.index.tolist():
                    plane = scores[s.name].select(s.dim, index).sum()
                    planes[(module, role, index)] = planes.get((module, role, index), 0.0) + float(plane)
            members: dict[tuple[str, str], float] = {}
            for (module, role, _), value_of_plane in planes.items():
                members[(module, role)] = members.get((module, role), 0.0) + abs(value_of_plane)
            expected = sum(members.values()) / len(members)
            assert math.isclose(float(value), expected, rel_tol=1e-12), unit.label
    with pytest.raises(ValueError, match="no signed form"):
        REDUCTIONS.get("released")(model, scores, units, True)


def test_retired_names_answer_with_their_successor_in_one_line() -> None:
    for old, successor in (("oba-hvp", "fastoba"), ("oba-functional", "oba-released"), ("oba-group", "taylor2-group")):
        with pytest.raises(ValueError, match=successor) as err:
            criteria.get(old)
        assert "\n" not in str(err.value)


def test_oba_variants_default_to_the_released_reduction_and_the_max_normaliser() -> None:
    for name, reduction in (("oba", "released"), ("oba-released", "released"), ("fastoba", "released-weights")):
        config = criteria.get(name).config()
        normaliser = "max" if name == "oba" else "released-max"
        assert (config["reduction"], config["normaliser"], config["delta"]) == (reduction, normaliser, 0.0)
    assert criteria.get("oba", reduction="abs-sum", normaliser="mean").config()["reduction"] == "abs-sum"
    assert criteria.get("taylor").config()["reduction"] == "abs-sum"
