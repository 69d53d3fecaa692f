"""OBA's Hessian: the loss curvature that flows through the network's bilinear products.

Every parameter layer is a bilinear node ``y = B(x, W)`` (Linear, Conv: input times weight),
and so is every product of two activations (``q kᵀ`` and ``A v`` in attention: the paper's
*parallel connectivity*). Holding each node's output gradient ``c_v = ∂L/∂y_v`` fixed, the
second derivative of ``Σ_v ⟨c_v, B_v(a_v(θ), b_v(θ))⟩`` through the cross terms of its
products is

    H_P θ = ∇_θ Σ_v ⟨c_v, B_v(t_a, b_v(θ)) + B_v(a_v(θ), t_b)⟩ ,       t = ∂(·)/∂θ · θ,

the tangents ``t`` propagated forward along the direction θ (Jacobian-vector products).
For a parameter node ``b = W``, ``t_b = W``: the first term's gradient lands on ``W``
(OBA's *downward* pass, ``c ⊗ t_x``), the second flows through ``x(θ)`` to every
layer upstream (its *upward* pass). H_P is symmetric; it leaves out the loss's own
curvature (the Gauss–Newton part) and that of non-bilinear operations (softmax, GELU,
batch-norm statistics). On a network of ReLU, max-pooling, eval-mode batch norm and
parameter layers only, ``H_P = H − Jᵀ ∇²ℓ J`` exactly.

The direction θ is the parameter-layer weights and biases; nothing else (norm γ/β)
is perturbed. :func:`connectivity_products` returns ``(g, H_P θ)`` on those parameters.

The released OBA code propagates its tangents differently (``linearisation="tangent"``):
past every operation that is not a parameter layer it evaluates the Jacobian-vector
product at the tangent itself, ``t ↦ Df(t)[t]`` (so a ReLU masks by the sign of the
tangent, max-pooling picks the tangent's maxima, train-mode batch norm normalises the
tangent by its own statistics), and ``repeat_after_residual`` counts the downward
term of every parameter layer downstream of the first residual addition twice, as
its graph traversal does (``docs/criteria.md``).
"""
from __future__ import annotations

import contextlib
import math
from dataclasses import dataclass, field
from typing import Any, Callable, Iterator

import torch
import torch.autograd.forward_ad as fwad
from torch import Tensor, nn
from torch.func import functional_call, jvp
from torch.nn import functional as F
from torch.overrides import TorchFunctionMode

from oba.core.model_calls import Batch, LossFn, forward

PARAMETER_LAYERS = (nn.Linear, nn.Conv1d, nn.Conv2d, nn.Conv3d)
"""Modules whose weights (and biases) OBA perturbs and scores."""

_CONVS = {F.conv1d, F.conv2d, F.conv3d}
_PRODUCTS = {torch.matmul, torch.bmm, Tensor.__matmul__, Tensor.matmul, Tensor.bmm}
_NORMALISING = {F.batch_norm, F.layer_norm, F.group_norm, F.instance_norm}
_SMOOTH = {F.gelu, F.silu, F.softmax, F.log_softmax, torch.softmax, torch.log_softmax, torch.sigmoid, torch.tanh,
           Tensor.softmax, Tensor.log_softmax, Tensor.sigmoid, Tensor.tanh, F.hardswish, F.mish, F.elu}


def layer_parameters(model: nn.Module) -> dict[str, nn.Parameter]:
    """Weights and biases of the parameter layers (Linear, Conv), in ``named_parameters`` order."""
    owned = {id(p) for m in model.modules() if isinstance(m, PARAMETER_LAYERS) for p in m.parameters(recurse=False)}
    return {name: p for name, p in model.named_parameters() if p.requires_grad and id(p) in owned}


@dataclass
class Node:
    """One bilinear product met during a forward: ``out = B(a, b)``; ``b`` is a weight for a parameter layer."""

    product: Callable[[Tensor, Tensor], Tensor]
    a: Tensor
    b: Tensor
    out: Tensor
    weight: bool


