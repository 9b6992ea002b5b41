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

The super-resolution model (``SuperResolutionTransformer``, section 5.3) adds an encoder of full
self-attention over the low-resolution sub-pixels and a cross-attention sublayer in every decoder
block. Decoding is key/value cached (``TransformerDecoder``): a step computes one position per layer
and attends to its block's memory from the cache; the encoder and its cross-attention keys/values
are computed once per image.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

from .attention import LocalPattern, attention, local_1d_pattern, local_2d_pattern, resolve_kernel
from .base import AutoregressiveModel, check_ints
from .head import CategoricalHead


class ChannelEmbedding(nn.Module):
    """A separate ``K``-entry table per colour channel, scaled by ``sqrt(d)``.

    ``forward``: ``(B, C, H, W)`` integers -> ``(B, C, H, W, d)``. ``from_onehot`` computes the same
    from one-hot inputs ``(B, C, H, W, K)`` (the gradient causality tests feed it, see
    ``tests/causality.py``); ``flat`` lays ``forward`` out as a sequence; ``at`` embeds the values
    ``(B,)`` of one channel -> ``(B, d)``.
    """

    def __init__(self, channels: int, levels: int, d: int):
        super().__init__()
        self.weight = nn.Parameter(torch.randn(channels, levels, d) * d**-0.5)
        self.scale = d**0.5

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        C, K, _ = self.weight.shape
        offset = torch.arange(C, device=x.device).view(1, C, 1, 1) * K
        return F.embedding(x.long() + offset, self.weight.flatten(0, 1)) * self.scale

    def flat(self, x: torch.Tensor) -> torch.Tensor:
        """``(B, C, H, W)`` integers -> ``(B, H*W*C, d)`` in flat sub-pixel order ``(i*W + j)*C + c``."""
        B, C, H, W = x.shape
        return self(x).permute(0, 2, 3, 1, 4).reshape(B, C * H * W, -1)

    def from_onehot(self, onehot: torch.Tensor) -> torch.Tensor:
        return torch.einsum("bchwk,ckd->bchwd", onehot, self.weight) * self.scale

    def at(self, values: torch.Tensor, channel: int) -> torch.Tensor:
        return self.weight[channel][values.long()] * self.scale


class PositionEmbedding(nn.Module):
    """Learned row, column and channel embeddings, summed: ``(C, H, W) -> (H*W*C, d)`` in flat
    sub-pixel order ``(i*W + j)*C + c``. Images up to the ``(channels, height, width)`` given."""

    def __init__(self, channels: int, height: int, width: int, d: int, std: float = 0.3):
        super().__init__()
        self.row = nn.Parameter(torch.randn(height, d) * std)
        self.col = nn.Parameter(torch.randn(width, d) * std)
        self.chan = nn.Parameter(torch.randn(channels, d) * std)

    def forward(self, C: int, H: int, W: int) -> torch.Tensor:
        if H > len(self.row) or W > len(self.col) or C > len(self.chan):
            raise ValueError(f"shape {C}x{H}x{W} exceeds the model's {len(self.chan)}x{len(self.row)}x"
                             f"{len(self.col)}")
        pos = self.row[:H, None, None] + self.col[None, :W, None] + self.chan[None, None, :C]
        return pos.reshape(H * W * C, -1)


