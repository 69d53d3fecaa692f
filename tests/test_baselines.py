"""Baseline criteria against independent ground truth on tiny float64 networks."""
from __future__ import annotations

import pytest
import torch
import torch.nn.functional as F
from nets import tiny_vit
from reference import as_dict, per_batch_terms
from torch import nn
from torch.nn.attention import SDPBackend, sdpa_kernel

import oba.criteria as criteria
from oba import Group, ParamSlice
from oba.core.kronecker_factors import kronecker_factors
from oba.criteria.base import step_seed

LOSS = nn.CrossEntropyLoss()


def mlp(dtype: torch.dtype = torch.float64) -> nn.Module:
    torch.manual_seed(0)
    return nn.Sequential(nn.Linear(4, 5), nn.Tanh(), nn.Linear(5, 3)).to(dtype)


def convnet(dtype: torch.dtype = torch.float64) -> nn.Module:
    torch.manual_seed(0)
    model = nn.Sequential(nn.Conv2d(2, 3, 3), nn.BatchNorm2d(3), nn.Tanh(), nn.Flatten(), nn.Linear(27, 3))
    with torch.no_grad():
        bn = model[1]
        bn.weight.uniform_(0.5, 1.5)
        bn.bias.normal_()
        bn.running_mean.normal_()
        bn.running_var.uniform_(0.5, 2.0)
    return model.to(dtype).eval()


def batches_for(shape: tuple[int, ...], dtype: torch.dtype = torch.float64, sizes=(3, 5)):
    generator = torch.Generator().manual_seed(1)
    return [
        (torch.randn((n, *shape), generator=generator, dtype=dtype), torch.randint(0, 3, (n,), generator=generator))
        for n in sizes
    ]


def per_sample_fisher(model: nn.Module, batches) -> dict[str, torch.Tensor]:
    """Mean over every sample of the squared gradient of that sample's loss (a plain loop)."""
    named = dict(model.named_parameters())
    total = {n: torch.zeros_like(p) for n, p in named.items()}
    count = 0
    for x, y in batches:
        for n in range(len(y)):
            grads = torch.autograd.grad(LOSS(model(x[n : n + 1]), y[n : n + 1]), list(named.values()))
            for name, g in zip(named, grads):
                total[name] += g.square()
            count += 1
    return {n: t / count for n, t in total.items()}


def hessian_diagonal(model: nn.Module, batches) -> dict[str, torch.Tensor]:
    """Mean over batches of the exact Hessian diagonal, from the explicit flattened Hessian."""
    return as_dict(model, sum(h.diagonal() for _, h in per_batch_terms(model, batches, LOSS)) / len(batches))


def snapshot(model: nn.Module) -> tuple[dict[str, torch.Tensor], list[bool]]:
    return (
        {k: v.detach().clone() for k, v in model.state_dict().items()},
        [m.training for m in model.modules()],
    )


def test_magnitude_equals_abs_and_square() -> None:
    model = mlp()
    l1 = criteria.get("magnitude-l1").parameter_scores(model, [], LOSS)
    l2 = criteria.get("magnitude-l2").parameter_scores(model, [], LOSS)
    for name, p in model.named_parameters():
        assert torch.equal(l1[name], p.detach().abs())
        assert torch.equal(l2[name], p.detach() ** 2)


def test_random_is_seeded() -> None:
    model = mlp()
    first = criteria.get("random", seed=3).parameter_scores(model, [], LOSS)
    again = criteria.get("random", seed=3).parameter_scores(model, [], LOSS)
    other = criteria.get("random", seed=4).parameter_scores(model, [], LOSS)
    for name, p in model.named_parameters():
        assert first[name].shape == p.shape
        assert torch.equal(first[name], again[name])
        assert not torch.equal(first[name], other[name])
        assert bool(((first[name] >= 0) & (first[name] < 1)).all())


@pytest.mark.parametrize("make, shape", [(mlp, (4,)), (convnet, (2, 5, 5))])
@pytest.mark.parametrize("chunk_size", [None, 2])
def test_obd_equals_per_sample_loop(make, shape, chunk_size) -> None:
    model = make()
    batches = batches_for(shape)
    scores = criteria.get("obd", chunk_size=chunk_size).parameter_scores(model, batches, LOSS)
    fisher = per_sample_fisher(model, batches)
    for name, p in model.named_parameters():
        torch.testing.assert_close(scores[name], 0.5 * fisher[name] * p.detach() ** 2, rtol=1e-10, atol=1e-14)


