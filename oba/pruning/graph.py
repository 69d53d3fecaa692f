"""Torch-Pruning's dependency graph, built under a time bound, with its known failures caught.

:func:`build_graph` is what :func:`~oba.pruning.dependency_groups.find_groups` calls instead
of ``tp.DependencyGraph().build_dependency``. It

* refuses at once a model whose Conv/Linear weights are used by functional code
  outside the layer's own forward (torchvision's ``ShiftedWindowAttention`` calls
  ``F.linear(x, self.qkv.weight)``): Torch-Pruning cannot see such a use, and on
  ``swin_t`` its group search never ends;
* makes channel shuffles a barrier (:mod:`oba.pruning.shuffle`) instead of
  dividing by zero or coupling the wrong channels;
* bounds the trace, and the listing of all groups, each by
  :func:`~oba.pruning.graph_deadline.build_seconds`
  (:func:`~oba.pruning.graph_deadline.call_with_deadline`).
"""
from __future__ import annotations

import time
from types import FrameType
from typing import Any, Callable, Sequence, TypeVar

import torch
import torch_pruning as tp
from torch import Tensor, nn
from torch_pruning import ops
from torch_pruning.dependency.node import Node

from oba._errors import UserError
from oba._messages import one_line
from oba.core.model_calls import forward
from oba.pruning.graph_deadline import build_seconds, call_stack, call_with_deadline
from oba.pruning.shuffle import mark_channel_shuffles

T = TypeVar("T")


class UnsupportedModel(UserError):
    """The model uses an operation that the pruning graph cannot follow."""


def _leaf_parameters(output: Any) -> set[int]:
    """Ids of the leaf tensors (parameters) that ``output``'s autograd graph reaches."""
    roots = [t.grad_fn for t in _tensors(output) if t.grad_fn is not None]
    seen, found = set(), set()
    while roots:
        fn = roots.pop()
        if fn in seen:
            continue
        seen.add(fn)
        variable = getattr(fn, "variable", None)
        if variable is not None:
            found.add(id(variable))
        roots.extend(next_fn for next_fn, _ in fn.next_functions if next_fn is not None)
    return found


def _tensors(output: Any) -> list[Tensor]:
    if isinstance(output, Tensor):
        return [output]
    if isinstance(output, dict):
        output = list(output.values())
    if isinstance(output, (list, tuple)):
        return [t for item in output for t in _tensors(item)]
    return []


def functional_use(model: nn.Module, ran: set[nn.Module], output: Any, registered: tuple[type, ...]) -> str | None:
    """The first Conv/Linear whose weight ``output`` depends on although its forward never ran, described; else ``None``.

    Layers inside a module that Torch-Pruning handles as a whole (e.g. ``nn.MultiheadAttention``) are fine.
    """
    used = _leaf_parameters(output)
    handled = {sub for m in model.modules() if isinstance(m, registered) for sub in m.modules() if sub is not m}
    for name, module in model.named_modules():
        if not isinstance(module, (nn.modules.conv._ConvNd, nn.Linear)) or module in ran or module in handled:
            continue
        if id(module.weight) in used:
            parent_name = name.rpartition(".")[0]
            parent = model.get_submodule(parent_name)
            user = f"{parent_name} ({type(parent).__name__})" if parent_name else "the model's functional code"
            return f"{name} ({type(module).__name__}) is applied by {user} through its weight, not its forward"
    return None


def _where(graph: tp.DependencyGraph) -> Callable[[FrameType], str | None]:
    """A ``where(frame)`` for the deadline: the innermost Torch-Pruning function, and the innermost named layer its
    frames held (else the innermost op, such as ``_ReshapeOp``)."""
    def where(frame: FrameType) -> str | None:
        inside = [f for f in call_stack(frame) if "torch_pruning" in f.f_code.co_filename]
        if not inside:
            return None
        what = next((f.f_code.co_name for f in inside if not f.f_code.co_name.startswith("<")), "")
        held = [_label(graph, f.f_locals.get(key)) for f in inside for key in ("node", "module", "m")]
        named = [label for label in held if label and not label.startswith("_")]
        at = named or [label for label in held if label]
        return f"Torch-Pruning {what}, at {at[0]}" if at else f"Torch-Pruning {what}"
    return where


def _label(graph: tp.DependencyGraph, held: Any) -> str | None:
    """The name of a graph node's or layer's module (its op type for Torch-Pruning's own ops); ``None`` for anything else."""
    module = held.module if isinstance(held, Node) else held
    if not isinstance(module, nn.Module):
        return None
    return graph._module2name.get(module) or type(module).__name__


