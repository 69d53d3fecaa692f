"""Latency and the gradient-pass clock: what they run, and that they leave the model as it was."""
from __future__ import annotations

import pytest
import torch
from torch import nn

from oba.core.measure import gradient_seconds, measure_latency


def _net() -> nn.Module:
    torch.manual_seed(0)
    return nn.Sequential(nn.Conv2d(2, 4, 3), nn.BatchNorm2d(4), nn.ReLU(), nn.Flatten(), nn.Linear(144, 3)).train()


@pytest.mark.parametrize("channels_last", [True, False])
def test_latency_times_the_forwards_in_the_chosen_format_and_restores_the_model(channels_last: bool) -> None:
    model = _net()
    state = {k: v.clone() for k, v in model.state_dict().items()}
    seen: list[tuple[bool, bool]] = []
    model[0].register_forward_pre_hook(lambda module, inputs: seen.append(
        (not module.weight.is_contiguous(), torch.is_grad_enabled())))
    milliseconds = measure_latency(model, torch.randn(2, 2, 8, 8), warmup=2, repeats=3, channels_last=channels_last)
    assert milliseconds > 0
    assert seen == [(channels_last, False)] * 5
    assert model.training and all(p.is_contiguous() for p in model.parameters())
    assert all(torch.equal(state[k], v) for k, v in model.state_dict().items())


def test_the_gradient_clock_runs_the_warm_up_and_every_batch_and_leaves_no_trace() -> None:
    model = _net()
    state = {k: v.clone() for k, v in model.state_dict().items()}
    batches = [(torch.randn(2, 2, 8, 8), torch.tensor([0, 2])) for _ in range(3)]
    calls: list[int] = []
    model[0].register_forward_pre_hook(lambda module, inputs: calls.append(1))
    seconds = gradient_seconds(model, batches, nn.functional.cross_entropy, "eval")
    assert seconds > 0 and len(calls) == 1 + len(batches)
    assert model.training and all(p.grad is None for p in model.parameters())
    assert all(torch.equal(state[k], v) for k, v in model.state_dict().items())
