"""Building pruning groups never hangs, channel shuffles prune exactly, and what cannot be traced is refused fast."""
from __future__ import annotations

import copy
import threading
import time
from pathlib import Path

import pytest
import torch
import torchvision
from test_run_command import error_lines, run_cmd
from torch import nn

import oba
from oba._errors import UserError
from oba.pruning.dependency_groups import find_groups, remove_units
from oba.pruning.forward_check import forward_failure
from oba.pruning.graph import UnsupportedModel, build_graph
from oba.pruning.graph_deadline import ENV_VAR, GraphBuildTimeout, build_seconds, call_with_deadline
from oba.pruning.probe import groups_problem, pruning_problem
from suites import tiny_suite

LOSS = nn.functional.cross_entropy


def _spin() -> None:
    while True:
        pass


def _spin_swallowing() -> None:
    """Spinning that swallows the first exceptions raised in it, as Torch-Pruning's bare ``except:`` around the trace
    would (a body that swallows every exception forever cannot be stopped from inside its thread)."""
    for _ in range(3):
        try:
            _spin()
        except BaseException:  # noqa: BLE001 - the point of the test
            pass
    _spin()


def _watchdogs() -> list[threading.Thread]:
    return [t for t in threading.enumerate() if t.name == "oba-graph-deadline"]


@pytest.mark.parametrize("body", [_spin, _spin_swallowing])
def test_deadline_stops_a_loop_in_a_worker_thread(body) -> None:
    outcome: list[BaseException] = []

    def worker() -> None:
        try:
            call_with_deadline(body, time.monotonic() + 0.3, "spinning")
        except GraphBuildTimeout as err:
            outcome.append(err)

    thread = threading.Thread(target=worker, daemon=True)
    start = time.monotonic()
    thread.start()
    thread.join(10)
    assert not thread.is_alive() and time.monotonic() - start < 5
    assert len(outcome) == 1 and str(outcome[0]) == "spinning"
    assert not _watchdogs()


def test_deadline_leaves_a_call_that_ends_in_time_alone() -> None:
    assert call_with_deadline(lambda: 7, time.monotonic() + 0.2, "quick") == 7
    time.sleep(0.4)  # nothing is raised here afterwards
    assert not _watchdogs()


class _SlowInPython(nn.Module):
    """A net whose forward spends ``seconds`` in a pure-Python loop (a stand-in for a graph that takes forever)."""

    def __init__(self, seconds: float) -> None:
        super().__init__()
        self.seconds = seconds
        self.conv = nn.Conv2d(3, 4, 3)
        self.fc = nn.Linear(4, 2)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if torch.is_grad_enabled():  # the trace; not the no-grad forward that finds the classifier
            end = time.monotonic() + self.seconds
            while time.monotonic() < end:
                pass
        return self.fc(self.conv(x).mean((2, 3)))


def test_a_graph_build_past_the_bound_is_a_user_error_naming_model_and_place(monkeypatch) -> None:
    monkeypatch.setenv(ENV_VAR, "0.5")
    model = _SlowInPython(60.0)
    start = time.monotonic()
    with pytest.raises(GraphBuildTimeout) as caught:
        find_groups(model, torch.randn(1, 3, 8, 8))
    assert time.monotonic() - start < 10
    assert isinstance(caught.value, UserError) and "\n" not in str(caught.value)
    assert str(caught.value).startswith("_SlowInPython: building its pruning groups did not finish within 0.5 s")
    assert "stuck in Torch-Pruning _trace" in str(caught.value)
    assert all(not m._forward_hooks and not m._forward_pre_hooks for m in model.modules())
    assert not _watchdogs()


def test_a_small_bound_on_a_real_model_and_the_argument_overriding_it(monkeypatch) -> None:
    model = oba.models.create("resnet8", 10, 3, 16)
    with pytest.raises(GraphBuildTimeout, match="ResNet"):
        build_graph(model, torch.randn(1, 3, 16, 16), seconds=0.0)
    monkeypatch.setenv(ENV_VAR, "0")
    assert build_graph(model, torch.randn(1, 3, 16, 16), seconds=60).get_all_groups()


def test_the_bound_comes_from_the_environment_or_the_constant(monkeypatch) -> None:
    monkeypatch.delenv(ENV_VAR, raising=False)
    assert build_seconds() == 60.0 and build_seconds(3) == 3.0
    monkeypatch.setenv(ENV_VAR, "soon")
    with pytest.raises(UserError, match=ENV_VAR):
        build_seconds()


def test_attention_reshapes_are_not_taken_for_channel_shuffles() -> None:
    model = oba.models.create("vit-tiny", 10, 3, 16)
    assert build_graph(model, torch.randn(1, 3, 16, 16)).barrier == set()


