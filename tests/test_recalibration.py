"""Batch-norm recalibration against statistics computed independently with forward hooks."""
from __future__ import annotations

import copy

import pytest
import torch
from torch import nn

from oba.core.recalibration import recalibrate_batchnorm


def _net() -> nn.Module:
    torch.manual_seed(3)
    return nn.Sequential(
        nn.Conv2d(1, 4, 3), nn.BatchNorm2d(4), nn.ReLU(), nn.Dropout(0.5),
        nn.Conv2d(4, 6, 3), nn.BatchNorm2d(6), nn.ReLU(), nn.Flatten(), nn.LazyLinear(3),
    )


def _batches(count: int = 3, size: int = 10) -> list[tuple[torch.Tensor, torch.Tensor]]:
    generator = torch.Generator().manual_seed(7)
    return [(torch.randn(size, 1, 8, 8, generator=generator) * 2 + 1, torch.zeros(size, dtype=torch.long)) for _ in range(count)]


def _expected_statistics(model: nn.Module, batches) -> dict[str, tuple[torch.Tensor, torch.Tensor]]:
    """Mean over batches of each BN input's per-channel mean and unbiased variance, with dropout off.

    The inputs of the second BN depend on the first BN's output, which during recalibration is
    normalised with the *batch* statistics (train-mode BN): reproduced by running each BN layer
    by hand in train mode on a copy.
    """
    model = copy.deepcopy(model).eval()
    seen: dict[str, list[torch.Tensor]] = {}

    def hook(name):
        def record(module, inputs, output):
            seen.setdefault(name, []).append(inputs[0].detach())
            x = inputs[0]
            mean = x.mean(dim=(0, 2, 3), keepdim=True)
            var = x.var(dim=(0, 2, 3), unbiased=False, keepdim=True)
            return (x - mean) / torch.sqrt(var + module.eps) * module.weight[None, :, None, None] + module.bias[None, :, None, None]
        return record

    for name, module in model.named_modules():
        if isinstance(module, nn.BatchNorm2d):
            module.register_forward_hook(hook(name))
    with torch.no_grad():
        for inputs, _ in batches:
            model(inputs)
    out = {}
    for name, xs in seen.items():
        means = torch.stack([x.mean(dim=(0, 2, 3)) for x in xs]).mean(0)
        variances = torch.stack([x.var(dim=(0, 2, 3), unbiased=True) for x in xs]).mean(0)
        out[name] = (means, variances)
    return out


def test_running_statistics_equal_the_batch_average_with_dropout_off() -> None:
    model = _net()
    batches = _batches()
    model(batches[0][0])  # materialise the lazy layer
    model.train()
    parameters = {k: v.clone() for k, v in model.named_parameters()}
    expected = _expected_statistics(model, batches)
    assert recalibrate_batchnorm(model, batches) == 2
    for name, module in model.named_modules():
        if isinstance(module, nn.BatchNorm2d):
            mean, var = expected[name]
            torch.testing.assert_close(module.running_mean, mean, rtol=1e-5, atol=1e-6)
            torch.testing.assert_close(module.running_var, var, rtol=1e-5, atol=1e-6)
            assert module.momentum == 0.1 and int(module.num_batches_tracked) == len(batches)
    assert model.training and all(m.training for m in model.modules())
    for name, value in model.named_parameters():
        assert torch.equal(value, parameters[name])


def test_stale_statistics_are_replaced_and_a_net_without_batch_norm_is_untouched() -> None:
    model = _net()
    batches = _batches()
    model(batches[0][0])
    model.eval()
    bn = model[1]
    bn.running_mean.fill_(100.0)
    bn.running_var.fill_(1e-4)
    stale = model(batches[0][0]).detach()
    recalibrate_batchnorm(model, batches)
    assert float(bn.running_mean.abs().max()) < 10.0
    assert not torch.allclose(model(batches[0][0]), stale)
    assert not model.training
    plain = nn.Sequential(nn.Flatten(), nn.Linear(64, 3))
    before = copy.deepcopy(plain.state_dict())
    assert recalibrate_batchnorm(plain, batches) == 0
    assert all(torch.equal(before[k], v) for k, v in plain.state_dict().items())
    with pytest.raises(ValueError, match="at least one batch"):
        recalibrate_batchnorm(model, [])


@pytest.mark.parametrize("channels_last", [True, False])
def test_the_passes_run_in_the_chosen_memory_format_and_the_model_comes_back_as_it_was(channels_last: bool) -> None:
    model = _net()
    batches = _batches()
    model(batches[0][0])
    expected = _expected_statistics(model, batches)
    formats: list[bool] = []
    model[4].register_forward_pre_hook(
        lambda module, inputs: formats.append(inputs[0].is_contiguous(memory_format=torch.channels_last)))
    recalibrate_batchnorm(model, batches, channels_last=channels_last)
    assert formats == [channels_last] * len(batches)
    torch.testing.assert_close(model[5].running_mean, expected["5"][0], rtol=1e-5, atol=1e-6)
    torch.testing.assert_close(model[5].running_var, expected["5"][1], rtol=1e-5, atol=1e-6)
    assert all(p.is_contiguous() for p in model.parameters())
