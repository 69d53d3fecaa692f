"""The CUDA path, checked on the CPU: the device a trial runs on, paths resolved on the driver, warm-up
and synchronisation around timed sections, true fp32 while scoring, reproducible training on CUDA,
and a dense-checkpoint cache that tells devices apart.

Where the code would reach for a GPU, the test pretends one is there (``torch.cuda.is_available``
patched to True): code that still picks CUDA then fails, because this machine has none.
"""
from __future__ import annotations

import os
import time
from pathlib import Path
from typing import Any

import pytest
import torch
from nets import ResidualCNN
from torch import Tensor, nn

import oba
from oba.core.measure import gradient_seconds, timed, warm_up
from oba.core.model_calls import full_fp32, scoring_context
from oba.criteria.fidelity import loss_changes
from oba.pruning import prune
from oba.store.paths import resolve_path
from oba.store.results import ResultStore
from oba.suite import trial
from oba.suite.cells import dense_keys, expand
from oba.suite.config import load_suite
from oba.suite.plan import plan_run
from oba.training.checkpoints import checkpoint_key, device_metadata
from oba.training.execution import reproducible
from oba.training.train import Recipe
from suites import tiny_suite

LOSS = nn.functional.cross_entropy
STALL = 1.0
"""Seconds the first backward pass of :class:`FirstBackwardStalls` takes (what kernel loading costs on a GPU)."""


def _batches(n: int = 2, size: int = 8) -> list[tuple[Tensor, Tensor]]:
    return [(torch.randn(size, 2, 6, 6), torch.randint(0, 3, (size,))) for _ in range(n)]


# -- 1. the device a trial runs on -------------------------------------------------------------------------------


def test_a_trial_without_gpus_runs_on_the_cpu_and_one_with_gpus_on_cuda() -> None:
    assert [trial.trial_device(gpu) for gpu in (0, 0.0, 0.25, 1, 2)] == ["cpu", "cpu", "cuda", "cuda", "cuda"]


def test_a_gpu_0_trial_records_a_cpu_device_even_where_cuda_is_visible(tmp_path: Path, monkeypatch) -> None:
    """What a worker given no GPU sees under Ray ≥ 2.49: CUDA_VISIBLE_DEVICES set, CUDA "available"."""
    suite = load_suite(tiny_suite(tmp_path, criteria=("taylor",)))
    (cell,) = expand(suite)
    monkeypatch.setenv("CUDA_VISIBLE_DEVICES", "0")
    monkeypatch.setattr(torch.cuda, "is_available", lambda: True)
    device = trial.trial_device(suite.resources["gpu"])
    threads = torch.get_num_threads()
    trial._prepare_dense(*dense_keys([cell])[0], suite, str(tmp_path / "cache"), None, threads, device)
    counts = trial.run_trial_cells(_trial_config(tmp_path, threads, device, suite.resources["gpu"]), [cell])
    row = ResultStore(str(tmp_path / "results")).read_cell(cell.cell_id)
    assert row["status"] == "ok", row["error"]
    assert row["device"].startswith("cpu:") and counts == (1, 1)


def _trial_config(tmp_path: Path, threads: int, device: str, gpu: float) -> dict[str, Any]:
    return {"pipeline": "full", "results": str(tmp_path / "results"), "cache_dir": str(tmp_path / "cache"), "git_sha": "test",
            "threads": threads, "data_root": None, "download": False, "device": device, "gpu": gpu}


# -- 2. paths resolved on the driver -----------------------------------------------------------------------------


def test_every_local_path_of_a_run_is_resolved_on_the_driver(tmp_path: Path, monkeypatch) -> None:
    home, work = tmp_path / "home", tmp_path / "work"
    (home / "data").mkdir(parents=True)
    work.mkdir()
    monkeypatch.setenv("HOME", str(home))
    monkeypatch.chdir(work)
    assert resolve_path("~/data") == str(home / "data") and resolve_path("data") == str(work / "data")
    suite_path = tiny_suite(tmp_path, data_root=Path("~/data"))
    suite_path.write_text(suite_path.read_text().replace(f'cache_dir = "{tmp_path / "cache"}"', 'cache_dir = "~/cache"'))
    plan = plan_run(load_suite(suite_path), "~/results")
    assert (plan.data_root, plan.cache_dir, plan.results) == (str(home / "data"), str(home / "cache"), str(home / "results"))


# -- 4. warm-up before, and synchronisation around, every timed section ------------------------------------------


