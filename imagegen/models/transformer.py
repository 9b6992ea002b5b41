"""Image Transformer (Parmar et al. 2018, "Image Transformer"), decoder-only and encoder-decoder.

Every sub-pixel is a position: a ``C x H x W`` image is a sequence of ``C*H*W`` positions laid out
in generation order (raster for 1D local attention; block by block, raster inside each block, for
2D local attention). Each equation lives in one place:

* input (section 3.1): ``e = sqrt(d) * E_c[x]`` with a separate ``K x d`` table ``E_c`` per colour
  channel (``ChannelEmbedding``); shifted right by one position in generation order, so position
  ``t`` holds the value of position ``t - 1`` (zeros at ``t = 0``); plus learned row, column and
  channel embeddings of position ``t`` (``PositionEmbedding``) and, for class-conditional models,
  a class embedding added to every position (``ImageTransformer.embed``).
* attention (equation 1, sections 3.2-3.3): ``imagegen.models.attention``.
* sublayers (``Block.sublayer``): ``LayerNorm(x + Dropout(f(x)))``, the reference hparam sets'
  "dan" post-processing; ``norm_first=True`` gives ``x + Dropout(f(LayerNorm(x)))`` instead.
* feed-forward (``Block.ffn``): ``W2 relu(W1 x + b1) + b2``.
* output: the shared ``CategoricalHead`` on each position's final features.

Since the input is shifted and attention sees only positions at or before the query, the logits of
position ``t`` depend only on the values at positions ``< t`` (and on ``cond``).

One class, ``ImageTransformer``, serves the four registered variants: ``attention`` ("1d" or "2d")
picks the local pattern, and ``upscale_factor`` makes it the super-resolution model (section 5.3),
which adds an encoder of ``encoder_layers`` full self-attention blocks over the low-resolution
sub-pixels and a cross-attention sublayer in every decoder block. Decoding is key/value cached
(``ImageTransformer.step``): a step runs every block at one position; each self-attention keeps its
keys and values (``KVCache``) and attends to its query block's memory; the encoder output and each
cross-attention's keys and values are computed once per decoding.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

from .attention import LocalPattern, attention, kernel_function, local_1d_pattern, local_2d_pattern
from .base import AutoregressiveModel, check_ints
from .decoding import CachedDecoder, DecodingState
from .head import CategoricalHead
from .layout import to_image, to_sequence


class ChannelEmbedding(nn.Module):
    """A separate ``K``-entry table per colour channel, scaled by ``sqrt(d)``.

    ``forward``: ``(B, C, H, W)`` integers -> ``(B, C, H, W, d)``. ``from_onehot`` computes the same
    from one-hot inputs ``(B, C, H, W, K)`` (the gradient causality tests feed it, see
    ``tests/causality.py``); ``at`` embeds the values ``(B,)`` of one channel -> ``(B, d)``.
    """

    def __init__(self, channels: int, levels: int, d: int):
        super().__init__()
        self.weight = nn.Parameter(torch.randn(channels, levels, d) * d**-0.5)
        self.scale = d**0.5

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        C, K, _ = self.weight.shape
        offset = torch.arange(C, device=x.device).view(1, C, 1, 1) * K
        return F.embedding(x.long() + offset, self.weight.flatten(0, 1)) * self.scale

    def from_onehot(self, onehot: torch.Tensor) -> torch.Tensor:
        return torch.einsum("bchwk,ckd->bchwd", onehot, self.weight) * self.scale

    def at(self, values: torch.Tensor, channel: int) -> torch.Tensor:
        return self.weight[channel][values.long()] * self.scale


class PositionEmbedding(nn.Module):
    """Learned row, column and channel embeddings, summed: ``(C, H, W) -> (H*W*C, d)`` in flat
    sub-pixel order. Images up to the ``(channels, height, width)`` given."""

    def __init__(self, channels: int, height: int, width: int, d: int, std: float = 0.3):
        super().__init__()
        self.row = nn.Parameter(torch.randn(height, d) * std)
        self.col = nn.Parameter(torch.randn(width, d) * std)
        self.chan = nn.Parameter(torch.randn(channels, d) * std)

    def forward(self, C: int, H: int, W: int) -> torch.Tensor:
        if H > len(self.row) or W > len(self.col) or C > len(self.chan):
            raise ValueError(f"shape {C}x{H}x{W} exceeds the model's {len(self.chan)}x{len(self.row)}x"
                             f"{len(self.col)}")
        pos = self.row[None, :H, None] + self.col[None, None, :W] + self.chan[:C, None, None]  # (C, H, W, d)
        return to_sequence(pos[None])[0]


class KVCache:
    """One self-attention layer's keys and values while decoding, in generation order: those of every
    position so far, ``(B, heads, N, d/heads)``, and those its current query block attends to,
    ``(B, heads, M, d/heads)``. When a block begins, its memory positions before it are gathered once
    from the former (``LocalPattern.decoding_blocks``); each step appends its own key and value to the
    latter and attends to a prefix of it, a view, never a copy."""

    def __init__(self, state: DecodingState, pattern: LocalPattern, heads: int, head_dim: int):
        self.state = state
        self.blocks = state.cache(pattern, pattern.decoding_blocks)  # the same for every layer
        memory = max(stop - start + len(earlier) for start, stop, earlier in self.blocks)
        B, N = state.batch_size, pattern.length
        self.keys, self.values = (state.zeros(B, heads, N, head_dim) for _ in "kv")
        self.memory_keys, self.memory_values = (state.zeros(B, heads, memory, head_dim) for _ in "kv")
        self.block, self.stop, self.offset = -1, 0, 0  # the block being decoded, its end, slot - t

    def step(self, k: torch.Tensor, v: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """The key and value ``(B, heads, 1, d/heads)`` of position ``state.t`` -> the keys and values
        it attends to, each ``(B, heads, slot + 1, d/heads)``."""
        t = self.state.t
        if t == self.stop:  # the next block begins
            self.block += 1
            start, self.stop, earlier = self.blocks[self.block]
            self.offset = len(earlier) - start
            self.memory_keys[:, :, : len(earlier)] = self.keys[:, :, earlier]
            self.memory_values[:, :, : len(earlier)] = self.values[:, :, earlier]
        slot = self.offset + t
        self.keys[:, :, t : t + 1], self.values[:, :, t : t + 1] = k, v
        self.memory_keys[:, :, slot : slot + 1], self.memory_values[:, :, slot : slot + 1] = k, v
        return self.memory_keys[:, :, : slot + 1], self.memory_values[:, :, : slot + 1]


class MultiHeadAttention(nn.Module):
    """Multi-head attention ``(B, L, d) -> (B, L, d)`` with queries from ``x`` and keys/values from
    ``x`` (self-attention) or a ``memory`` (cross-attention), by ``kernel``, a kernel function of
    ``attention.py`` resolved once (``kernel_function``; the model sets it)."""

    def __init__(self, d: int, heads: int):
        super().__init__()
        if d % heads:
            raise ValueError(f"hidden={d} must be a multiple of num_heads={heads}")
        self.heads, self.kernel = heads, kernel_function("auto")
        self.q = nn.Linear(d, d)
        self.kv = nn.Linear(d, 2 * d)
        self.out = nn.Linear(d, d)

    def split(self, x: torch.Tensor) -> torch.Tensor:
        """``(B, L, d) -> (B, heads, L, d/heads)``."""
        B, L, d = x.shape
        return x.view(B, L, self.heads, d // self.heads).transpose(1, 2)

    def keys_values(self, memory: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """``(B, M, d)`` -> keys and values, each ``(B, heads, M, d/heads)``."""
        k, v = self.kv(memory).chunk(2, dim=-1)
        return self.split(k), self.split(v)

    def attend(self, x: torch.Tensor, k: torch.Tensor, v: torch.Tensor, pattern: LocalPattern | None = None
               ) -> torch.Tensor:
        """Queries of ``x (B, L, d)`` against given keys/values -> ``(B, L, d)``."""
        out = attention(self.split(self.q(x)), k, v, pattern, self.kernel)  # (B, heads, L, d/heads)
        return self.out(out.transpose(1, 2).flatten(2))

    def forward(self, x: torch.Tensor, memory: torch.Tensor | None = None,
                pattern: LocalPattern | None = None, state: DecodingState | None = None) -> torch.Tensor:
        """Attention of ``x`` to itself (local by ``pattern``) or to ``memory``. With a decoding
        ``state``, ``x`` is position ``state.t`` alone ``(B, 1, d)``: self-attention keeps the keys and
        values (``KVCache``), cross-attention those of ``memory``, computed on the first step."""
        if state is None:
            return self.attend(x, *self.keys_values(x if memory is None else memory), pattern)
        if memory is not None:
            return self.attend(x, *state.cache(self, lambda: self.keys_values(memory)))
        cache = state.cache(self, lambda: KVCache(state, pattern, self.heads, x.shape[-1] // self.heads))
        return self.attend(x, *cache.step(*self.keys_values(x)))


class Block(nn.Module):
    """Self-attention, cross-attention to an encoder output (``cross``), feed-forward; each a
    residual sublayer with layer norm and dropout."""

    def __init__(self, d: int, heads: int, ffn_hidden: int, dropout: float, cross: bool, norm_first: bool):
        super().__init__()
        self.norm_first = norm_first
        self.attn = MultiHeadAttention(d, heads)
        self.cross = MultiHeadAttention(d, heads) if cross else None
        self.ffn = nn.Sequential(nn.Linear(d, ffn_hidden), nn.ReLU(), nn.Linear(ffn_hidden, d))
        self.norms = nn.ModuleList(nn.LayerNorm(d) for _ in range(3 if cross else 2))
        self.drop = nn.Dropout(dropout)

    def sublayer(self, i: int, x: torch.Tensor, f) -> torch.Tensor:
        """Sublayer ``f`` with its residual, dropout and ``i``-th layer norm."""
        if self.norm_first:
            return x + self.drop(f(self.norms[i](x)))
        return self.norms[i](x + self.drop(f(x)))

    def forward(self, x: torch.Tensor, pattern: LocalPattern | None, context: torch.Tensor | None = None,
                state: DecodingState | None = None) -> torch.Tensor:
        """``(B, L, d) -> (B, L, d)``; ``pattern`` None: full self-attention (the encoder).
        ``context (B, M, d)``: the encoder output the cross-attention reads. With a decoding ``state``,
        one position ``(B, 1, d)``."""
        x = self.sublayer(0, x, lambda y: self.attn(y, pattern=pattern, state=state))
        if self.cross is not None:
            x = self.sublayer(1, x, lambda y: self.cross(y, context, state=state))
        return self.sublayer(-1, x, self.ffn)


def _pair(value, name: str) -> tuple[int, int]:
    value = tuple(value) if isinstance(value, list | tuple) else (value, value)
    if len(value) != 2 or not all(isinstance(v, int) and not isinstance(v, bool) for v in value):
        raise ValueError(f"{name} must be two integers (rows, sub-pixel columns), got {value}")
    return value


class ImageTransformer(AutoregressiveModel):
    """The Image Transformer: decoder-only, or encoder-decoder for super-resolution.

    Args (all small by default; the paper sizes are in ``configs/``):
        attention: "1d" (raster order, 1D local attention) or "2d" (block by block, 2D local attention).
        hidden: d, the model width. num_layers: decoder blocks. num_heads: attention heads.
        ffn_hidden: feed-forward width. dropout: on the embeddings and every sublayer's output.
        block_length, memory_length: 1D local attention (query block, memory before it).
        query_shape, memory_flange: 2D local attention, ``(rows, sub-pixel columns)`` each.
        norm_first: pre-norm sublayers instead of the reference's post-norm.
        kernel: attention kernel, "auto" | "reference" | "sdpa" | "xformers" (see attention.py).
        upscale_factor: makes it a super-resolution model: ``cond`` is the low-resolution image,
            integers ``(B, C, H/f, W/f)`` in ``[0, K)`` (as ``imagegen.data.pairs.area_downsample``
            makes it), which an encoder of ``encoder_layers`` blocks of full self-attention over its
            sub-pixels (with their own embeddings) feeds to a cross-attention in every decoder block.
    """

    decoder_class = CachedDecoder

    def __init__(self, *, attention: str = "1d", hidden: int = 32, num_layers: int = 2, num_heads: int = 2,
                 ffn_hidden: int = 64, dropout: float = 0.0, block_length: int | None = None,
                 memory_length: int | None = None, query_shape: tuple[int, int] | None = None,
                 memory_flange: tuple[int, int] | None = None, norm_first: bool = False, kernel: str = "auto",
                 upscale_factor: int | None = None, encoder_layers: int = 0, **image):
        if upscale_factor is not None and image.get("num_classes"):
            raise ValueError("the super-resolution transformer conditions on a low-resolution image, "
                             "not on class labels")
        super().__init__(**image)
        check_ints(1, hidden=hidden, num_layers=num_layers, num_heads=num_heads, ffn_hidden=ffn_hidden,
                   block_length=block_length, upscale_factor=upscale_factor)
        check_ints(0, memory_length=memory_length, encoder_layers=encoder_layers)
        if not isinstance(dropout, int | float) or not 0 <= dropout < 1:
            raise ValueError(f"dropout must be a number >= 0 and < 1, got {dropout!r}")
        if attention == "1d":
            if query_shape is not None or memory_flange is not None:
                raise ValueError("query_shape and memory_flange are 2D hparams; 1D uses block_length, "
                                 "memory_length")
            self.block_length = 8 if block_length is None else int(block_length)
            self.memory_length = 8 if memory_length is None else int(memory_length)
        elif attention == "2d":
            if block_length is not None or memory_length is not None:
                raise ValueError("block_length and memory_length are 1D hparams; 2D uses query_shape, "
                                 "memory_flange")
            self.query_shape = _pair((2, 4) if query_shape is None else query_shape, "query_shape")
            self.memory_flange = _pair((1, 2) if memory_flange is None else memory_flange, "memory_flange")
        else:
            raise ValueError(f"attention must be '1d' or '2d', not {attention!r}")
        H, W = self.image_size
        if upscale_factor is None and encoder_layers:
            raise ValueError("encoder_layers needs upscale_factor: only the super-resolution model encodes")
        if upscale_factor is not None and (H % upscale_factor or W % upscale_factor):
            raise ValueError(f"image size {H}x{W} is not a multiple of upscale_factor={upscale_factor}")
        self.attention, self.upscale_factor = attention, upscale_factor
        self.hidden, self.num_heads = hidden, num_heads
        C, d, cross = self.channels, hidden, upscale_factor is not None
        self.input_embedding = ChannelEmbedding(C, self.levels, d)
        self.position = PositionEmbedding(C, H, W, d)
        self.label = nn.Embedding(self.num_classes, d) if self.num_classes else None
        self.drop = nn.Dropout(dropout)
        self.blocks = nn.ModuleList(Block(d, num_heads, ffn_hidden, dropout, cross, norm_first)
                                    for _ in range(num_layers))
        self.norm_out = nn.LayerNorm(d) if norm_first else nn.Identity()
        self.head = CategoricalHead(d, C, self.levels)
        if cross:
            self.lowres_size = (H // upscale_factor, W // upscale_factor)
            self.enc_embedding = ChannelEmbedding(C, self.levels, d)
            self.enc_position = PositionEmbedding(C, *self.lowres_size, d)
            self.encoder = nn.ModuleList(Block(d, num_heads, ffn_hidden, dropout, False, norm_first)
                                         for _ in range(encoder_layers))
            self.enc_norm_out = nn.LayerNorm(d) if norm_first else nn.Identity()
        self.kernel = kernel  # resolved once, into every attention
        self._layouts: dict = {}

    @property
    def name(self) -> str:
        """``transformer_1d``, ``transformer_2d``, ``transformer_sr_1d`` or ``transformer_sr_2d``."""
        return f"transformer_{'sr_' if self.upscale_factor else ''}{self.attention}"

    @property
    def kernel(self) -> str:
        """The attention kernel's name; setting it resolves the kernel anew for every attention."""
        return self._kernel

    @kernel.setter
    def kernel(self, name: str) -> None:
        self._kernel, resolved = name, kernel_function(name)
        for module in self.modules():
            if isinstance(module, MultiHeadAttention):
                module.kernel = resolved

    # --- layout -------------------------------------------------------------------------------
    def layout(self, C: int, H: int, W: int, device: torch.device | str = "cpu"
               ) -> tuple[torch.Tensor | None, torch.Tensor | None, LocalPattern]:
        """``(order, rank, pattern)`` for ``C x H x W`` images: the generation order and its inverse
        (None for raster order) and the local-attention pattern in generation-order positions.
        Made outside inference mode even when first asked for while sampling: the cached index
        tensors are saved for backward by every later training step."""
        key = (C, H, W, str(device))
        if key not in self._layouts:
            with torch.inference_mode(False):
                self._layouts[key] = self._make_layout(C, H, W, device)
        return self._layouts[key]

    def _make_layout(self, C: int, H: int, W: int, device: torch.device | str):
        if self.attention == "1d":
            return None, None, local_1d_pattern(C * H * W, self.block_length, self.memory_length).to(device)
        order, pattern = local_2d_pattern(H, W * C, self.query_shape, self.memory_flange)
        rank = torch.empty_like(order)
        rank[order] = torch.arange(len(order))
        return order.to(device), rank.to(device), pattern.to(device)

    def generation_order(self, channels: int, height: int, width: int) -> torch.Tensor:
        """Raster (1D); block by block, raster inside each block of the sub-pixel grid (2D)."""
        order, _, _ = self.layout(channels, height, width)
        return torch.arange(channels * height * width) if order is None else order.clone()

    # --- model --------------------------------------------------------------------------------
    def context_bias(self, cond: torch.Tensor | None) -> torch.Tensor | float:
        """The class embedding ``(B, 1, d)`` added to every position (0 when unconditional)."""
        if self.label is None:
            return 0.0
        if cond is None:
            raise ValueError("this model is class-conditional: pass cond, a label per image")
        return self.label(cond)[:, None]

    def encode(self, cond: torch.Tensor | None, shape: tuple[int, int, int]) -> torch.Tensor | None:
        """The encoder output ``(B, C*(H/f)*(W/f), d)`` that the cross-attention reads for ``C x H x W``
        images of a super-resolution model (``cond``: the low-resolution images ``(B, C, H/f, W/f)``);
        None for the others."""
        if self.upscale_factor is None:
            return None
        C, H, W = shape
        f = self.upscale_factor
        want = (C, H // f, W // f)
        if cond is None or cond.dim() != 4 or tuple(cond.shape[1:]) != want:
            got = "none" if cond is None else f"shape {tuple(cond.shape)}"
            raise ValueError(f"the super-resolution transformer upscales {want[1]}x{want[2]} low-resolution "
                             f"images by {f} to {H}x{W}: cond must be (B, {C}, {want[1]}, {want[2]}), "
                             f"got {got}")
        x = self.drop(to_sequence(self.enc_embedding(cond)) + self.enc_position(*want))
        for block in self.encoder:
            x = block(x, None)
        return self.enc_norm_out(x)

    def embed(self, x: torch.Tensor, cond: torch.Tensor | None, order: torch.Tensor | None) -> torch.Tensor:
        """Images ``(B, C, H, W)`` -> decoder input ``(B, N, d)`` in generation order: the shifted
        value embeddings plus position and class embeddings."""
        _, C, H, W = x.shape
        e = to_sequence(self.input_embedding(x))
        pos = self.position(C, H, W)
        if order is not None:
            e, pos = e[:, order], pos[order]
        e = F.pad(e, (0, 0, 1, 0))[:, :-1]  # shift right: position t holds the value of t - 1
        return self.drop(e + pos + self.context_bias(cond))

    def decode(self, x: torch.Tensor, pattern: LocalPattern, context: torch.Tensor | None,
               state: DecodingState | None = None) -> torch.Tensor:
        """The decoder blocks: ``(B, N, d)`` in generation order -> ``(B, N, d)``, before ``norm_out``;
        with a decoding ``state``, position ``state.t`` alone ``(B, 1, d)``."""
        for block in self.blocks:
            x = block(x, pattern, context, state)
        return x

    def forward(self, x: torch.Tensor, cond: torch.Tensor | None = None) -> torch.Tensor:
        """Images ``(B, C, H, W)`` in ``[0, K)`` -> logits ``(B, C, H, W, K)``."""
        _, C, H, W = x.shape
        order, rank, pattern = self.layout(C, H, W, x.device)
        out = self.norm_out(self.decode(self.embed(x, cond, order), pattern, self.encode(cond, (C, H, W))))
        if rank is not None:
            out = out[:, rank]  # back to flat order
        return self.head(to_image(out, C, H, W))

    def step(self, canvas: torch.Tensor, cond: torch.Tensor | None, state: DecodingState) -> torch.Tensor:
        """Key/value-cached decoding: the logits ``(B, K)`` of sub-pixel ``order[t]`` from the canvas
        ``(B, C*H*W)``: the value at ``t - 1`` embedded (the shifted input) and every block run at
        position ``t`` alone. The position and class embeddings in generation order and the encoder
        output are made on the first step."""
        pos, bias, context, pattern = state.cache(self, lambda: self.decoding(cond, state))
        t, C = state.t, state.shape[0]
        if t:
            before = state.order[t - 1]
            prev = self.input_embedding.at(canvas[:, before], before % C)
        else:
            prev = state.zeros(state.batch_size, self.hidden)
        x = (prev + pos[t] + bias)[:, None]
        return self.head.at(self.norm_out(self.decode(x, pattern, context, state)[:, 0]), state.order[t] % C)

    def decoding(self, cond: torch.Tensor | None, state: DecodingState) -> tuple:
        """What every step of a decoding reads: the position embeddings in generation order
        ``(N, d)``, the class embedding ``(B, d)`` (or 0), the encoder output and the local pattern."""
        shape, device = state.shape, state.device
        _, _, pattern = self.layout(*shape, device)
        bias = self.context_bias(cond)
        pos = self.position(*shape)[self.generation_order(*shape).to(device)]
        return pos, bias[:, 0] if isinstance(bias, torch.Tensor) else bias, self.encode(cond, shape), pattern
