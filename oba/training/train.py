"""Dense training, fine-tuning and evaluation with validation-based model selection.

One loop serves both: :func:`train` runs a :class:`Recipe` on the train split,
evaluates the validation split after every epoch (and before the first), keeps
the state with the best validation top-1 (ties: lower validation loss, then the
earlier epoch) and restores it at the end; the test split is evaluated once, on
the kept state, for reporting. It runs on CUDA when available, else on the CPU,
and is deterministic given ``recipe.seed``: on the CPU by itself, on CUDA under
:func:`~oba.training.execution.reproducible` (deterministic cuDNN and PyTorch algorithms). By default
(``channels_last = "auto"``) models with 2-d convolutions train and evaluate
in the channels-last memory format (faster kernels on the smoke CNNs:
benchmarks/memory_format.py) and are handed back in the format they came in.

``recipe.precision`` other than "fp32" runs the forward pass and the loss of
training and evaluation under ``torch.autocast`` (bf16, or fp16 with a
gradient scaler); parameters, gradients and optimiser state stay fp32. Only
these two functions autocast: scoring and fidelity run outside them, in the
parameters' own precision (oba/core/model_calls.py).
"""

from __future__ import annotations

import copy
import dataclasses
import logging
import math
import time
from collections.abc import Iterable
from dataclasses import dataclass, field
from typing import Any

import torch
from torch import Tensor, nn
from torch.optim.lr_scheduler import LambdaLR
from torch.utils.data import DataLoader, Dataset

from oba.core.memory_format import as_memory_format, in_memory_format, preferred_memory_format
from oba.data import Splits
from oba.data.splits import make_loader
from oba.training.execution import PRECISIONS, default_device, mixed_precision, model_device, reproducible

log = logging.getLogger(__name__)

OPTIMIZERS = ("sgd", "adamw")
SCHEDULES = ("cosine", "step", "none")
EVAL_BATCH_SIZE = 256
DIVERGENCE_CHECK_STEPS = 50
"""Training reads its loss back from the device (a sync) once per this many steps and at each epoch's end,
raising when any loss so far was not finite."""
# Fields added after cache keys and cell ids existed: to_dict leaves them out at these
# defaults, so every key and id made before they existed still holds.
OMITTED_AT_DEFAULT: dict[str, Any] = {"precision": "fp32", "channels_last": "auto"}