class _StallOnce(torch.autograd.Function):
    """Identity whose first backward pass in the process sleeps ``STALL`` seconds."""

    stalled = False

    @staticmethod
    def forward(ctx: Any, x: Tensor) -> Tensor:
        return x.view_as(x)

    @staticmethod
    def backward(ctx: Any, grad: Tensor) -> Tensor:
        if not _StallOnce.stalled:
            _StallOnce.stalled = True
            time.sleep(STALL)
        return grad


class FirstBackwardStalls(ResidualCNN):
    """A ResidualCNN whose first backward pass is slow, as the first CUDA work of a process is."""

    def forward(self, x: Tensor) -> Tensor:
        return _StallOnce.apply(super().forward(x))


@pytest.fixture
def stalling_model() -> FirstBackwardStalls:
    _StallOnce.stalled = False
    return FirstBackwardStalls()


def test_the_gradient_pass_is_timed_after_a_warm_up(stalling_model: FirstBackwardStalls) -> None:
    assert gradient_seconds(stalling_model, _batches(), LOSS, "eval") < STALL


@pytest.mark.parametrize("structure", ["channels", "unstructured"])
def test_pruning_times_scoring_after_a_warm_up(stalling_model: FirstBackwardStalls, structure: str) -> None:
    batches = _batches()
    _, record = prune(stalling_model, batches[0][0], batches, LOSS, "taylor", ratio=0.3, structure=structure, steps=1)
    assert record.dense_scoring_seconds < STALL


def test_a_warm_up_leaves_no_trace() -> None:
    """Parameters, batch-norm statistics, modes, gradients and the random stream are as before."""
    model, batches = nn.Sequential(ResidualCNN(), nn.Dropout(0.5)).train(), _batches()
    model[0].bn1.eval()
    before = {k: v.clone() for k, v in model.state_dict().items()}
    modes = [m.training for m in model.modules()]
    rng = torch.get_rng_state()
    warm_up(model, batches, LOSS, "train")
    assert torch.equal(torch.get_rng_state(), rng)
    assert [m.training for m in model.modules()] == modes
    assert all(torch.equal(before[k], v) for k, v in model.state_dict().items())
    assert all(p.grad is None for p in model.parameters())


def test_a_timed_section_synchronises_cuda_before_the_clock_starts_and_before_it_stops(monkeypatch) -> None:
    events: list[str] = []
    monkeypatch.setattr(torch.cuda, "synchronize", lambda device=None: events.append(f"sync {device}"))
    with timed(torch.device("cuda", 0)) as clock:
        events.append("work")
    assert events == ["sync cuda:0", "work", "sync cuda:0"] and clock.seconds > 0
    with timed(torch.device("cpu")):
        events.append("cpu work")
    assert events[3:] == ["cpu work"], "nothing to wait for on the CPU"


# -- 5. true fp32 while scoring and measuring fidelity -----------------------------------------------------------


class _SeesPrecision(ResidualCNN):
    """Records, at every forward, whether TF32 is allowed for matrix products and for cuDNN convolutions."""

    def __init__(self) -> None:
        super().__init__()
        self.seen: set[tuple[bool, bool]] = set()

    def forward(self, x: Tensor) -> Tensor:
        self.seen.add((torch.backends.cuda.matmul.allow_tf32, torch.backends.cudnn.allow_tf32))
        return super().forward(x)


@pytest.fixture
def tf32_allowed():
    """TF32 allowed everywhere (PyTorch's default for cuDNN; ``high`` precision for matrix products); restored after."""
    matmul, cudnn = torch.get_float32_matmul_precision(), torch.backends.cudnn.allow_tf32
    torch.set_float32_matmul_precision("high")
    torch.backends.cudnn.allow_tf32 = True
    yield
    torch.set_float32_matmul_precision(matmul)
    torch.backends.cudnn.allow_tf32 = cudnn


@pytest.mark.usefixtures("tf32_allowed")
@pytest.mark.parametrize("criterion", ["taylor2", "oba"])
def test_scoring_and_fidelity_run_in_true_fp32_and_restore_the_settings(criterion: str) -> None:
    model, batches = _SeesPrecision(), _batches()
    groups = oba.pruning.find_groups(model, batches[0][0])[1][0].units[:2]
    model.seen.clear()
    oba.criteria.get(criterion).parameter_scores(model, batches, LOSS)
    loss_changes(model, batches, LOSS, groups)
    with scoring_context(model):
        model(batches[0][0])
    assert model.seen == {(False, False)}
    assert torch.get_float32_matmul_precision() == "high" and torch.backends.cudnn.allow_tf32


