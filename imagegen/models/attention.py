"""Local attention with interchangeable kernels (reference, torch SDPA, xformers).

One function, ``attention(q, k, v, pattern=None, kernel="auto")``, serves every attention of
the Image Transformer (which resolves its kernel once, ``kernel_function``, and passes that):

* ``pattern=None``: full attention, every query sees every key (the super-resolution encoder,
  cross-attention, and the one-query steps of the cached decoder).
* a ``LocalPattern``: the sequence is cut into query blocks; block ``b`` gathers its memory
  (``memory_index[b]``) and each query sees the memory positions at or before it in the sequence
  (Parmar et al. 2018, section 3.2). Sequences are laid out in generation order, so "before" is
  just a smaller index; ``local_1d_pattern`` and ``local_2d_pattern`` build the two layouts.

Attention itself is ``softmax(q k^T / sqrt(d_head) + mask) v`` (equation 1 of the paper), with
the mask ``-inf`` outside the allowed memory. The kernels compute exactly that:

* ``"reference"``: einsum + mask, plainly right; the tests check the others against it.
* ``"sdpa"``: ``torch.nn.functional.scaled_dot_product_attention`` on the gathered blocks (the
  default off CUDA, and on CUDA without xformers); on CPU a single unmasked query (a cached
  decoding step) takes two matrix-vector products instead, which is faster there.
* ``"xformers"``: ``xformers.ops.memory_efficient_attention`` (CUDA only; imported lazily, never
  needed on CPU).
"""

from __future__ import annotations

import functools
import math
from collections.abc import Callable
from dataclasses import dataclass

import torch
import torch.nn.functional as F

KERNELS = ("auto", "reference", "sdpa", "xformers")


@dataclass(eq=False)  # compared and hashed by identity: a decoding keys its caches by pattern
class LocalPattern:
    """Which keys each query block sees, in sequence (generation-order) positions.

    query_index: ``(nb, ql)`` sequence position of each query slot, ``-1`` for padding slots.
    memory_index: ``(nb, ml)`` sequence position of each memory slot, ``-1`` outside the image.
    mask: ``(nb, ql, ml)`` bool, True where the query may attend: a real memory position at or
        before the query (padding queries see every real memory position, so no row is empty).
    inverse: ``(N,)`` flat slot ``b * ql + i`` holding each sequence position.
    """

    query_index: torch.Tensor
    memory_index: torch.Tensor
    mask: torch.Tensor
    inverse: torch.Tensor

    @property
    def length(self) -> int:
        return len(self.inverse)

    def to(self, device: torch.device) -> LocalPattern:
        return LocalPattern(*(t.to(device) for t in (self.query_index, self.memory_index, self.mask,
                                                      self.inverse)))

    def decoding_blocks(self) -> list[tuple[int, int, torch.Tensor]]:
        """The query blocks as a cached decoder meets them: ``(start, stop, earlier)`` per block in
        generation order, where the block holds positions ``start..stop-1`` and ``earlier`` are its
        memory positions before ``start``, ascending. Position ``t`` of the block attends to exactly
        ``earlier`` followed by ``start..t``: every earlier memory position is complete when the
        block begins, and its own positions are the block's prefix."""
        blocks = []
        for query, memory in zip(self.query_index.tolist(), self.memory_index, strict=True):
            query = [q for q in query if q >= 0]
            start, stop = query[0], query[-1] + 1
            if query != list(range(start, stop)) or not set(query) <= set(memory.tolist()):
                raise ValueError("a query block must be consecutive in generation order and in its memory")
            earlier = memory[(memory >= 0) & (memory < start)].sort().values
            blocks.append((start, stop, earlier))
        return sorted(blocks, key=lambda b: b[0])



def make_pattern(query_index: torch.Tensor, memory_index: torch.Tensor, length: int) -> LocalPattern:
    """A ``LocalPattern`` from query and memory positions (``-1`` = none); see its docstring."""
    q = torch.where(query_index >= 0, query_index, length)[:, :, None]
    m = memory_index[:, None, :]
    mask = (m >= 0) & (m <= q)
    flat = query_index.flatten()
    inverse = torch.full((length,), -1, dtype=torch.long)
    inverse[flat[flat >= 0]] = torch.arange(len(flat))[flat >= 0]
    if (inverse < 0).any():
        raise ValueError("the query blocks do not cover every position")
    return LocalPattern(query_index, memory_index, mask, inverse)