class MultiHeadAttention(nn.Module):
    """Multi-head attention ``(B, L, d) -> (B, L, d)`` with queries from ``x`` and keys/values from
    ``x`` (self-attention) or a ``memory`` (cross-attention)."""

    def __init__(self, d: int, heads: int):
        super().__init__()
        if d % heads:
            raise ValueError(f"hidden={d} must be a multiple of num_heads={heads}")
        self.heads = heads
        self.q = nn.Linear(d, d)
        self.kv = nn.Linear(d, 2 * d)
        self.out = nn.Linear(d, d)

    def split(self, x: torch.Tensor) -> torch.Tensor:
        """``(B, L, d) -> (B, h, L, d/h)``."""
        B, L, d = x.shape
        return x.view(B, L, self.heads, d // self.heads).transpose(1, 2)

    def keys_values(self, memory: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """``(B, M, d)`` -> keys and values, each ``(B, h, M, d/h)``."""
        k, v = self.kv(memory).chunk(2, dim=-1)
        return self.split(k), self.split(v)

    def attend(self, x: torch.Tensor, k: torch.Tensor, v: torch.Tensor, pattern: LocalPattern | None = None,
               kernel: str = "auto") -> torch.Tensor:
        """Queries of ``x (B, L, d)`` against given keys/values -> ``(B, L, d)``."""
        out = attention(self.split(self.q(x)), k, v, pattern, kernel)  # (B, h, L, d/h)
        return self.out(out.transpose(1, 2).flatten(2))

    def forward(self, x: torch.Tensor, memory: torch.Tensor | None = None,
                pattern: LocalPattern | None = None, kernel: str = "auto") -> torch.Tensor:
        return self.attend(x, *self.keys_values(x if memory is None else memory), pattern, kernel)


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

    def forward(self, x: torch.Tensor, pattern: LocalPattern | None, kernel: str = "auto",
                context: torch.Tensor | None = None) -> torch.Tensor:
        """``(B, L, d) -> (B, L, d)``; ``pattern`` None: full self-attention (the encoder).
        ``context (B, M, d)``: the encoder output the cross-attention reads."""
        x = self.sublayer(0, x, lambda y: self.attn(y, pattern=pattern, kernel=kernel))
        if self.cross is not None:
            x = self.sublayer(1, x, lambda y: self.cross(y, context, kernel=kernel))
        return self.sublayer(-1, x, self.ffn)

    def step(self, x: torch.Tensor, cache: tuple[torch.Tensor, torch.Tensor], t: int,
             memory: tuple[torch.Tensor, torch.Tensor], slot: int,
             context_kv: tuple[torch.Tensor, torch.Tensor] | None, kernel: str = "auto") -> torch.Tensor:
        """One position ``t``: ``x (B, 1, d) -> (B, 1, d)``. Writes this layer's key and value at ``t``
        of ``cache`` and at ``slot`` of its block's ``memory`` (each two ``(B, h, N or M, d/h)``
        tensors), and attends to the memory's first ``slot + 1`` entries."""

        def self_attention(y):
            k, v = self.attn.keys_values(y)
            cache[0][:, :, t], cache[1][:, :, t] = k[:, :, 0], v[:, :, 0]
            memory[0][:, :, slot], memory[1][:, :, slot] = k[:, :, 0], v[:, :, 0]
            return self.attn.attend(y, memory[0][:, :, : slot + 1], memory[1][:, :, : slot + 1],
                                    kernel=kernel)

        x = self.sublayer(0, x, self_attention)
        if self.cross is not None:
            x = self.sublayer(1, x, lambda y: self.cross.attend(y, *context_kv, kernel=kernel))
        return self.sublayer(-1, x, self.ffn)


def _pair(value, name: str) -> tuple[int, int]:
    value = tuple(value) if isinstance(value, list | tuple) else (value, value)
    if len(value) != 2 or not all(isinstance(v, int) and not isinstance(v, bool) for v in value):
        raise ValueError(f"{name} must be two integers (rows, sub-pixel columns), got {value}")
    return value


class ImageTransformer(AutoregressiveModel):
    """Decoder-only Image Transformer; ``attention_type`` ("1d" or "2d") is fixed by the subclass.

    Args (all small by default; the paper sizes are in ``configs/``):
        hidden: d, the model width. num_layers: decoder blocks. num_heads: attention heads.
        ffn_hidden: feed-forward width. dropout: on the embeddings and every sublayer's output.
        block_length, memory_length: 1D local attention (query block, memory before it).
        query_shape, memory_flange: 2D local attention, ``(rows, sub-pixel columns)`` each.
        norm_first: pre-norm sublayers instead of the reference's post-norm.
        kernel: attention kernel, "auto" | "reference" | "sdpa" | "xformers" (see attention.py).
    """

    attention_type = "1d"
    has_encoder = False

    def __init__(self, channels: int, image_size: int | tuple[int, int], levels: int = 256,
                 num_classes: int | None = None, hidden: int = 32, num_layers: int = 2, num_heads: int = 2,
                 ffn_hidden: int = 64, dropout: float = 0.0, block_length: int | None = None,
                 memory_length: int | None = None, query_shape: tuple[int, int] | None = None,
                 memory_flange: tuple[int, int] | None = None, norm_first: bool = False,
                 kernel: str = "auto"):
        super().__init__(channels, image_size, levels, num_classes)
        check_ints(1, hidden=hidden, num_layers=num_layers, num_heads=num_heads, ffn_hidden=ffn_hidden,
                   block_length=block_length)
        check_ints(0, memory_length=memory_length)
        if not isinstance(dropout, int | float) or not 0 <= dropout < 1:
            raise ValueError(f"dropout must be a number >= 0 and < 1, got {dropout!r}")
        if self.attention_type == "1d":
            if query_shape is not None or memory_flange is not None:
                raise ValueError("query_shape and memory_flange are 2D hparams; 1D uses block_length, "
                                 "memory_length")
            self.block_length = 8 if block_length is None else int(block_length)
            self.memory_length = 8 if memory_length is None else int(memory_length)
        else:
            if block_length is not None or memory_length is not None:
                raise ValueError("block_length and memory_length are 1D hparams; 2D uses query_shape, "
                                 "memory_flange")
            self.query_shape = _pair((2, 4) if query_shape is None else query_shape, "query_shape")
            self.memory_flange = _pair((1, 2) if memory_flange is None else memory_flange, "memory_flange")
        resolve_kernel(kernel, torch.device("cpu") if kernel != "xformers" else torch.device("cuda"))
        self.hidden, self.num_heads, self.kernel = hidden, num_heads, kernel
        H, W = self.image_size
        self.input_embedding = ChannelEmbedding(channels, levels, hidden)
        self.position = PositionEmbedding(channels, H, W, hidden)
        self.label = nn.Embedding(num_classes, hidden) if num_classes else None
        self.drop = nn.Dropout(dropout)
        cross = self.has_encoder
        self.blocks = nn.ModuleList(Block(hidden, num_heads, ffn_hidden, dropout, cross, norm_first)
                                    for _ in range(num_layers))
        self.norm_out = nn.LayerNorm(hidden) if norm_first else nn.Identity()
        self.head = CategoricalHead(hidden, channels, levels)
        self._layouts: dict = {}

    # --- layout -------------------------------------------------------------------------------
    def layout(self, C: int, H: int, W: int, device: torch.device | str = "cpu"
               ) -> tuple[torch.Tensor | None, torch.Tensor | None, LocalPattern]:
        """``(order, rank, pattern)`` for ``C x H x W`` images: the generation order and its inverse
        (None for raster order) and the local-attention pattern in generation-order positions."""
        key = (C, H, W, str(device))
        if key not in self._layouts:
            if self.attention_type == "1d":
                order = rank = None
                pattern = local_1d_pattern(C * H * W, self.block_length, self.memory_length)
            else:
                order, pattern = local_2d_pattern(H, W * C, self.query_shape, self.memory_flange)
                rank = torch.empty_like(order)
                rank[order] = torch.arange(len(order))
                order, rank = order.to(device), rank.to(device)
            self._layouts[key] = (order, rank, pattern.to(device))
        return self._layouts[key]

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
        """The encoder output the cross-attention reads for ``C x H x W`` images (none here)."""
        return None

    def embed(self, x: torch.Tensor, cond: torch.Tensor | None, order: torch.Tensor | None) -> torch.Tensor:
        """Images ``(B, C, H, W)`` -> decoder input ``(B, N, d)`` in generation order: the shifted
        value embeddings plus position and class embeddings."""
        _, C, H, W = x.shape
        e = self.input_embedding.flat(x)
        pos = self.position(C, H, W)
        if order is not None:
            e, pos = e[:, order], pos[order]
        e = F.pad(e, (0, 0, 1, 0))[:, :-1]  # shift right: position t holds the value of t - 1
        return self.drop(e + pos + self.context_bias(cond))

    def forward(self, x: torch.Tensor, cond: torch.Tensor | None = None) -> torch.Tensor:
        """Images ``(B, C, H, W)`` in ``[0, K)`` -> logits ``(B, C, H, W, K)``."""
        B, C, H, W = x.shape
        order, rank, pattern = self.layout(C, H, W, x.device)
        h = self.embed(x, cond, order)
        context = self.encode(cond, (C, H, W))
        for block in self.blocks:
            h = block(h, pattern, self.kernel, context)
        h = self.norm_out(h)
        if rank is not None:
            h = h[:, rank]  # back to flat order
        return self.head(h.view(B, H, W, C, -1).permute(0, 3, 1, 2, 4))

    def decoder(self, batch_size, shape=None, cond=None):
        """Key/value-cached decoder: one position per layer per step."""
        return TransformerDecoder(self, batch_size, shape or (self.channels, *self.image_size), cond)


class Transformer1D(ImageTransformer):
    """``transformer_1d``: 1D local self-attention over the raster-ordered sub-pixels."""

    attention_type = "1d"


class Transformer2D(ImageTransformer):
    """``transformer_2d``: 2D local self-attention over the ``H x (W*C)`` sub-pixel grid."""

    attention_type = "2d"


class SuperResolutionTransformer(ImageTransformer):
    """Encoder-decoder Image Transformer for super-resolution (paper section 5.3).

    ``cond`` is the low-resolution image, integers ``(B, C, H/f, W/f)`` in ``[0, K)`` (as made by
    ``imagegen.data.pairs.area_downsample``). The encoder (``encoder_layers`` blocks of full
    self-attention over the low-resolution sub-pixels, with their own embeddings) feeds the
    cross-attention of every decoder block. Other hparams as ``ImageTransformer``.
    """

    has_encoder = True

    def __init__(self, channels: int, image_size: int | tuple[int, int], levels: int = 256,
                 num_classes: int | None = None, upscale_factor: int = 4, encoder_layers: int = 2,
                 **hparams):
        if num_classes:
            raise ValueError("the super-resolution transformer conditions on a low-resolution image, "
                             "not on class labels")
        super().__init__(channels, image_size, levels, None, **hparams)
        check_ints(1, upscale_factor=upscale_factor)
        check_ints(0, encoder_layers=encoder_layers)
        H, W = self.image_size
        f = upscale_factor
        if H % f or W % f:
            raise ValueError(f"image size {H}x{W} is not a multiple of upscale_factor={f}")
        self.upscale_factor = f
        self.lowres_size = (H // f, W // f)
        d = self.hidden
        self.enc_embedding = ChannelEmbedding(channels, levels, d)
        self.enc_position = PositionEmbedding(channels, *self.lowres_size, d)
        dropout, ffn_hidden = self.drop.p, self.blocks[0].ffn[0].out_features
        norm_first = self.blocks[0].norm_first
        self.encoder = nn.ModuleList(Block(d, self.num_heads, ffn_hidden, dropout, False, norm_first)
                                     for _ in range(encoder_layers))
        self.enc_norm_out = nn.LayerNorm(d) if norm_first else nn.Identity()

    def encode(self, cond: torch.Tensor | None, shape: tuple[int, int, int]) -> torch.Tensor:
        """Low-resolution images ``(B, C, H/f, W/f)`` of ``C x H x W`` images -> encoder output
        ``(B, C*(H/f)*(W/f), d)``."""
        C, H, W = shape
        f = self.upscale_factor
        want = (C, H // f, W // f)
        if cond is None or cond.dim() != 4 or tuple(cond.shape[1:]) != want:
            got = "none" if cond is None else f"shape {tuple(cond.shape)}"
            raise ValueError(f"the super-resolution transformer upscales {want[1]}x{want[2]} low-resolution "
                             f"images by {f} to {H}x{W}: cond must be (B, {C}, {want[1]}, {want[2]}), "
                             f"got {got}")
        _, C, h, w = cond.shape
        x = self.drop(self.enc_embedding.flat(cond) + self.enc_position(C, h, w))
        for block in self.encoder:
            x = block(x, None, self.kernel)
        return self.enc_norm_out(x)


class SuperResolutionTransformer1D(SuperResolutionTransformer):
    """``transformer_sr_1d``: super-resolution with a 1D-local decoder."""

    attention_type = "1d"


class SuperResolutionTransformer2D(SuperResolutionTransformer):
    """``transformer_sr_2d``: super-resolution with a 2D-local decoder."""

    attention_type = "2d"


class TransformerDecoder:
    """Key/value-cached decoding of an ``ImageTransformer``.

    Every layer keeps the keys and values of the positions computed so far, ``(B, h, N, d/h)`` in
    generation order, and those its current query block attends to, ``(B, h, M, d/h)``: when a block
    begins, its memory positions before it are gathered once from the cache, and each step appends
    its own key and value, so a step attends to a prefix of that buffer (a view, never a copy).
    Step ``t`` embeds the value pushed at ``t - 1``, runs each layer at position ``t`` only, and
    returns the head's logits there. The encoder output and each layer's cross-attention keys and
    values are computed once, here.
    """

    def __init__(self, model: ImageTransformer, batch_size: int, shape: tuple[int, int, int],
                 cond: torch.Tensor | None = None):
        C, H, W = shape
        p = next(model.parameters())
        self.model, self.C, self.kernel = model, C, model.kernel
        _, _, pattern = model.layout(C, H, W, p.device)
        self.blocks = pattern.decoding_blocks()
        self.order = model.generation_order(C, H, W).to(p.device)
        self._channel = (self.order % C).tolist()
        self.pos = model.position(C, H, W)[self.order]
        bias = model.context_bias(cond)
        self.bias = bias[:, 0] if isinstance(bias, torch.Tensor) else bias
        context = model.encode(cond, shape)
        self.context_kv = [None if b.cross is None else b.cross.keys_values(context) for b in model.blocks]
        N, heads = C * H * W, model.num_heads
        M = max(stop - start + len(earlier) for start, stop, earlier in self.blocks)
        size = (batch_size, heads, N, model.hidden // heads)
        self.caches = [(p.new_zeros(size), p.new_zeros(size)) for _ in model.blocks]
        block_size = (batch_size, heads, M, model.hidden // heads)
        self.memories = [(p.new_zeros(block_size), p.new_zeros(block_size)) for _ in model.blocks]
        self.prev = p.new_zeros(batch_size, model.hidden)  # the shifted input of the next step
        self.step = 0
        self.block = -1  # index into self.blocks of the block being decoded

    def _begin_block(self) -> None:
        """Move to the next query block: gather its earlier memory into every layer's buffer."""
        self.block += 1
        _, _, earlier = self.blocks[self.block]
        for (k, v), (mk, mv) in zip(self.caches, self.memories, strict=True):
            mk[:, :, : len(earlier)], mv[:, :, : len(earlier)] = k[:, :, earlier], v[:, :, earlier]

    def next_logits(self) -> torch.Tensor:
        t = self.step
        if self.block < 0 or t == self.blocks[self.block][1]:
            self._begin_block()
        start, _, earlier = self.blocks[self.block]
        slot = len(earlier) + t - start
        x = (self.prev + self.pos[t] + self.bias)[:, None]
        for block, cache, memory, context_kv in zip(self.model.blocks, self.caches, self.memories,
                                                    self.context_kv, strict=True):
            x = block.step(x, cache, t, memory, slot, context_kv, self.kernel)
        return self.model.head.at(self.model.norm_out(x[:, 0]), self._channel[t])

    def push(self, values: torch.Tensor) -> None:
        self.prev = self.model.input_embedding.at(values, self._channel[self.step])
        self.step += 1