@dataclass
class _Recorder(TorchFunctionMode):
    """Records every bilinear product of a forward (parameter layers and products of two activations).

    ``weights`` are the tensors standing for parameter-layer weights in this forward. In
    ``tangent`` mode (the released code's linearisation) the forward runs on tangents:
    each parameter layer returns ``B(t, W) + y_real`` and each normalising or smooth
    operation returns its Jacobian-vector product at the tangent.
    """

    weights: set[int]
    depends: Callable[[Tensor], bool]
    nodes: list[Node] = field(default_factory=list)
    outputs: list[Tensor] | None = None

    def __post_init__(self) -> None:
        super().__init__()

    def __torch_function__(self, func: Any, types: Any, args: tuple = (), kwargs: dict | None = None) -> Any:
        kwargs = kwargs or {}
        if func is F.linear or func in _CONVS:
            return self._layer(func, *args, **kwargs)
        if func in _PRODUCTS and len(args) == 2 and all(isinstance(t, Tensor) and self.depends(t) for t in args):
            return self._record(lambda a, b, f=func: f(a, b), args[0], args[1], weight=False)
        if func is F.scaled_dot_product_attention:
            return self._attention(*args, **kwargs)
        if self.outputs is not None and (func in _NORMALISING or func in _SMOOTH):
            return _jvp_at_tangent(func, args, kwargs)
        return func(*args, **kwargs)

    def _layer(self, func: Any, x: Tensor, weight: Tensor, bias: Tensor | None = None, *rest: Any, **options: Any) -> Tensor:
        if id(weight) not in self.weights:
            return func(x, weight, bias, *rest, **options)
        product = (lambda a, b: F.linear(a, b)) if func is F.linear else (lambda a, b: func(a, b, None, *rest, **options))
        if self.outputs is not None:
            real = self.outputs[len(self.nodes)]
            self.nodes.append(Node(product, x, weight, real, weight=True))
            return product(x, weight) + real
        out = func(x, weight, bias, *rest, **options)
        self.nodes.append(Node(product, x, weight, out, weight=True))
        return out

    def _record(self, product: Callable[[Tensor, Tensor], Tensor], a: Tensor, b: Tensor, weight: bool) -> Tensor:
        out = product(a, b)
        self.nodes.append(Node(product, a, b, out, weight))
        return out

    def _attention(self, q: Tensor, k: Tensor, v: Tensor, attn_mask: Tensor | None = None, dropout_p: float = 0.0,
                   is_causal: bool = False, scale: float | None = None, enable_gqa: bool = False) -> Tensor:
        """Scaled dot-product attention written out, so that both of its products are recorded."""
        if dropout_p or is_causal or enable_gqa:
            raise NotImplementedError("OBA's connectivity Hessian supports attention without dropout, causal mask or GQA")
        scale = 1.0 / math.sqrt(q.shape[-1]) if scale is None else scale
        scores = self.__torch_function__(torch.matmul, (), (q, k.transpose(-2, -1))) * scale
        if attn_mask is not None:
            scores = scores.masked_fill(~attn_mask, float("-inf")) if attn_mask.dtype == torch.bool else scores + attn_mask
        weights = self.__torch_function__(torch.softmax, (), (scores, -1))
        return self.__torch_function__(torch.matmul, (), (weights, v))


def _jvp_at_tangent(func: Any, args: tuple, kwargs: dict) -> Tensor:
    """``Df(t)[t]``: the Jacobian-vector product of ``func`` evaluated at the tangent ``t = args[0]`` itself.

    Batch norm in training mode normalises by the tangent's own batch statistics and updates no running ones.
    """
    rest = list(args[1:])
    if func is F.batch_norm and (kwargs.get("training") or (len(rest) > 4 and rest[4])):
        rest[0:2] = [None, None]
    return jvp(lambda u: func(u, *rest, **kwargs), (args[0],), (args[0],))[1]


def _after_residual_add(t: Tensor, memo: dict[Any, bool]) -> bool:
    """Whether ``t`` descends, in its autograd graph, from an addition of two computed tensors (a residual add)."""
    stack = [t.grad_fn] if t.grad_fn is not None else []
    while stack:
        node = stack[-1]
        if node in memo:
            stack.pop()
            continue
        inputs = [n for n, _ in node.next_functions if n is not None]
        pending = [n for n in inputs if n not in memo]
        if pending:
            stack.extend(pending)
            continue
        stack.pop()
        residual = type(node).__name__ == "AddBackward0" and len(inputs) == 2 and all(
            type(n).__name__ != "AccumulateGrad" for n in inputs)
        memo[node] = residual or any(memo[n] for n in inputs)
    return t.grad_fn is not None and memo[t.grad_fn]


@contextlib.contextmanager
def _replaying(state: tuple[Tensor, Tensor | None]) -> Iterator[None]:
    """Inside, random numbers are drawn as after ``state`` (so a replayed forward meets the same dropout masks)."""
    cpu, cuda = state
    with torch.random.fork_rng(devices=[torch.cuda.current_device()] if cuda is not None else []):
        torch.set_rng_state(cpu)
        if cuda is not None:
            torch.cuda.set_rng_state(cuda)
        yield


def _random_state() -> tuple[Tensor, Tensor | None]:
    return torch.get_rng_state(), torch.cuda.get_rng_state() if torch.cuda.is_available() else None


def _tangents(model: nn.Module, inputs: Any, direction: dict[str, Tensor], weight_names: set[str],
              random_state: tuple[Tensor, Tensor | None]) -> list[Node]:
    """The forward's bilinear nodes with their operands' exact tangents along ``direction`` (forward-mode AD)."""
    params = dict(model.named_parameters())
    with torch.no_grad(), fwad.dual_level(), _replaying(random_state):
        duals = {n: fwad.make_dual(p.detach(), direction.get(n, torch.zeros_like(p))) for n, p in params.items()}
        recorder = _Recorder({id(duals[n]) for n in weight_names}, lambda t: fwad.unpack_dual(t).tangent is not None)
        with recorder:
            functional_call(model, duals, _device_inputs(model, inputs))
        tangent = lambda t: _zeros_if_none(fwad.unpack_dual(t).tangent, t)  # noqa: E731
        return [Node(n.product, tangent(n.a), tangent(n.b), n.out, n.weight) for n in recorder.nodes]