@dataclass(frozen=True)
class Recipe:
    """A training recipe; everything that changes the trained weights, and nothing else.

    ``schedule``: "cosine" anneals to zero over all steps, "step" multiplies the
    rate by ``gamma`` at each fraction of ``epochs`` in ``milestones``, "none"
    keeps it constant; all follow ``warmup_epochs`` of linear warm-up. Weight
    decay skips biases, normalisation parameters and the model's
    ``no_weight_decay()`` names (timm's position embedding and class token).
    ``momentum`` is SGD's; AdamW uses its default betas. ``precision``: "fp32",
    or "bf16"/"fp16" mixed precision (autocast for forward and loss, fp32 master
    weights; fp16 adds a gradient scaler; both run on the CPU too, slowly: they
    are meant for GPUs). ``channels_last``: "auto" (channels-last for models with
    2-d convolutions), true or false.
    """

    epochs: int = 10
    batch_size: int = 128
    optimizer: str = "sgd"
    lr: float = 0.1
    momentum: float = 0.9
    weight_decay: float = 5e-4
    schedule: str = "cosine"
    milestones: tuple[float, ...] = (0.5, 0.75)
    gamma: float = 0.1
    warmup_epochs: int = 0
    label_smoothing: float = 0.0
    seed: int = 0
    precision: str = "fp32"
    channels_last: str | bool = "auto"

    def __post_init__(self) -> None:
        if self.optimizer not in OPTIMIZERS:
            raise ValueError(f"unknown optimizer {self.optimizer!r}; valid optimizers: {', '.join(OPTIMIZERS)}")
        if self.schedule not in SCHEDULES:
            raise ValueError(f"unknown schedule {self.schedule!r}; valid schedules: {', '.join(SCHEDULES)}")
        if self.epochs < 0 or self.batch_size < 1 or self.lr <= 0 or not 0 <= self.warmup_epochs <= max(self.epochs, 0):
            raise ValueError(f"invalid recipe: {self}")
        if not all(0.0 < m <= 1.0 for m in self.milestones) or self.gamma <= 0:
            raise ValueError(f"step milestones must be fractions of the epochs in (0, 1] and gamma positive: {self}")
        if not 0.0 <= self.label_smoothing < 1.0:
            raise ValueError(f"label_smoothing must be in [0, 1) (got {self.label_smoothing})")
        if self.precision not in PRECISIONS:
            raise ValueError(f"unknown precision {self.precision!r}; valid precisions: {', '.join(PRECISIONS)}")
        if not (self.channels_last == "auto" or isinstance(self.channels_last, bool)):
            raise ValueError(f"channels_last must be \"auto\", true or false (got {self.channels_last!r})")
        object.__setattr__(self, "milestones", tuple(float(m) for m in self.milestones))

    def to_dict(self) -> dict[str, Any]:
        """A JSON-ready dict of the fields (the canonical form used in cache keys and cell ids).

        The fields in :data:`OMITTED_AT_DEFAULT` are left out at their default
        values; :meth:`from_dict` restores them.
        """
        data = dataclasses.asdict(self)
        data["milestones"] = list(self.milestones)
        for name, default in OMITTED_AT_DEFAULT.items():
            if data[name] == default:
                del data[name]
        return data

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> Recipe:
        """The recipe described by ``data``; unknown keys raise ``ValueError``."""
        known = {f.name for f in dataclasses.fields(cls)}
        unknown = sorted(set(data) - known)
        if unknown:
            raise ValueError(f"unknown recipe fields {unknown}; valid fields: {', '.join(sorted(known))}")
        return cls(**{k: tuple(v) if k == "milestones" else v for k, v in data.items()})


@dataclass
class TrainResult:
    """Outcome of :func:`train`: metrics of the kept (best-validation) state and the per-epoch history."""

    val: dict[str, float]
    test: dict[str, float]
    best_epoch: int
    epochs: int
    seconds: float
    history: list[dict[str, float]] = field(default_factory=list)

    def to_dict(self) -> dict[str, Any]:
        """A JSON-ready dict of every field."""
        return dataclasses.asdict(self)


@torch.no_grad()
def evaluate(
    model: nn.Module,
    data: Dataset | DataLoader,
    device: torch.device | str | None = None,
    *,
    precision: str = "fp32",
    channels_last: str | bool = "auto",
    num_workers: int | None = None,
) -> dict[str, float]:
    """Top-1 accuracy, top-5 accuracy (only when there are ≥ 5 classes) and mean cross-entropy of ``model`` on ``data``.

    Accuracies are fractions in [0, 1]. The model runs in
    :func:`preferred_memory_format` for ``channels_last`` (faster kernels;
    convolution results depend on the weights' format in the last bits, so
    evaluating in one fixed format makes the metrics independent of it) and is
    handed back in the format it came in. The forward pass runs under
    :func:`mixed_precision` for ``precision``; the metrics are computed from
    fp32 logits. The model is run in eval mode on ``device`` (default: where
    its parameters are, and it is not moved) and its train/eval mode is
    restored afterwards. ``num_workers`` is passed to :func:`oba.data.make_loader`.
    """
    device = torch.device(device) if device is not None else model_device(model)
    loader = (
        data
        if isinstance(data, DataLoader)
        else make_loader(data, EVAL_BATCH_SIZE, num_workers=num_workers, device=device)
    )
    memory_format = preferred_memory_format(model, channels_last)
    was_training = model.training
    model.eval()
    count, correct1, correct5, loss_sum, num_classes = 0, 0, 0, 0.0, 0
    try:
        with in_memory_format(model, memory_format):
            for inputs, targets in loader:
                inputs, targets = inputs.to(device, non_blocking=True), targets.to(device, non_blocking=True)
                inputs = as_memory_format(inputs, memory_format)
                with mixed_precision(device, precision):
                    logits = model(inputs)
                logits = logits.float()
                num_classes = logits.shape[1]
                loss_sum += nn.functional.cross_entropy(logits, targets, reduction="sum").item()
                top = logits.topk(min(5, num_classes), dim=1).indices
                hits = top == targets[:, None]
                correct1 += hits[:, 0].sum().item()
                correct5 += hits.any(dim=1).sum().item()
                count += targets.numel()
    finally:
        model.train(was_training)
    if count == 0:
        raise ValueError("cannot evaluate on an empty dataset")
    metrics = {"top1": correct1 / count, "loss": loss_sum / count}
    if num_classes >= 5:
        metrics["top5"] = correct5 / count
    return metrics