def local_1d_pattern(length: int, block_length: int, memory_length: int) -> LocalPattern:
    """1D local attention: blocks of ``block_length`` consecutive positions, each attending
    causally to itself and to the ``memory_length`` positions before it."""
    if block_length < 1 or memory_length < 0:
        raise ValueError(f"block_length must be >= 1 and memory_length >= 0, got {block_length}, "
                         f"{memory_length}")
    starts = torch.arange(math.ceil(length / block_length))[:, None] * block_length
    query = starts + torch.arange(block_length)
    memory = starts - memory_length + torch.arange(memory_length + block_length)
    query[query >= length] = -1
    memory[(memory < 0) | (memory >= length)] = -1
    return make_pattern(query, memory, length)


def local_2d_pattern(rows: int, cols: int, query_shape: tuple[int, int], memory_flange: tuple[int, int]
                     ) -> tuple[torch.Tensor, LocalPattern]:
    """2D local attention on a ``rows x cols`` grid (cols = sub-pixel columns, ``W * C``).

    The grid is tiled by query blocks of ``query_shape`` (partial blocks at the bottom and right
    edges); a block's memory is its own rows plus ``memory_flange[0]`` rows above, over its
    columns widened by ``memory_flange[1]`` on each side. Generation goes block by block in raster
    order and in raster order inside a block, so within the memory the positions to the right in
    the current rows (the next block) and the block's own later positions are masked.

    Returns ``(order, pattern)``: ``order (rows*cols,)`` the grid's flat indices in generation
    order, and the pattern in generation-order positions.
    """
    qr, qc = query_shape
    fr, fc = memory_flange
    if min(qr, qc) < 1 or min(fr, fc) < 0:
        raise ValueError(f"query_shape must be >= 1 and memory_flange >= 0, got {query_shape}, "
                         f"{memory_flange}")
    grid = torch.arange(rows * cols).view(rows, cols)
    padded = F.pad(grid, (fc, qc + fc, fr, qr), value=-1)  # -1 outside the grid
    nbr, nbc = math.ceil(rows / qr), math.ceil(cols / qc)
    queries, memories = [], []
    for bi in range(nbr):
        for bj in range(nbc):
            r0, c0 = bi * qr, bj * qc
            queries.append(padded[fr + r0 : fr + r0 + qr, fc + c0 : fc + c0 + qc].flatten())
            memories.append(padded[r0 : fr + r0 + qr, c0 : c0 + qc + 2 * fc].flatten())
    query, memory = torch.stack(queries), torch.stack(memories)
    order = query.flatten()[query.flatten() >= 0]
    rank = torch.empty_like(order)
    rank[order] = torch.arange(len(order))
    to_rank = lambda idx: torch.where(idx >= 0, rank[idx.clamp_min(0)], -1)  # noqa: E731
    return order, make_pattern(to_rank(query), to_rank(memory), rows * cols)


# --- kernels: (q (..., Lq, D), k, v (..., Lk, D), mask (..., Lq, Lk) bool or None) -> (..., Lq, D)


def _reference(q, k, v, mask):
    scores = torch.einsum("...qd,...kd->...qk", q, k) * q.shape[-1] ** -0.5
    if mask is not None:
        scores = scores.masked_fill(~mask, float("-inf"))
    return torch.einsum("...qk,...kd->...qd", scores.softmax(-1), v)


def _one_query(q, k, v):
    # One query per (batch, head), no mask: the cached decoder's step. Both products are written
    # as matrix-vector ones over the keys' rows (k @ q^T, then p @ v), which BLAS runs on a cache
    # slice without copying it; torch's fused CPU kernel is slower on the same slice
    # (docs/benchmarks.md, "One-query attention").
    scores = (k @ q.transpose(-1, -2)).transpose(-1, -2) * q.shape[-1] ** -0.5  # (..., 1, Lk)
    return scores.softmax(-1) @ v


def _sdpa(q, k, v, mask):
    if mask is None and q.shape[-2] == 1 and q.device.type == "cpu":
        return _one_query(q, k, v)
    # torch's fused CPU kernel takes 4-D inputs and a 4-D mask (else it falls back to a far slower
    # path): fold (B, heads, nb, L, D) into (B*heads, nb, L, D) and give the (nb, Lq, Lk) mask a batch dim.
    lead = q.shape[:-3]
    if q.dim() > 4:
        q, k, v = q.flatten(0, -4), k.flatten(0, -4), v.flatten(0, -4)
    if mask is not None and mask.dim() < 4:
        mask = mask.view((1,) * (4 - mask.dim()) + mask.shape)
    out = F.scaled_dot_product_attention(q, k, v, attn_mask=mask)
    return out.view(*lead, *out.shape[-3:])