def _shufflenet() -> nn.Module:
    model = torchvision.models.shufflenet_v2_x0_5(num_classes=10)
    for module in model.modules():
        if isinstance(module, nn.BatchNorm2d):
            module.running_mean.uniform_(-0.5, 0.5)
            module.running_var.uniform_(0.5, 2.0)
    return model.eval()


@pytest.mark.slow
def test_shufflenet_removal_equals_zeroing_the_removed_units() -> None:
    dense = _shufflenet()
    x = torch.randn(2, 3, 32, 32)
    pruned = copy.deepcopy(dense)
    dg, groups = find_groups(pruned, x[:1])
    assert dg.barrier and {"conv1.0", "conv5.0", "stage3.0.branch2.3"} <= {g.name for g in groups}
    shapes = {name: p.shape for name, p in pruned.named_parameters()}
    params = dict(dense.named_parameters())
    with torch.no_grad():
        for group in groups:
            for unit in (0, len(group) - 1):
                for name, mask in group.units[unit].masks(shapes).items():
                    params[name][mask] = 0.0
            remove_units(dg, group, [0, len(group) - 1])
    assert sum(p.numel() for p in pruned.parameters()) < sum(p.numel() for p in dense.parameters())
    with torch.no_grad():
        torch.testing.assert_close(pruned(x), dense(x), atol=1e-5, rtol=1e-4)


@pytest.mark.slow
def test_swin_is_refused_in_seconds_naming_the_op() -> None:
    model = torchvision.models.swin_t(num_classes=10)
    start = time.monotonic()
    with pytest.raises(UnsupportedModel) as caught:
        find_groups(model, torch.randn(1, 3, 32, 32))
    assert time.monotonic() - start < 5
    message = str(caught.value)
    assert isinstance(caught.value, UserError) and "\n" not in message
    assert message.startswith("SwinTransformer: cannot build pruning groups: features.1.0.attn.qkv (Linear)")
    assert "ShiftedWindowAttention" in message


def test_registered_models_are_not_probed() -> None:
    assert groups_problem("resnet8") is None


@pytest.mark.slow
def test_a_suite_with_an_untraceable_model_is_refused_before_compute(tmp_path: Path) -> None:
    suite = tiny_suite(tmp_path, models=("resnet8", "torchvision:swin_t"))
    for flags in (["--dry-run"], []):
        [line] = error_lines(run_cmd(str(suite), "--results", str(tmp_path / "results"), *flags))
        assert line.startswith("oba run: error: model torchvision:swin_t: SwinTransformer: cannot build pruning groups")
    assert not (tmp_path / "cache").exists() or not any((tmp_path / "cache").iterdir())


class _StoredSplit(nn.Module):
    """Splits its input's channels by sizes stored on the module (as timm's MixedConv2d), then 1×1 convs each part."""

    def __init__(self, channels: int) -> None:
        super().__init__()
        self.sizes = [channels // 2, channels - channels // 2]
        self.first, self.second = nn.Conv2d(self.sizes[0], 4, 1), nn.Conv2d(self.sizes[1], 4, 1)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        a, b = torch.split(x, self.sizes, dim=1)
        return self.first(a) + self.second(b)


def _stored_split_net() -> nn.Module:
    return nn.Sequential(nn.Conv2d(3, 8, 3), nn.ReLU(), _StoredSplit(8), nn.ReLU(), nn.AdaptiveAvgPool2d(1),
                         nn.Flatten(), nn.Linear(4, 5)).eval()


def test_a_width_stored_outside_the_graph_is_refused_by_the_probe_and_by_prune_naming_the_module() -> None:
    x = torch.randn(1, 3, 8, 8)
    problem = pruning_problem(_stored_split_net(), x)
    assert problem is not None and "\n" not in problem
    assert problem.startswith("Sequential: its forward fails once one unit of every pruning group is removed, "
                              "at 2 (_StoredSplit): RuntimeError: split_with_sizes")
    with pytest.raises(UnsupportedModel, match=r"^Sequential: its forward fails once units are removed, at 2 "
                                               r"\(_StoredSplit\): RuntimeError: split_with_sizes"):
        oba.prune(_stored_split_net(), x, [(torch.randn(2, 3, 8, 8), torch.randint(0, 5, (2,)))], LOSS, "magnitude-l1",
                  ratio=0.2, steps=1)


def test_the_probe_passes_a_model_that_prunes_and_leaves_the_forward_failure_check_quiet() -> None:
    model = oba.models.create("resnet8", 10, 3, 16)
    assert pruning_problem(model, torch.randn(1, 3, 16, 16)) is None
    assert forward_failure(model, torch.randn(1, 3, 16, 16)) is None
    assert sum(p.numel() for p in model.parameters()) < sum(
        p.numel() for p in oba.models.create("resnet8", 10, 3, 16).parameters())
