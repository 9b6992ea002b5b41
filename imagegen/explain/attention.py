"""Attention maps of the Image Transformer: where one sub-pixel looks, layer by layer, head by head.

Each self-attention layer's input is captured with a forward hook on ``model.blocks[i].attn`` (a
``MultiHeadAttention`` with linear maps ``q``, ``kv`` and ``out``); its weights are recomputed from
that input with equation 1 of Parmar et al. 2018, ``softmax(q k^T / sqrt(d_head) + mask)``, over each
query block's memory. ``layer_output`` applies the weights to the values; the tests check that it
equals what the layer computed with the model's own kernel, so these are the model's weights.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from pathlib import Path

import torch

from ..models import AutoregressiveModel
from ..models.attention import LocalPattern
from .common import Shape, SubPixel, evaluating, flat_index, ranks, to_image


def local_layout(model: AutoregressiveModel, shape: Shape) -> tuple[torch.Tensor, LocalPattern]:
    """The one place that reads a transformer's local-attention layout: ``(order, pattern)``, where
    ``order (N,)`` is the flat sub-pixel index at each sequence position and ``pattern`` the query
    blocks and memories in sequence positions."""
    order, _, pattern = model.layout(*shape)
    return (torch.arange(math.prod(shape)) if order is None else order.cpu()), pattern.to("cpu")


def is_local_transformer(model: AutoregressiveModel) -> bool:
    """Whether ``model`` has the local self-attention layers this module reads."""
    return hasattr(model, "layout") and all(hasattr(b, "attn") for b in getattr(model, "blocks", [None]))


def capture(model: AutoregressiveModel, image: torch.Tensor, cond: torch.Tensor | None = None
            ) -> list[tuple[torch.Tensor, torch.Tensor]]:
    """Run ``model`` on ``image (C, H, W)`` and return, per layer, its self-attention's input and
    output, each ``(1, N, d)`` in sequence (generation) order."""
    seen = []
    hooks = [block.attn.register_forward_hook(lambda m, args, out: seen.append((args[0], out)))
             for block in model.blocks]
    device = next(model.parameters()).device
    try:
        with torch.no_grad(), evaluating(model):
            model(image[None].to(device).long(), cond)
    finally:
        for hook in hooks:
            hook.remove()
    return seen


def _heads(attn, x: torch.Tensor) -> torch.Tensor:
    """``(B, L, d) -> (B, h, L, d/h)``."""
    B, L, d = x.shape
    return x.view(B, L, attn.heads, d // attn.heads).transpose(1, 2)


def _gather(x: torch.Tensor, index: torch.Tensor) -> torch.Tensor:
    """``x (B, h, N, D)`` at positions ``index (nb, L)`` (``-1``: a zero row) -> ``(B, h, nb, L, D)``."""
    padded = torch.cat([x, x.new_zeros(*x.shape[:2], 1, x.shape[3])], dim=2)
    return padded[:, :, torch.where(index >= 0, index, x.shape[2])]


def attention_weights(attn, x: torch.Tensor, pattern: LocalPattern) -> torch.Tensor:
    """Equation 1 for every query block: ``softmax(q k^T / sqrt(d_head) + mask)`` of layer ``attn``
    on its input ``x (B, N, d)``: ``(B, h, nb, ql, ml)``, query slot by memory slot, zero where the
    mask forbids (a padding query slot attends to every real memory position)."""
    q = _gather(_heads(attn, attn.q(x)), pattern.query_index)
    k = _gather(_heads(attn, attn.kv(x).chunk(2, dim=-1)[0]), pattern.memory_index)
    scores = torch.einsum("bhnqd,bhnmd->bhnqm", q, k) / math.sqrt(q.shape[-1])
    return scores.masked_fill(~pattern.mask, float("-inf")).softmax(-1)


def layer_output(attn, weights: torch.Tensor, x: torch.Tensor, pattern: LocalPattern) -> torch.Tensor:
    """What layer ``attn`` computes from ``weights (B, h, nb, ql, ml)`` and its input ``x (B, N, d)``:
    the weighted values, heads joined by ``attn.out``, ``(B, N, d)`` in sequence order."""
    v = _gather(_heads(attn, attn.kv(x).chunk(2, dim=-1)[1]), pattern.memory_index)
    out = torch.einsum("bhnqm,bhnmd->bhnqd", weights, v).flatten(2, 3)[:, :, pattern.inverse]
    return attn.out(out.transpose(1, 2).flatten(2))


@dataclass
class AttentionMap:
    """Where sub-pixel ``pixel`` attends in an image of ``shape``.

    weights: ``(layers, heads, C, H, W)``, each head's weight on every sub-pixel (zero outside the
        query's memory and after the query in generation order; each ``(C, H, W)`` sums to one).
    memory: ``(C, H, W)`` bool, the memory of the query's block (the block and its flange).
    visible: ``(C, H, W)`` bool, the part of the memory the query may attend to (the mask).
    block: ``(C, H, W)`` bool, the query's block.
    """

    pixel: SubPixel
    shape: Shape
    weights: torch.Tensor
    memory: torch.Tensor
    visible: torch.Tensor
    block: torch.Tensor


def attention_map(model: AutoregressiveModel, image: torch.Tensor, pixel: SubPixel,
                  cond: torch.Tensor | None = None) -> AttentionMap:
    """The self-attention weights of sub-pixel ``pixel = (channel, row, col)`` of ``image (C, H, W)``
    in every layer and head of the transformer ``model`` (``cond``: its conditioning, one row)."""
    shape = tuple(image.shape)
    p = flat_index(shape, pixel)
    order, pattern = local_layout(model, shape)
    block, slot = divmod(int(pattern.inverse[int(ranks(model, shape)[p])]), pattern.query_index.shape[1])
    with torch.no_grad():  # each (h, ml): the query's row of every head
        rows = [attention_weights(layer.attn, x, pattern.to(x.device))[0, :, block, slot].float().cpu()
                for layer, (x, _) in zip(model.blocks, capture(model, image, cond), strict=True)]
    memory_slots = pattern.memory_index[block]
    real = memory_slots >= 0
    weights = torch.zeros(len(rows), rows[0].shape[0], math.prod(shape))
    weights[:, :, order[memory_slots[real]]] = torch.stack(rows)[:, :, real]
    visible = torch.where(pattern.mask[block, slot], memory_slots, -1)
    return AttentionMap(pixel, shape, to_image(weights, shape), _region(order, memory_slots, shape),
                        _region(order, visible, shape), _region(order, pattern.query_index[block], shape))


def _region(order: torch.Tensor, positions: torch.Tensor, shape: Shape) -> torch.Tensor:
    """``(C, H, W)`` bool, True at the sequence ``positions`` (``-1``: none) laid out as an image."""
    flat = torch.zeros(math.prod(shape), dtype=torch.bool)
    flat[order[positions[positions >= 0]]] = True
    return to_image(flat, shape)


def plot_attention(amap: AttentionMap, image: torch.Tensor, levels: int, path: str | Path, title: str,
                   layers: list[int], head: str | int) -> Path:
    """The picture: one panel per layer in ``layers`` (rows: one per head if ``head == "all"``; else
    head ``head`` or the heads' ``"mean"``), each the weights (summed over a pixel's channels) drawn
    over ``image (C, H, W)``, the query block and its memory outlined and the query marked."""
    from matplotlib.cm import ScalarMappable
    from matplotlib.colors import Normalize

    from . import plotting

    plt = plotting.pyplot()
    heads = amap.weights.shape[1]
    if head == "all":
        panels = [[(layer, [h], f"layer {layer}, head {h}") for layer in layers] for h in range(heads)]
    else:
        chosen = list(range(heads)) if head == "mean" else [int(head)]
        what = "mean of heads" if head == "mean" else f"head {head}"
        panels = [[(layer, chosen, f"layer {layer}, {what}") for layer in layers]]
    per_pixel = amap.weights.sum(2)  # (layers, heads, H, W)
    top = max(float(per_pixel[layer][hs].mean(0).max()) for row in panels for layer, hs, _ in row)
    colours = ScalarMappable(Normalize(0, top), plt.get_cmap("plasma"))
    visible, memory = amap.visible.any(0), amap.memory.any(0)
    nrows, ncols = len(panels), len(panels[0])
    fig, axes = plt.subplots(nrows, ncols, figsize=(3.3 * ncols + 1.4, 3.4 * nrows + 0.7), squeeze=False,
                             layout="constrained")
    c, i, j = amap.pixel
    for r, row in enumerate(panels):
        for k, (layer, hs, name) in enumerate(row):
            ax = axes[r, k]
            plotting.show_image(ax, image, levels, name)
            w = per_pixel[layer][hs].mean(0)
            rgba = colours.to_rgba(w.numpy())
            rgba[..., 3] = torch.where(visible, 0.3 + 0.65 * (w / top).sqrt(), 0).numpy()
            ax.imshow(rgba, interpolation="nearest")
            plotting.hatch(ax, memory & ~visible, "masked: generated later")
            plotting.outline(ax, memory, "deepskyblue", "memory")
            plotting.outline(ax, amap.block.any(0), "lime", "query block", width=1.5)
            plotting.mark(ax, (i, j), "query")
    fig.colorbar(colours, ax=axes, shrink=0.8, label="attention weight on each pixel")
    plotting.legend(fig, axes[0, 0])
    channel = f", channel {c}" if amap.shape[0] > 1 else ""
    fig.suptitle(f"{title}\nwhere the query at row {i}, column {j}{channel} attends (each panel sums to 1)")
    return plotting.save_figure(fig, path)