class BoundedGraph(tp.DependencyGraph):
    """A dependency graph of model ``what`` whose build and whose listing of all groups are each bounded by ``seconds``.

    ``barrier`` holds the op modules of its channel shuffles (:mod:`oba.pruning.shuffle`).
    """

    def __init__(self, what: str, seconds: float) -> None:
        super().__init__()
        self.what, self.seconds = what, seconds
        self.barrier: set[Any] = set()

    def _trace(self, model: nn.Module, example_inputs: Any, forward_fn: Any, output_transform: Any) -> dict:
        """Torch-Pruning's trace (run by :func:`oba.core.model_calls.forward`), then :class:`UnsupportedModel` if a layer's weight
        is used outside its forward (:func:`functional_use`)."""
        ran: set[nn.Module] = set()
        outputs: list[Any] = []
        hooks = [m.register_forward_pre_hook(lambda mod, _inp: ran.add(mod)) for m in model.modules()]

        def run(net: nn.Module, inputs: Any) -> Any:
            outputs.append(forward(net, inputs))
            return outputs[-1]
        try:
            module2node = super()._trace(model, example_inputs, run, output_transform)
        finally:
            for hook in hooks:
                hook.remove()
        registered = tuple(ops.type2class(t) for t in self.REGISTERED_PRUNERS) + tuple(self.CUSTOMIZED_PRUNERS)
        problem = functional_use(model, ran, outputs[-1], tuple(c for c in registered if isinstance(c, type)))
        if problem:
            raise UnsupportedModel(f"{self.what}: cannot build pruning groups: {problem}")
        return module2node

    def _build_dependency(self, module2node: dict) -> None:
        """Torch-Pruning's dependencies, then channel shuffles made barriers."""
        super()._build_dependency(module2node)
        self.barrier = mark_channel_shuffles(module2node)

    def get_all_groups(self, ignored_layers: Sequence[nn.Module] = (), root_module_types: tuple = (ops.TORCH_CONV, ops.TORCH_LINEAR)) -> list:
        """All groups Torch-Pruning finds, within the bound, less those that reach a barrier."""
        def listed() -> list:
            return list(super(BoundedGraph, self).get_all_groups(list(ignored_layers), root_module_types))
        every = self._bounded(listed)
        return [g for g in every if not any(item.dep.target.module in self.barrier for item in g.items)]

    def _bounded(self, fn: Callable[[], T]) -> T:
        """``fn()`` within the bound; Torch-Pruning's own failures (an index mapping it cannot do) are refusals."""
        message = f"{self.what}: building its pruning groups did not finish within {self.seconds:g} s"
        try:
            return call_with_deadline(fn, time.monotonic() + self.seconds, message, _where(self))
        except UserError:
            raise
        except Exception as err:
            raise UnsupportedModel(f"{self.what}: cannot build pruning groups: Torch-Pruning failed with "
                                   f"{type(err).__name__}: {one_line(str(err))}") from err


def _hooks(model: nn.Module) -> dict[nn.Module, tuple[set[int], set[int]]]:
    return {m: (set(m._forward_hooks), set(m._forward_pre_hooks)) for m in model.modules()}


def _drop_new_hooks(before: dict[nn.Module, tuple[set[int], set[int]]]) -> None:
    """Remove forward (pre-)hooks added since ``before`` (left behind by a trace that was interrupted)."""
    for module, (post, pre) in before.items():
        for key in set(module._forward_hooks) - post:
            del module._forward_hooks[key]
        for key in set(module._forward_pre_hooks) - pre:
            del module._forward_pre_hooks[key]


def build_graph(model: nn.Module, example_inputs: Any, seconds: float | None = None) -> BoundedGraph:
    """Trace ``model`` into a :class:`BoundedGraph` within ``seconds`` (:func:`~oba.pruning.graph_deadline.build_seconds`).

    Raises :class:`UnsupportedModel` for a use the graph cannot follow and
    :class:`~oba.pruning.graph_deadline.GraphBuildTimeout` past the time bound;
    ``get_all_groups`` on the result is bounded the same way.
    """
    graph = BoundedGraph(type(model).__name__, build_seconds(seconds))
    hooks = _hooks(model)
    try:
        with torch.enable_grad():
            return graph._bounded(lambda: graph.build_dependency(model, example_inputs=example_inputs, verbose=False))
    except BaseException:
        _drop_new_hooks(hooks)
        raise