def test_full_fp32_leaves_settings_already_at_full_precision_exactly_as_they_were() -> None:
    state = (torch.get_float32_matmul_precision(), torch.backends.cuda.matmul.fp32_precision,
             torch.backends.cudnn.allow_tf32)
    with full_fp32():
        assert not torch.backends.cuda.matmul.allow_tf32 and not torch.backends.cudnn.allow_tf32
    assert (torch.get_float32_matmul_precision(), torch.backends.cuda.matmul.fp32_precision,
            torch.backends.cudnn.allow_tf32) == state


# -- 6. reproducible on CUDA, and a cache that tells devices apart -----------------------------------------------


def test_training_on_cuda_is_deterministic_and_the_settings_come_back(monkeypatch) -> None:
    monkeypatch.delenv("CUBLAS_WORKSPACE_CONFIG", raising=False)
    before = (torch.backends.cudnn.deterministic, torch.backends.cudnn.benchmark,
              torch.are_deterministic_algorithms_enabled())
    torch.backends.cudnn.benchmark = True
    try:
        with reproducible(torch.device("cpu")):
            assert not torch.are_deterministic_algorithms_enabled() and torch.backends.cudnn.benchmark
        assert "CUBLAS_WORKSPACE_CONFIG" not in os.environ, "the CPU path changes nothing"
        with reproducible(torch.device("cuda")):
            assert torch.backends.cudnn.deterministic and not torch.backends.cudnn.benchmark
            assert torch.are_deterministic_algorithms_enabled() and torch.is_deterministic_algorithms_warn_only_enabled()
            assert os.environ["CUBLAS_WORKSPACE_CONFIG"] == ":4096:8"
        assert torch.backends.cudnn.benchmark and not torch.are_deterministic_algorithms_enabled()
    finally:
        torch.backends.cudnn.benchmark = before[1]
    assert (torch.backends.cudnn.deterministic, torch.are_deterministic_algorithms_enabled()) == (before[0], before[2])


def test_the_cache_key_tells_gpu_weights_from_cpu_weights_and_keeps_every_cpu_key() -> None:
    recipe = Recipe(epochs=3, batch_size=32, lr=0.05, weight_decay=1e-4)
    cpu = checkpoint_key("resnet8", "synthetic", recipe, 0, {"n": 256})
    assert cpu == "c6c33c8fa72356c85890", "the key of CPU checkpoints cached before devices were told apart"
    assert checkpoint_key("resnet8", "synthetic", recipe, 0, {"n": 256}, torch.device("cpu")) == cpu
    gpu = {checkpoint_key("resnet8", "synthetic", recipe, 0, {"n": 256}, d) for d in ("cuda", "cuda:0", "cuda:1")}
    assert len(gpu) == 1 and cpu not in gpu, "the device type is the identity, not its index"


def test_dense_metadata_names_the_gpu(monkeypatch) -> None:
    monkeypatch.setattr(torch.cuda, "get_device_name", lambda device=None: "NVIDIA H200")
    assert device_metadata(torch.device("cuda", 0)) == {"device": "cuda:0", "gpu": "NVIDIA H200"}
    assert device_metadata(torch.device("cpu")) == {"device": "cpu"}


# -- 7. a failed cell and the trial's process -----------------------------------------------------------------------


def _failing_cell(tmp_path: Path) -> Any:
    (cell,) = expand(load_suite(tiny_suite(tmp_path, criteria=("taylor",))))
    return type(cell)(cell.suite, cell.cell_id, {**cell.config, "criterion_options": {"no_such_option": 1}})


def test_a_failed_cell_on_a_usable_device_keeps_its_actor(tmp_path: Path) -> None:
    cell = _failing_cell(tmp_path)
    assert trial.run_trial_cells(_trial_config(tmp_path, 1, "cpu", 0), [cell]) == (1, 0)
    row = ResultStore(str(tmp_path / "results")).read_cell(cell.cell_id)
    assert row["status"] == "error" and "no_such_option" in row["error"]


def test_a_failed_cell_that_left_the_device_unusable_stores_its_row_then_ends_the_actor(tmp_path: Path, monkeypatch) -> None:
    """A sticky CUDA error cannot be caused on a CPU machine; the trial's answer to one is what is tested."""
    from oba.training.device_health import DeviceUnusable

    cell = _failing_cell(tmp_path)
    monkeypatch.setattr(trial, "device_usable", lambda device: False)
    with pytest.raises(DeviceUnusable, match="unusable after the cell failed"):
        trial.run_trial_cells(_trial_config(tmp_path, 1, "cpu", 0), [cell])
    assert ResultStore(str(tmp_path / "results")).read_cell(cell.cell_id)["status"] == "error"