def _param_groups(model: nn.Module, weight_decay: float) -> list[dict[str, Any]]:
    no_decay_names = set(model.no_weight_decay()) if hasattr(model, "no_weight_decay") else set()
    decay, no_decay = [], []
    for name, param in model.named_parameters():
        if not param.requires_grad:
            continue
        if param.ndim <= 1 or name in no_decay_names:
            no_decay.append(param)
        else:
            decay.append(param)
    return [{"params": decay, "weight_decay": weight_decay}, {"params": no_decay, "weight_decay": 0.0}]


def _optimizer(model: nn.Module, recipe: Recipe) -> torch.optim.Optimizer:
    groups = _param_groups(model, recipe.weight_decay)
    if recipe.optimizer == "sgd":
        return torch.optim.SGD(groups, lr=recipe.lr, momentum=recipe.momentum, nesterov=recipe.momentum > 0)
    return torch.optim.AdamW(groups, lr=recipe.lr)


def lr_factor(recipe: Recipe, step: int, steps_per_epoch: int) -> float:
    """The multiplier of ``recipe.lr`` for optimiser step ``step`` (0-based)."""
    warmup = recipe.warmup_epochs * steps_per_epoch
    if step < warmup:
        return (step + 1) / warmup
    total = recipe.epochs * steps_per_epoch
    if recipe.schedule == "cosine":
        progress = (step - warmup) / max(1, total - warmup)
        return 0.5 * (1.0 + math.cos(math.pi * progress))
    if recipe.schedule == "step":
        epoch = step / steps_per_epoch
        return recipe.gamma ** sum(epoch >= m * recipe.epochs for m in recipe.milestones)
    return 1.0


def _train_epoch(
    model: nn.Module,
    loader: Iterable[tuple[Tensor, Tensor]],
    optimizer: torch.optim.Optimizer,
    scheduler: LambdaLR,
    criterion: nn.Module,
    device: torch.device,
    memory_format: torch.memory_format,
    precision: str,
    scaler: torch.amp.GradScaler,
) -> float:
    model.train()
    loss_sum = torch.zeros((), dtype=torch.float64, device=device)
    count, finite = 0, torch.ones((), dtype=torch.bool, device=device)
    for step, (inputs, targets) in enumerate(loader, start=1):
        inputs, targets = inputs.to(device, non_blocking=True), targets.to(device, non_blocking=True)
        inputs = as_memory_format(inputs, memory_format)
        with mixed_precision(device, precision):
            loss = criterion(model(inputs), targets)
        optimizer.zero_grad(set_to_none=True)
        scaler.scale(loss).backward()
        scaler.step(optimizer)
        scaler.update()
        scheduler.step()
        loss_sum += loss.detach().double() * targets.numel()
        count += targets.numel()
        finite &= torch.isfinite(loss.detach())
        if step % DIVERGENCE_CHECK_STEPS == 0:
            _raise_if_diverged(finite, loss)
    _raise_if_diverged(finite, loss_sum)
    return loss_sum.item() / max(count, 1)


def _raise_if_diverged(finite: Tensor, loss: Tensor) -> None:
    if not bool(finite):
        raise RuntimeError(f"training diverged: loss is {loss.item()}")


def _selection_key(metrics: dict[str, float]) -> tuple[float, float]:
    return metrics["top1"], -metrics["loss"]