def _xformers(q, k, v, mask):
    from xformers.ops import memory_efficient_attention  # lazy: CUDA-only dependency

    # xformers wants (batch, length, heads, D); fold every leading dim but the head dim into batch.
    *lead, H, Lq, D = q.shape
    Lk = k.shape[-2]
    fold = lambda x: x.transpose(-3, -2).reshape(-1, x.shape[-2], H, D)  # noqa: E731
    bias = None
    if mask is not None:
        # An additive bias (batch, H, Lq, Lk) whose storage rows are padded to a multiple of 8
        # (xformers' alignment rule for bias tensors).
        batch = q.numel() // (H * Lq * D)
        full = torch.zeros(batch, H, Lq, Lk + (-Lk % 8), dtype=q.dtype, device=q.device)
        full[..., :Lk] = torch.zeros((), dtype=q.dtype, device=q.device).masked_fill(~mask, float("-inf"))
        bias = full[..., :Lk]
    out = memory_efficient_attention(fold(q), fold(k), fold(v), attn_bias=bias)
    return out.view(*lead, Lq, H, D).transpose(-3, -2)


_KERNEL_FUNCS = {"reference": _reference, "sdpa": _sdpa, "xformers": _xformers}
Kernel = Callable[[torch.Tensor, torch.Tensor, torch.Tensor, torch.Tensor | None], torch.Tensor]


@functools.cache
def has_xformers() -> bool:
    """Whether xformers can be imported (it is never required)."""
    try:
        import xformers.ops  # noqa: F401
    except ImportError:
        return False
    return True


def resolve_kernel(kernel: str, device: torch.device) -> str:
    """``"auto"`` -> xformers on CUDA when installed, else sdpa; other names are checked."""
    if kernel not in KERNELS:
        raise ValueError(f"unknown attention kernel {kernel!r}; choose from {', '.join(KERNELS)}")
    if kernel == "auto":
        return "xformers" if device.type == "cuda" and has_xformers() else "sdpa"
    if kernel == "xformers" and device.type != "cuda":
        raise ValueError("the xformers kernel runs on CUDA only")
    return kernel


def kernel_function(kernel: str) -> Kernel:
    """The kernel named ``kernel``, resolved once, for a model whose device is not known yet: "auto" is
    sdpa, or, with xformers installed, xformers for CUDA inputs and sdpa for others."""
    if kernel == "xformers" or (kernel == "auto" and has_xformers()):
        return functools.partial(_for_device, kernel)
    return _KERNEL_FUNCS[resolve_kernel(kernel, torch.device("cpu"))]


def _for_device(kernel: str, q, k, v, mask):
    return _KERNEL_FUNCS[resolve_kernel(kernel, q.device)](q, k, v, mask)


def _gather(x: torch.Tensor, index: torch.Tensor) -> torch.Tensor:
    """``x (B, heads, N, D)`` and ``index (nb, L)`` of positions (``-1``: a zero row) ->
    ``(B, heads, nb, L, D)``."""
    B, heads, N, D = x.shape
    padded = torch.cat([x, x.new_zeros(B, heads, 1, D)], dim=2)
    flat = torch.where(index >= 0, index, N).flatten()
    return padded[:, :, flat].view(B, heads, *index.shape, D)


def attention(q: torch.Tensor, k: torch.Tensor, v: torch.Tensor, pattern: LocalPattern | None = None,
              kernel: str | Kernel = "auto") -> torch.Tensor:
    """Multi-head attention ``(B, heads, Lq, D), (B, heads, Lk, D) x2 -> (B, heads, Lq, D)`` by
    ``kernel``, a name or a function of ``kernel_function``.

    With ``pattern`` (then ``Lq == Lk == pattern.length``), local attention as the pattern says;
    without, every query attends to every key.
    """
    fn = _KERNEL_FUNCS[resolve_kernel(kernel, q.device)] if isinstance(kernel, str) else kernel
    if pattern is None:
        return fn(q, k, v, None)
    out = fn(_gather(q, pattern.query_index), _gather(k, pattern.memory_index),
             _gather(v, pattern.memory_index), pattern.mask)  # (B, heads, nb, ql, D)
    return out.flatten(2, 3)[:, :, pattern.inverse]