def _slipped_tangents(model: nn.Module, inputs: Any, nodes: list[Node],
                      random_state: tuple[Tensor, Tensor | None]) -> list[Tensor]:
    """The released code's input tangents of each parameter layer: the forward replayed on tangents from zero."""
    weights = {id(n.b) for n in nodes if n.weight}
    recorder = _Recorder(weights, lambda t: False, outputs=[n.out.detach() for n in nodes if n.weight])
    zero = _device_inputs(model, inputs)
    zero = tuple(torch.zeros_like(x) for x in zero) if isinstance(zero, tuple) else torch.zeros_like(zero)
    with torch.no_grad(), _replaying(random_state), recorder:
        model(*zero) if isinstance(zero, tuple) else model(zero)
    return [n.a.detach() for n in recorder.nodes]


def connectivity_products(
    model: nn.Module,
    batch: Batch,
    loss_fn: LossFn,
    linearisation: str = "activation",
    repeat_after_residual: bool = False,
    downward: bool = True,
) -> tuple[dict[str, Tensor], dict[str, Tensor]]:
    """``(g, H_P θ)`` on the parameter-layer parameters for one batch (module docstring).

    ``linearisation="activation"`` propagates exact tangents (the paper); ``"tangent"``
    and ``repeat_after_residual=True`` reproduce the released code (parameter layers only:
    a product of two activations is refused there, as the released code handles attention
    through module types of its own). ``downward=False`` keeps the upward terms alone,
    ``∇_θ Σ_l ⟨c_l, B_l(x_l(θ), W_l)⟩`` over parameter layers l: what the released scorer
    is left with once its tangents vanish (train-mode batch norm).
    """
    if linearisation not in ("activation", "tangent"):
        raise ValueError(f"linearisation must be 'activation' or 'tangent', got {linearisation!r}")
    named = layer_parameters(model)
    if not named:
        raise ValueError("the model has no Linear or Conv layer: OBA scores parameter layers only")
    weight_names = {n for n, p in named.items() if n.endswith("weight")}
    inputs, targets = batch
    params = list(named.values())
    recorder = _Recorder({id(named[n]) for n in weight_names}, lambda t: t.requires_grad)
    random_state = _random_state()
    with recorder:
        outputs = forward(model, inputs)
    loss = loss_fn(outputs, targets.to(outputs.device))
    nodes = recorder.nodes
    adjoints = torch.autograd.grad(loss, [n.out for n in nodes] + params, retain_graph=True, allow_unused=True)
    grads = [_zeros_if_none(g, p) for g, p in zip(adjoints[len(nodes):], params)]
    if downward:
        direction = {n: p.detach() for n, p in named.items()}
        pairs = _operand_tangents(model, inputs, nodes, direction, weight_names, linearisation, random_state)
    else:
        kept = [i for i, n in enumerate(nodes) if n.weight]
        nodes, adjoints = [nodes[i] for i in kept], [adjoints[i] for i in kept]
        pairs = [(None, n.b.detach()) for n in nodes]
    memo: dict[Any, bool] = {}
    surrogate = outputs.new_zeros(())
    for node, c, (t_a, t_b) in zip(nodes, adjoints, pairs):
        if c is None:
            continue
        c = c.detach()
        repeat = 2.0 if repeat_after_residual and _after_residual_add(node.a, memo) else 1.0
        upward = node.product(node.a, t_b.detach())
        surrogate = surrogate + (upward * c).sum()
        if t_a is not None:
            surrogate = surrogate + repeat * (node.product(t_a.detach(), node.b) * c).sum()
    products = torch.autograd.grad(surrogate, params, allow_unused=True) if surrogate.requires_grad else [None] * len(params)
    hv = [_zeros_if_none(h, p) for h, p in zip(products, params)]
    names = list(named)
    return dict(zip(names, (g.detach() for g in grads))), dict(zip(names, (h.detach() for h in hv)))


def _operand_tangents(model: nn.Module, inputs: Any, nodes: list[Node], direction: dict[str, Tensor],
                      weight_names: set[str], linearisation: str,
                      random_state: tuple[Tensor, Tensor | None]) -> list[tuple[Tensor, Tensor]]:
    """Each node's operand tangents ``(t_a, t_b)`` along ``direction``: exact, or as the released code makes them."""
    if linearisation == "activation":
        return [(e.a, e.b) for e in _tangents(model, inputs, direction, weight_names, random_state)]
    if any(not n.weight for n in nodes):
        raise NotImplementedError("oba-released reproduces the released scorer on Linear/Conv networks; "
                                  "this model multiplies two activations (attention): use oba")
    return [(t, n.b.detach()) for t, n in zip(_slipped_tangents(model, inputs, nodes, random_state), nodes)]


def _zeros_if_none(t: Tensor | None, like: Tensor) -> Tensor:
    return torch.zeros_like(like) if t is None else t


def _device_inputs(model: nn.Module, inputs: Any) -> Any:
    device = next(model.parameters()).device
    if isinstance(inputs, (tuple, list)):
        return tuple(x.to(device) for x in inputs)
    return inputs.to(device)

