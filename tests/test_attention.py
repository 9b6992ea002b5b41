"""Local attention: the 1D and 2D patterns, and the kernels against the reference."""

import dataclasses

import pytest
import torch

from imagegen.models import attention as att
from imagegen.models.attention import (
    attention,
    has_xformers,
    local_1d_pattern,
    local_2d_pattern,
    resolve_kernel,
)


def brute_force_2d(rows, cols, query_shape, flange):
    """Per generation-order position, the set of positions it may attend to, from the definition."""
    qr, qc = query_shape
    fr, fc = flange
    block = lambda i, j: (i // qr, j // qc)  # noqa: E731
    cells = sorted(((i, j) for i in range(rows) for j in range(cols)),
                   key=lambda p: (*block(*p), p[0], p[1]))
    rank = {p: t for t, p in enumerate(cells)}
    allowed = []
    for (i, j) in cells:
        bi, bj = block(i, j)
        r0, c0 = bi * qr, bj * qc
        allowed.append({rank[(a, b)] for (a, b) in cells if r0 - fr <= a < r0 + qr
                        and c0 - fc <= b < c0 + qc + fc and rank[(a, b)] <= rank[(i, j)]})
    order = torch.tensor([i * cols + j for i, j in cells])
    return order, allowed


def allowed_sets(pattern):
    out = []
    for t in range(pattern.length):
        slot = int(pattern.inverse[t])
        b, i = divmod(slot, pattern.query_index.shape[1])
        out.append(set(pattern.memory_index[b][pattern.mask[b, i]].tolist()))
    return out


def decoded_sets(pattern):
    """Per position, what the cached decoder attends to: its block's earlier memory, then the block
    up to the position."""
    out = [None] * pattern.length
    for start, stop, earlier in pattern.decoding_blocks():
        for t in range(start, stop):
            out[t] = earlier.tolist() + list(range(start, t + 1))
    return out


def test_1d_pattern_blocks_and_memory():
    p = local_1d_pattern(10, block_length=4, memory_length=3)
    for t, seen in enumerate(allowed_sets(p)):
        start = t // 4 * 4
        assert seen == set(range(max(0, start - 3), t + 1)), t
    assert [(start, stop, e.tolist()) for start, stop, e in p.decoding_blocks()] == [
        (0, 4, []), (4, 8, [1, 2, 3]), (8, 10, [5, 6, 7])]
    assert [set(d) for d in decoded_sets(p)] == allowed_sets(p)


@pytest.mark.parametrize("rows, cols, query_shape, flange", [(4, 6, (2, 4), (1, 2)), (5, 7, (2, 3), (2, 1)),
                                                              (3, 8, (3, 8), (0, 0))])
def test_2d_pattern_matches_definition(rows, cols, query_shape, flange):
    order, p = local_2d_pattern(rows, cols, query_shape, flange)
    expected_order, expected = brute_force_2d(rows, cols, query_shape, flange)
    assert torch.equal(order, expected_order)
    assert allowed_sets(p) == expected
    decoded = decoded_sets(p)  # ascending, and exactly what the mask allows
    assert all(d == sorted(set(d)) for d in decoded)
    assert [set(d) for d in decoded] == expected


def _qkv(B=2, h=2, N=22, D=4, seed=0):
    g = torch.Generator().manual_seed(seed)
    return [torch.randn(B, h, N, D, generator=g, dtype=torch.float64).requires_grad_(True) for _ in range(3)]


@pytest.mark.parametrize("kind", ["1d", "2d", "full"])
def test_sdpa_matches_reference_forward_and_gradients(kind):
    pattern = {"1d": local_1d_pattern(22, 5, 3), "2d": local_2d_pattern(2, 11, (1, 4), (1, 2))[1],
               "full": None}[kind]
    results = []
    for kernel in ("reference", "sdpa"):
        q, k, v = _qkv()
        out = attention(q, k, v, pattern, kernel)
        out.backward(torch.linspace(-1, 1, out.numel(), dtype=out.dtype).view_as(out))
        results.append((out, q.grad, k.grad, v.grad))
    for a, b in zip(*results, strict=True):
        torch.testing.assert_close(a, b, atol=1e-10, rtol=1e-8)


def test_one_query_against_a_cache_slice_matches_reference():
    """The cached decoder's step: one query against a strided slice of a key/value cache (the sdpa
    kernel takes its own matrix-vector path for it on CPU)."""
    results = []
    for kernel in ("reference", "sdpa"):
        q, k, v = _qkv(N=22)
        out = attention(q[:, :, 9:10], k[:, :, 3:15], v[:, :, 3:15], None, kernel)
        out.backward(torch.linspace(-1, 1, out.numel(), dtype=out.dtype).view_as(out))
        results.append((out, q.grad, k.grad, v.grad))
    for a, b in zip(*results, strict=True):
        torch.testing.assert_close(a, b, atol=1e-10, rtol=1e-8)


@pytest.mark.parametrize("length, block, memory", [(22, 5, 3), (22, 4, 8), (16, 4, 4), (9, 4, 0)])
def test_1d_windows_match_the_gathered_blocks(length, block, memory):
    """A 1D pattern's blocks and memories are taken as views (``_Windows``, with its own backward):
    the same output and gradients as gathering them by index."""
    pattern = local_1d_pattern(length, block, memory)
    results = []
    for p in (pattern, dataclasses.replace(pattern, window=None)):
        q, k, v = _qkv(N=length)
        out = attention(q, k, v, p, "reference")
        out.backward(torch.linspace(-1, 1, out.numel(), dtype=out.dtype).view_as(out))
        results.append((out, q.grad, k.grad, v.grad))
    for a, b in zip(*results, strict=True):
        torch.testing.assert_close(a, b, atol=1e-12, rtol=1e-10)


def test_auto_picks_by_device_and_dtype(monkeypatch):
    cpu = torch.device("cpu")
    assert resolve_kernel("auto", cpu) == "sdpa"
    monkeypatch.setattr(att, "native_cpu_matmul", lambda dtype: True)
    assert resolve_kernel("auto", cpu, torch.bfloat16) == "reference"
    assert resolve_kernel("auto", cpu, torch.float32) == "sdpa"
    monkeypatch.setattr(att, "native_cpu_matmul", lambda dtype: False)  # e.g. an AVX2-only CPU
    assert resolve_kernel("auto", cpu, torch.bfloat16) == "sdpa"
    monkeypatch.setattr(att, "has_xformers", lambda: True)
    assert resolve_kernel("auto", torch.device("cuda"), torch.bfloat16) == "xformers"
    monkeypatch.setattr(att, "has_xformers", lambda: False)
    assert resolve_kernel("auto", torch.device("cuda"), torch.bfloat16) == "sdpa"


def test_auto_runs_the_kernel_it_picks(monkeypatch):
    """"auto" calls the kernel ``resolve_kernel`` names for each call's inputs (a cached decoding step,
    one unmasked query on CPU, keeps its matrix-vector path)."""
    seen = []
    for name in ("reference", "sdpa"):
        monkeypatch.setitem(att._KERNEL_FUNCS, name, lambda *a, name=name: seen.append(name) or a[0])
    monkeypatch.setattr(att, "native_cpu_matmul", lambda dtype: dtype == torch.bfloat16)
    fn = att.kernel_function("auto")
    for dtype in (torch.float32, torch.bfloat16):
        q = torch.zeros(1, 2, 3, 4, dtype=dtype)
        fn(q, q, q, torch.ones(3, 3, dtype=torch.bool))
    assert seen == ["sdpa", "reference"]


def test_local_attention_is_causal():
    q, k, v = _qkv(N=12)
    pattern = local_1d_pattern(12, 4, 4)
    out = attention(q, k, v, pattern, "sdpa")
    out[:, :, 6].sum().backward()
    assert (k.grad[:, :, 7:] == 0).all() and (v.grad[:, :, 7:] == 0).all()
    assert (v.grad[:, :, :4] != 0).any() and (v.grad[:, :, :0] == 0).all()


def test_kernel_names_checked():
    assert resolve_kernel("auto", torch.device("cpu")) == "sdpa"
    with pytest.raises(ValueError, match="unknown attention kernel"):
        resolve_kernel("flash9", torch.device("cpu"))
    with pytest.raises(ValueError, match="CUDA only"):
        resolve_kernel("xformers", torch.device("cpu"))


@pytest.mark.cuda
@pytest.mark.skipif(not (torch.cuda.is_available() and has_xformers()), reason="needs CUDA and xformers")
def test_xformers_matches_reference_on_cuda():
    pattern = local_1d_pattern(64, 16, 16).to("cuda")
    q, k, v = (x.detach().float().cuda().repeat(1, 1, 3, 8)[:, :, :64] for x in _qkv(N=22))
    torch.testing.assert_close(attention(q, k, v, pattern, "xformers"),
                               attention(q, k, v, pattern, "reference"), atol=2e-3, rtol=1e-3)


def test_xformers_layout_with_a_stand_in(monkeypatch):
    """The xformers kernel's folding and bias, checked on CPU against a stand-in for
    ``xformers.ops.memory_efficient_attention``: inputs (batch, length, heads, D), bias
    (batch, heads, Lq, Lk)."""
    import sys
    import types

    from imagegen.models import attention as att

    def stand_in(q, k, v, attn_bias=None):
        scores = torch.einsum("bqhd,bkhd->bhqk", q, k) * q.shape[-1] ** -0.5
        if attn_bias is not None:
            scores = scores + attn_bias
        return torch.einsum("bhqk,bkhd->bqhd", scores.softmax(-1), v)

    ops = types.ModuleType("xformers.ops")
    ops.memory_efficient_attention = stand_in
    monkeypatch.setitem(sys.modules, "xformers", types.ModuleType("xformers"))
    monkeypatch.setitem(sys.modules, "xformers.ops", ops)
    monkeypatch.setitem(att._KERNEL_FUNCS, "xformers", att._xformers)
    monkeypatch.setattr(att, "resolve_kernel", lambda kernel, device, dtype=None: kernel)
    q, k, v = (t.detach() for t in _qkv(N=22))
    for pattern in (local_1d_pattern(22, 5, 3), local_2d_pattern(2, 11, (1, 4), (1, 2))[1], None):
        torch.testing.assert_close(attention(q, k, v, pattern, "xformers"),
                                   attention(q, k, v, pattern, "reference"))
