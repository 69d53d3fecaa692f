"""Channel shuffles (ShuffleNet's view → transpose → reshape) in a Torch-Pruning graph.

``x.view(b, g, c // g, h, w).transpose(1, 2).reshape(b, c, h, w)`` permutes
channels. Torch-Pruning 1.6.1 cannot map indices through it: it treats the
transpose as element-wise (channel k in = channel k out, which is wrong), and on
torch ≥ 2 the views' backward nodes save ``_saved_self_sym_sizes`` rather than
the ``_saved_self_sizes`` its rank guard looks for, so it infers the 5-D view's
width through the following concat as "concat width − sibling width" = 0 and
divides by it (``ZeroDivisionError``).

Keeping a shuffle a valid permutation after pruning needs more than coupling
channel pairs: the shuffle's reshape and ShuffleNetV2's ``chunk(2)`` recompute
their split points from the pruned width, so every chained block forces the
two halves to keep equal counts at ever finer positions; through the 8 blocks
of ``shufflenet_v2_x0_5``'s stage 3 only all or none of the channels satisfy them. So the
shuffle is a barrier: :func:`mark_channel_shuffles` hides its reshapes from
Torch-Pruning's index mapping (no division by zero), stops group searches at
it and returns its op nodes; groups that reach one are not pruned (the passthrough widths), every
other group (the branches' inner widths, stem and head convolutions) is pruned
exactly as usual.
"""
from __future__ import annotations

from typing import Any

from torch_pruning import ops
from torch_pruning.dependency.node import Node

_PASS_THROUGH = ("CloneBackward", "ContiguousBackward")


def _name(node: Node) -> str:
    fn = node.grad_fn
    return type(fn).__name__ if fn is not None else ""


def _swaps_group_dims(node: Node) -> bool:
    """A transpose/permute of a 5-D tensor exchanging dims 1 and 2 (and nothing else)."""
    fn, name = node.grad_fn, _name(node)
    if name.startswith("TransposeBackward"):
        return {int(fn._saved_dim0) % 5, int(fn._saved_dim1) % 5} == {1, 2}
    if name.startswith("PermuteBackward"):
        return tuple(int(d) % 5 for d in fn._saved_dims) == (0, 2, 1, 3, 4)
    return False


def _through_copies(node: Node, step: str) -> tuple[Node | None, list[Node]]:
    """The first non-copy node from ``node`` going ``step`` ("inputs"/"outputs"), and the copies passed."""
    passed: list[Node] = []
    while True:
        neighbours = getattr(node, step)
        if len(neighbours) != 1:
            return None, passed
        node = neighbours[0]
        if not _name(node).startswith(_PASS_THROUGH):
            return node, passed
        passed.append(node)


def _sizes(node: Node) -> tuple[int, ...] | None:
    fn = node.grad_fn
    sizes = getattr(fn, "_saved_self_sym_sizes", None) or getattr(fn, "_saved_self_sizes", None)
    return tuple(int(s) for s in sizes) if sizes is not None else None


def _shuffle_around(transpose: Node) -> list[Node] | None:
    """The nodes of the channel shuffle around ``transpose``, or ``None`` if it is not one."""
    split, before = _through_copies(transpose, "inputs")
    merge, after = _through_copies(transpose, "outputs")
    if split is None or merge is None or split.type != ops.OPTYPE.RESHAPE or merge.type != ops.OPTYPE.RESHAPE:
        return None
    flat, grouped = _sizes(split), _sizes(merge)
    if flat is None or grouped is None or len(flat) != 4 or len(grouped) != 5:
        return None
    if grouped[1] * grouped[2] != flat[1] or grouped[3:] != flat[2:]:
        return None
    return [split, *before, transpose, *after, merge]


def mark_channel_shuffles(module2node: dict[Any, Node]) -> set[Any]:
    """Make every channel shuffle a dead end; return the shuffles' op modules.

    Its reshapes are hidden from index mapping and its nodes lose their
    dependencies, so a group search enters a shuffle but never leaves it.
    """
    barrier: set[Any] = set()
    for node in list(module2node.values()):
        if not _swaps_group_dims(node):
            continue
        nodes = _shuffle_around(node)
        if nodes is None:
            continue
        for part in nodes:
            if part.type == ops.OPTYPE.RESHAPE:
                part.type = ops.OPTYPE.ELEMENTWISE
            part.dependencies.clear()
            barrier.add(part.module)
    return barrier