@pytest.mark.parametrize("name", ["obd", "kfac-obd"])
def test_fisher_diagonal_on_a_timm_vit_equals_per_sample_loop(name) -> None:
    """vmap returns cls_token's per-sample gradient as a view of pos_embed's; squaring in place gave g⁴ there."""
    torch.manual_seed(0)
    model = tiny_vit(classes=3, dim=16, depth=1, heads=2, image=8).double().eval()
    batches = [(torch.randn(3, 3, 8, 8, dtype=torch.float64), torch.tensor([0, 1, 2]))]
    with sdpa_kernel(SDPBackend.MATH):
        fisher = per_sample_fisher(model, batches)
    scores = criteria.get(name).parameter_scores(model, batches, LOSS)
    names = list(fisher) if name == "obd" else ["cls_token", "pos_embed", "norm.weight", "blocks.0.norm1.bias"]
    for param in names:
        expected = 0.5 * fisher[param] * dict(model.named_parameters())[param].detach() ** 2
        torch.testing.assert_close(scores[param], expected, rtol=1e-9, atol=1e-14, msg=param)


def test_obd_rejects_batch_norm_in_train_mode() -> None:
    model = convnet()
    with pytest.raises(ValueError, match="batch norm in train mode"):
        criteria.get("obd", mode="train").parameter_scores(model, batches_for((2, 5, 5)), LOSS)


def test_hutchinson_error_shrinks_with_probes() -> None:
    model = mlp()
    batches = batches_for((4,))
    exact = hessian_diagonal(model, batches)
    target = torch.cat([(0.5 * exact[n] * p.detach() ** 2).reshape(-1) for n, p in model.named_parameters()])

    def mean_relative_error(k: int) -> float:
        errors = []
        for seed in range(6):
            scores = criteria.get("obd-hutchinson", k=k, seed=seed).parameter_scores(model, batches, LOSS)
            estimate = torch.cat([scores[n].reshape(-1) for n, _ in model.named_parameters()])
            errors.append(float((estimate - target).norm() / target.norm()))
        return sum(errors) / len(errors)

    coarse, fine = mean_relative_error(1), mean_relative_error(36)
    # The estimator's standard deviation falls as 1/sqrt(k): 6x from k=1 to k=36.
    assert fine < coarse / 3


def explicit_factors(model: nn.Module, batches, module: nn.Module) -> tuple[torch.Tensor, torch.Tensor]:
    """A = E_n mean_p [ã ãᵀ] (ã = [patch; 1]) and G = E_n Σ_p g gᵀ, one sample at a time."""
    record = {}

    def keep(mod, inputs, output):
        record["input"] = inputs[0].detach()
        output.retain_grad()
        record["output"] = output

    handle = module.register_forward_hook(keep)
    a_sum, g_sum, count = 0, 0, 0
    try:
        for x, y in batches:
            for n in range(len(y)):
                LOSS(model(x[n : n + 1]), y[n : n + 1]).backward()
                inputs, grad = record["input"], record["output"].grad
                if isinstance(module, nn.Conv2d):
                    patches = F.unfold(inputs, module.kernel_size, module.dilation, module.padding, module.stride)[0].T
                    grad = grad[0].flatten(1).T
                else:
                    patches, grad = inputs, grad
                patches = torch.cat([patches, torch.ones(patches.shape[0], 1, dtype=patches.dtype)], dim=1)
                a_sum = a_sum + patches.T @ patches / patches.shape[0]
                g_sum = g_sum + grad.T @ grad
                count += 1
    finally:
        handle.remove()
        model.zero_grad(set_to_none=True)
    return a_sum / count, g_sum / count


def sampled_batches(model: nn.Module, batches, seed: int):
    """The batches with one label per sample drawn from softmax(model(x)) by a CPU generator seeded with ``seed``."""
    generator = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        return [(x, torch.multinomial(model(x).softmax(1), 1, generator=generator)[:, 0]) for x, _ in batches]


@pytest.mark.parametrize("fisher", ["true", "empirical"])
def test_kronecker_factors_equal_explicit_expectations(fisher) -> None:
    model = convnet()
    batches = batches_for((2, 5, 5))
    factors = kronecker_factors(model, batches, LOSS, fisher=fisher, seed=7)
    labelled = sampled_batches(model, batches, seed=7) if fisher == "true" else batches
    assert set(factors) == {"0", "4"}
    for name in ("0", "4"):
        a, g = explicit_factors(model, labelled, model.get_submodule(name))
        torch.testing.assert_close(factors[name][0], a, rtol=1e-10, atol=1e-14)
        torch.testing.assert_close(factors[name][1], g, rtol=1e-10, atol=1e-14)