def train(
    model: nn.Module,
    data: Splits,
    recipe: Recipe,
    device: torch.device | str | None = None,
    num_workers: int | None = None,
    replica: tuple[int, int] | None = None,
) -> TrainResult:
    """Train ``model`` in place on ``data.train`` with ``recipe``; keep the best-validation state.

    Epoch 0 (the model as given) is a candidate too, so a recipe never returns
    a model worse on validation than its input. The model ends on ``device``
    (default: CUDA when available) in eval mode, holding the kept state; every
    evaluation uses the recipe's precision and memory format. For "fp16" a
    gradient scaler scales the loss (a step whose gradients overflow is
    skipped); otherwise the scaler is disabled and does nothing. On CUDA it
    trains :func:`reproducible`.
    ``num_workers`` is passed to :func:`oba.data.make_loader`.

    ``replica=(rank, world)``: this process is one of ``world`` data-parallel
    replicas (torch.distributed initialised). Each trains on its share of every
    epoch with ``recipe.batch_size / world`` images per step, gradients averaged
    across replicas (``DistributedDataParallel``), so a step sees the recipe's
    batch size in all; every replica evaluates the whole validation and test
    sets and keeps the same state.
    """
    device = torch.device(device) if device is not None else default_device()
    start = time.perf_counter()
    torch.manual_seed(recipe.seed)
    memory_format = preferred_memory_format(model, recipe.channels_last)
    settings: dict[str, Any] = {"precision": recipe.precision, "channels_last": recipe.channels_last}
    model.to(device)
    world = replica[1] if replica is not None else 1
    if recipe.batch_size % world:
        raise ValueError(f"batch_size {recipe.batch_size} must be divisible by the {world} replicas")
    train_loader = make_loader(
        data.train, recipe.batch_size // world, shuffle=True, seed=recipe.seed, num_workers=num_workers,
        device=device, replica=replica,
    )
    val_loader = make_loader(data.val, EVAL_BATCH_SIZE, num_workers=num_workers, device=device)
    with reproducible(device), in_memory_format(model, memory_format):
        stepped = nn.parallel.DistributedDataParallel(model) if replica is not None else model
        optimizer = _optimizer(model, recipe)
        steps_per_epoch = len(train_loader)
        scheduler = LambdaLR(optimizer, lambda step: lr_factor(recipe, step, steps_per_epoch))
        criterion = nn.CrossEntropyLoss(label_smoothing=recipe.label_smoothing)
        scaler = torch.amp.GradScaler(device.type, enabled=recipe.precision == "fp16")

        best_val = evaluate(model, val_loader, device, **settings)
        best_state, best_epoch = copy.deepcopy(model.state_dict()), 0
        history: list[dict[str, float]] = []
        for epoch in range(1, recipe.epochs + 1):
            lr = optimizer.param_groups[0]["lr"]
            if replica is not None:
                train_loader.sampler.set_epoch(epoch)
            train_loss = _train_epoch(
                stepped, train_loader, optimizer, scheduler, criterion, device, memory_format, recipe.precision, scaler
            )
            val = evaluate(model, val_loader, device, **settings)
            history.append(
                {"epoch": epoch, "lr": lr, "train_loss": train_loss, "val_top1": val["top1"], "val_loss": val["loss"]}
            )
            log.info("epoch %d/%d: train loss %.4f, val top1 %.4f", epoch, recipe.epochs, train_loss, val["top1"])
            if _selection_key(val) > _selection_key(best_val):
                best_val, best_state, best_epoch = val, copy.deepcopy(model.state_dict()), epoch
        model.load_state_dict(best_state)
    model.eval()
    test = evaluate(
        model, make_loader(data.test, EVAL_BATCH_SIZE, num_workers=num_workers, device=device), device, **settings
    )
    return TrainResult(
        val=best_val,
        test=test,
        best_epoch=best_epoch,
        epochs=recipe.epochs,
        seconds=time.perf_counter() - start,
        history=history,
    )


def fine_tune(
    model: nn.Module,
    data: Splits,
    recipe: Recipe,
    device: torch.device | str | None = None,
    num_workers: int | None = None,
    replica: tuple[int, int] | None = None,
) -> TrainResult:
    """Fine-tune a (pruned) model: :func:`train` with a usually shorter recipe, same model selection.

    With ``recipe.epochs == 0`` it only evaluates (validation and test) the model as given.
    """
    return train(model, data, recipe, device=device, num_workers=num_workers, replica=replica)