def test_kfac_scores_match_explicit_kronecker_product() -> None:
    model = convnet()
    batches = batches_for((2, 5, 5))
    factors = kronecker_factors(model, batches, LOSS, seed=step_seed(0, 0))  # a criterion never reseeded scores as step 0
    damping = 0.1
    obd = criteria.get("kfac-obd").parameter_scores(model, batches, LOSS)
    obs = criteria.get("kfac-obs", damping=damping).parameter_scores(model, batches, LOSS)
    for name in ("0", "4"):
        module = model.get_submodule(name)
        a, g = factors[name]
        weight = torch.cat(
            [module.weight.detach().reshape(module.weight.shape[0], -1), module.bias.detach().unsqueeze(1)], dim=1
        )
        # Row-major vec(W̃): element (o, i) sits at o * d_in + i, so the layer's curvature is kron(G, A).
        curvature = torch.kron(g, a)
        lam = damping * torch.trace(curvature) / curvature.shape[0]
        theta = weight.reshape(-1)
        expected_obd = (0.5 * theta**2 * curvature.diagonal()).view_as(weight)
        inverse = torch.linalg.inv(curvature + lam * torch.eye(curvature.shape[0], dtype=curvature.dtype))
        expected_obs = (theta**2 / (2 * inverse.diagonal())).view_as(weight)
        for scores, expected in ((obd, expected_obd), (obs, expected_obs)):
            torch.testing.assert_close(scores[f"{name}.weight"].reshape(weight.shape[0], -1), expected[:, :-1], rtol=1e-9, atol=1e-14)
            torch.testing.assert_close(scores[f"{name}.bias"], expected[:, -1], rtol=1e-9, atol=1e-14)


def test_kfac_fallback_for_unfactored_parameters() -> None:
    model = convnet()
    batches = batches_for((2, 5, 5))
    reference = criteria.get("obd").parameter_scores(model, batches, LOSS)
    for name in ("kfac-obd", "kfac-obs"):
        with_obd = criteria.get(name).parameter_scores(model, batches, LOSS)
        with_zero = criteria.get(name, fallback="zero").parameter_scores(model, batches, LOSS)
        for param in ("1.weight", "1.bias"):
            torch.testing.assert_close(with_obd[param], reference[param], rtol=1e-10, atol=1e-14)
            assert bool((reference[param] > 0).all())
            assert torch.equal(with_zero[param], torch.zeros_like(reference[param]))
        torch.testing.assert_close(with_zero["0.weight"], with_obd["0.weight"], rtol=0, atol=0)


def test_kfac_accepts_functional_loss_and_rejects_unknown_losses() -> None:
    model, batches = mlp(), batches_for((4,))
    with_module = criteria.get("kfac-obs").parameter_scores(model, batches, LOSS)
    with_function = criteria.get("kfac-obs").parameter_scores(model, batches, F.cross_entropy)
    for name, scores in with_module.items():
        assert torch.equal(scores, with_function[name])
    with pytest.raises(ValueError, match="CrossEntropyLoss"):
        criteria.get("kfac-obd").parameter_scores(model, batches, lambda out, y: 2 * F.cross_entropy(out, y))


CRITERIA = [
    ("random", {}),
    ("magnitude-l1", {}),
    ("magnitude-l2", {}),
    ("taylor", {}),
    ("oba", {}),
    ("oba-released", {}),
    ("fastoba", {}),
    ("taylor2", {}),
    ("taylor2-group", {}),
    ("taylor2-group", {"probes": 2}),
    ("obd", {}),
    ("obd-hutchinson", {"k": 2}),
    ("kfac-obd", {}),
    ("kfac-obs", {}),
    ("kfac-obs", {"fisher": "empirical"}),
]


@pytest.mark.parametrize("dtype", [torch.float32, torch.float64])
@pytest.mark.parametrize("name, options", CRITERIA)
def test_criterion_leaves_model_unchanged(name, options, dtype) -> None:
    model = convnet(dtype).train()
    batches = batches_for((2, 5, 5), dtype)
    state, modes = snapshot(model)
    criterion = criteria.get(name, mode="eval", **options)
    scores = criterion.parameter_scores(model, batches, LOSS)
    groups = [
        Group((ParamSlice("0.weight", 0, torch.tensor([c])), ParamSlice("0.bias", 0, torch.tensor([c])),
               ParamSlice("1.weight", 0, torch.tensor([c])), ParamSlice("1.bias", 0, torch.tensor([c]))), f"ch{c}")
        for c in range(3)
    ]
    group_scores = criterion.group_scores(model, batches, LOSS, groups)
    for param_name, p in model.named_parameters():
        assert scores[param_name].shape == p.shape
        assert scores[param_name].dtype == dtype
        assert bool(scores[param_name].isfinite().all())
    assert group_scores.shape == (3,) and bool(group_scores.isfinite().all())
    after, after_modes = snapshot(model)
    assert after_modes == modes
    for key, value in state.items():
        assert torch.equal(after[key], value), key
    assert all(p.grad is None for p in model.parameters())
