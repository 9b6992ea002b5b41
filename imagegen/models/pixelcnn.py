"""Masked PixelCNN and gated PixelCNN, each with a cached decoder.

* ``PixelCNN``: van den Oord et al. 2016, "Pixel Recurrent Neural Networks", section 3.4 and
  figure 5: a 7x7 mask-A convolution, residual blocks (ReLU, 1x1 2h->h, ReLU, 3x3 mask-B h->h,
  ReLU, 1x1 h->2h, added), then ReLU + 1x1 mask-B and ReLU + the 256-way head.
* ``GatedPixelCNN``: van den Oord et al. 2016, "Conditional Image Generation with PixelCNN
  Decoders", figure 2: a vertical stack (rows above, no blind spot) and a horizontal stack
  (current row, to the left), gated units ``tanh(W_f * x + V_f h) * sigmoid(W_g * x + V_g h)``,
  a 1x1 link from the vertical to the horizontal stack, a residual on the horizontal stack,
  and skip connections summed into the output layers.

Both condition on a class label ``cond (B,)`` with a learned bias (``V h`` with ``h`` one-hot).
Decoding caches every layer's activations, so a step costs one kernel window per layer.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

from .base import AutoregressiveModel, check_ints, check_kernels
from .conditioning import LowResolutionStack
from .head import CategoricalHead
from .masked import ConvCache, MaskedConv2d

Bias = torch.Tensor | float  # a gate bias: a tensor broadcastable to (B, 2h, H, W), or 0


def subpixels(features: torch.Tensor, channels: int) -> torch.Tensor:
    """Grouped feature maps ``(B, C*F, H, W)`` -> per-sub-pixel features ``(B, C, H, W, F)``."""
    B, CF, H, W = features.shape
    return features.view(B, channels, CF // channels, H, W).permute(0, 1, 3, 4, 2)


def gate(x: torch.Tensor, channels: int) -> torch.Tensor:
    """Gated unit ``tanh(a) * sigmoid(b)``: ``(B, 2F, H, W) -> (B, F, H, W)``.

    Each of the ``channels`` colour groups holds its own ``[a, b]`` halves, so the output keeps
    the group layout of the masked convolutions.
    """
    B, _, H, W = x.shape
    x = x.view(B, channels, 2, -1, H, W)
    return (torch.tanh(x[:, :, 0]) * torch.sigmoid(x[:, :, 1])).flatten(1, 2)


class ResidualBlock(nn.Module):
    """PixelCNN residual block: ``x + 1x1(ReLU(kxk_B(ReLU(1x1(ReLU(x))))))``, 2h -> h -> 2h."""

    def __init__(self, hidden: int, kernel_size: int, channels: int):
        super().__init__()
        self.reduce = MaskedConv2d(2 * hidden, hidden, 1, "B", channels)
        self.conv = MaskedConv2d(hidden, hidden, kernel_size, "B", channels)
        self.expand = MaskedConv2d(hidden, 2 * hidden, 1, "B", channels)

    def forward(self, x: torch.Tensor, cache: ConvCache | None = None) -> torch.Tensor:
        """``(B, 2h, H, W) -> (B, 2h, H, W)``; with a cache, one position ``(B, 2h, 1, 1)``."""
        u = F.relu(self.reduce(F.relu(x)))
        return x + self.expand(F.relu(self.conv(u, cache)))


class PixelCNN(AutoregressiveModel):
    """Masked PixelCNN. ``hidden`` is h (blocks carry 2h features); ``out_hidden`` is the
    per-colour width of the output layers."""

    def __init__(self, channels: int, image_size: int | tuple[int, int], levels: int = 256,
                 num_classes: int | None = None, hidden: int = 12, num_layers: int = 3,
                 kernel_size: int = 3, first_kernel_size: int = 7, out_hidden: int = 16):
        super().__init__(channels, image_size, levels, num_classes)
        check_ints(1, hidden=hidden, num_layers=num_layers, out_hidden=out_hidden)
        check_kernels(kernel_size=kernel_size, first_kernel_size=first_kernel_size)
        self.conv_in = MaskedConv2d(channels, 2 * hidden, first_kernel_size, "A", channels)
        self.label = nn.Embedding(num_classes, 2 * hidden) if num_classes else None
        self.blocks = nn.ModuleList(ResidualBlock(hidden, kernel_size, channels) for _ in range(num_layers))
        self.out = MaskedConv2d(2 * hidden, channels * out_hidden, 1, "B", channels)
        self.head = CategoricalHead(out_hidden, channels, levels)

    def features(self, x: torch.Tensor, cond: torch.Tensor | None = None,
                 caches: list[ConvCache] | None = None) -> torch.Tensor:
        """Scaled image ``(B, C, H, W)`` -> output features ``(B, C*out_hidden, H, W)``.
        With ``caches`` (one per spatial convolution), ``x`` is one position ``(B, C, 1, 1)``."""
        caches = caches or [None] * (1 + len(self.blocks))
        h = self.conv_in(x, caches[0])
        if self.label is not None:
            h = h + self.label(cond)[:, :, None, None]
        for block, cache in zip(self.blocks, caches[1:], strict=True):
            h = block(h, cache)
        return F.relu(self.out(F.relu(h)))

    def forward(self, x: torch.Tensor, cond: torch.Tensor | None = None) -> torch.Tensor:
        """Images ``(B, C, H, W)`` in ``[0, K)`` -> logits ``(B, C, H, W, K)``."""
        return self.head(subpixels(self.features(self.scale(x), cond), self.channels))

    def decoder(self, batch_size, shape=None, cond=None):
        """Cached decoder: each layer's input map is kept; a step computes one position."""
        return PixelCNNDecoder(self, batch_size, shape or (self.channels, *self.image_size), cond)


class GatedLayer(nn.Module):
    """One layer of both stacks (paper figure 2).

    The vertical stack's output at row ``i`` sees only rows above ``i`` of the image (the first
    layer looks strictly above; later ones at rows ``<= i`` of the previous vertical output), so
    it may feed the horizontal stack of row ``i`` directly.

    Deviation from the paper, kept so that the shipped checkpoints' weights keep their meaning: the
    first layer's vertical kernel is ``k//2 x k`` over rows ``i - k//2 .. i - 1`` (3 rows up for
    ``k = 7``), the rows above the centre of a ``k x k`` masked convolution. The paper's vertical
    stack is a ``(k//2 + 1) x k`` convolution whose output is shifted down one row before it feeds
    the horizontal stack, so its first layer reaches row ``i - k//2 - 1`` (4 rows up). Later layers
    add ``k//2`` rows in both, so at every depth this vertical stack sees one row fewer.
    """

    def __init__(self, in_features: int, hidden: int, kernel_size: int, channels: int,
                 skip_features: int, first: bool, last: bool):
        super().__init__()
        self.channels, self.first = channels, first
        self.v_conv = RowsAboveConv(in_features, 2 * hidden, kernel_size, strict=first)
        self.v_to_h = nn.Conv2d(2 * hidden, 2 * hidden, 1)
        self.h_conv = MaskedConv2d(in_features, 2 * hidden, (1, kernel_size // 2 + 1), "A" if first else "B",
                                   channels, center=(0, kernel_size // 2))
        # The last layer's horizontal output would feed nothing: only its skip is used.
        self.h_out = None if last else MaskedConv2d(hidden, hidden, 1, "B", channels)
        self.skip = MaskedConv2d(hidden, skip_features, 1, "B", channels)

    def vertical(self, v: torch.Tensor, bias: torch.Tensor | float, row: int | None = None
                 ) -> tuple[torch.Tensor, torch.Tensor]:
        """Vertical input ``(B, F, H, W)`` -> (gated output ``(B, h, H, W)``, link ``(B, 2h, H, W)``).
        With ``row``, ``v`` is the input padded by ``v_conv.pad`` and only that row is computed."""
        pre = (self.v_conv(v) if row is None else self.v_conv.row(v, row)) + bias
        return gate(pre, 1), self.v_to_h(pre)

    def horizontal(self, h: torch.Tensor, link: torch.Tensor, bias: torch.Tensor | float,
                   cache: ConvCache | None = None) -> tuple[torch.Tensor, torch.Tensor]:
        """Horizontal input ``(B, F, H, W)`` and link -> (output ``(B, h, H, W)``, skip)."""
        g = gate(self.h_conv(h, cache) + link + bias, self.channels)
        if self.h_out is None:
            return h, self.skip(g)
        out = self.h_out(g)
        return (out if self.first else h + out), self.skip(g)


class RowsAboveConv(nn.Module):
    """Unmasked ``(k//2 + 1) x k`` convolution whose output at row ``i`` sees input rows
    ``i - k//2 .. i`` (``strict``: a ``k//2 x k`` kernel over rows ``i - k//2 .. i - 1``)."""

    def __init__(self, in_features: int, out_features: int, kernel_size: int, strict: bool):
        super().__init__()
        rows = kernel_size // 2 + (0 if strict else 1)
        self.conv = nn.Conv2d(in_features, out_features, (rows, kernel_size))
        self.pad = (kernel_size // 2, kernel_size // 2, kernel_size // 2, 0)  # left, right, top, bottom

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """``(B, F_in, H, W) -> (B, F_out, H, W)``."""
        return self.conv(F.pad(x, self.pad))[:, :, : x.shape[2]]

    def row(self, padded: torch.Tensor, i: int) -> torch.Tensor:
        """Output row ``i`` ``(B, F_out, 1, W)`` from the input padded by ``pad``."""
        return self.conv(padded[:, :, i : i + self.conv.kernel_size[0]])


class GatedPixelCNN(AutoregressiveModel):
    """Gated PixelCNN with no blind spot. ``hidden`` is the gated width p (a multiple of C)."""

    def __init__(self, channels: int, image_size: int | tuple[int, int], levels: int = 256,
                 num_classes: int | None = None, hidden: int = 12, num_layers: int = 3,
                 kernel_size: int = 3, first_kernel_size: int = 7, skip_features: int | None = None,
                 out_hidden: int = 16):
        super().__init__(channels, image_size, levels, num_classes)
        check_ints(1, hidden=hidden, num_layers=num_layers, skip_features=skip_features,
                   out_hidden=out_hidden)
        check_kernels(kernel_size=kernel_size, first_kernel_size=first_kernel_size)
        if hidden % channels:
            raise ValueError(f"hidden={hidden} must be a multiple of channels={channels}")
        skip_features = skip_features or 2 * hidden
        self.hidden = hidden
        self.layers = nn.ModuleList(
            GatedLayer(channels if l == 0 else hidden, hidden, first_kernel_size if l == 0 else kernel_size,
                       channels, skip_features, first=l == 0, last=l == num_layers - 1)
            for l in range(num_layers))
        # V h: one class bias per layer, for the vertical and the horizontal gates.
        self.label = nn.Embedding(num_classes, num_layers * 4 * hidden) if num_classes else None
        self.out = MaskedConv2d(skip_features, channels * out_hidden, 1, "B", channels)
        self.head = CategoricalHead(out_hidden, channels, levels)

    def gate_biases(self, cond: torch.Tensor | None) -> list[tuple[Bias, Bias]]:
        """Per layer, the (vertical, horizontal) conditional gate biases ``V h``: ``(B, 2h, 1, 1)``
        for labels ``cond (B,)``, or ``(B, 2h, H, W)`` maps in a location-dependent subclass."""
        if self.label is None:
            return [(0.0, 0.0)] * len(self.layers)
        b = self.label(cond).view(len(cond), len(self.layers), 2, 2 * self.hidden, 1, 1)
        return [(b[:, l, 0], b[:, l, 1]) for l in range(len(self.layers))]

    def output_features(self, skip: torch.Tensor) -> torch.Tensor:
        """Summed skips ``(B, S, H, W)`` -> output features ``(B, C*out_hidden, H, W)``."""
        return F.relu(self.out(F.relu(skip)))

    def forward(self, x: torch.Tensor, cond: torch.Tensor | None = None) -> torch.Tensor:
        """Images ``(B, C, H, W)`` in ``[0, K)`` -> logits ``(B, C, H, W, K)``."""
        v = h = self.scale(x)
        skip = 0.0
        for layer, (bv, bh) in zip(self.layers, self.gate_biases(cond), strict=True):
            v, link = layer.vertical(v, bv)
            h, s = layer.horizontal(h, link, bh)
            skip = skip + s
        return self.head(subpixels(self.output_features(skip), self.channels))

    def decoder(self, batch_size, shape=None, cond=None):
        """Cached decoder: vertical stacks once per row, horizontal stacks one position a step."""
        return GatedPixelCNNDecoder(self, batch_size, shape or (self.channels, *self.image_size), cond)


class UpscalingGatedPixelCNN(GatedPixelCNN):
    """Gated PixelCNN conditioned on a low-resolution image (super-resolution).

    ``cond`` is the image area-downsampled by ``upscale_factor``: integers ``(B, C, H/f, W/f)``.
    The paper's location-dependent conditioning: ``s = m(y)`` (``LowResolutionStack``) and, in
    every gate of both stacks, the bias ``V * s`` (a 1x1 convolution), so each output pixel sees
    the whole low-resolution image and only the earlier high-resolution sub-pixels.
    """

    def __init__(self, channels: int, image_size: int | tuple[int, int], levels: int = 256,
                 num_classes: int | None = None, upscale_factor: int = 4, cond_features: int = 32,
                 cond_layers: int = 3, **gated):
        if num_classes:
            raise ValueError("gated_pixelcnn_sr conditions on a low-resolution image, not on class labels: "
                             "leave num_classes unset")
        super().__init__(channels, image_size, levels, None, **gated)
        check_ints(1, upscale_factor=upscale_factor, cond_features=cond_features, cond_layers=cond_layers)
        H, W = self.image_size
        if H % upscale_factor or W % upscale_factor:
            raise ValueError(f"image_size {H}x{W} is not a multiple of upscale_factor={upscale_factor}")
        self.upscale_factor = upscale_factor
        self.lowres_size = (H // upscale_factor, W // upscale_factor)
        self.lowres = LowResolutionStack(channels, levels, upscale_factor, cond_features, cond_layers)
        self.lowres_bias = nn.Conv2d(cond_features, len(self.layers) * 4 * self.hidden, 1)

    def gate_biases(self, cond: torch.Tensor | None) -> list[tuple[Bias, Bias]]:
        """Per layer, (vertical, horizontal) bias maps ``(B, 2h, H, W)`` of the low-resolution ``cond``."""
        if cond is None:
            raise ValueError("this super-resolution model needs cond, the low-resolution image")
        if tuple(cond.shape[-2:]) != self.lowres_size:
            raise ValueError(f"cond is {tuple(cond.shape[-2:])} but this model upscales {self.lowres_size}")
        b = self.lowres_bias(self.lowres(cond))
        B, _, H, W = b.shape
        b = b.view(B, len(self.layers), 2, 2 * self.hidden, H, W)
        return [(b[:, l, 0], b[:, l, 1]) for l in range(len(self.layers))]


def _at(bias: Bias, i: int, j: int | None = None) -> Bias:
    """Row ``i`` (and column ``j``) of a gate bias map ``(B, F, H, W)``; constant biases pass through."""
    if not isinstance(bias, torch.Tensor) or bias.shape[2] == 1:
        return bias
    return bias[:, :, i : i + 1] if j is None else bias[:, :, i : i + 1, j : j + 1]


class _PixelDecoder:
    """Raster decoding bookkeeping shared by the masked-convolution decoders."""

    def __init__(self, model: AutoregressiveModel, batch_size: int, shape: tuple[int, int, int]):
        self.model = model
        self.C, self.H, self.W = shape
        p = next(model.parameters())
        self.device, self.dtype = p.device, p.dtype
        self.order = model.generation_order(*shape).to(self.device)
        self.step = 0
        self.blank = model.scale(torch.zeros((), device=self.device))
        self.pixel = torch.full((batch_size, self.C), float(self.blank), device=self.device)

    def position(self) -> tuple[int, int, int]:
        """``(i, j, c)`` of the next sub-pixel."""
        pixel, c = divmod(self.step, self.C)
        return pixel // self.W, pixel % self.W, c

    def logits_from(self, features: torch.Tensor, c: int) -> torch.Tensor:
        """Output features ``(B, C*F, 1, 1)`` -> ``(B, K)`` logits of colour ``c``."""
        return self.model.head.at(features.view(features.shape[0], self.C, -1)[:, c], c)

    def push(self, values: torch.Tensor) -> None:
        i, j, c = self.position()
        self.pixel[:, c] = self.model.scale(values)
        if c == self.C - 1:
            self.pixel_done(i, j, self.pixel.to(self.dtype))
            self.pixel = torch.full_like(self.pixel, float(self.blank))
        self.step += 1

    def pixel_done(self, i: int, j: int, pixel: torch.Tensor) -> None:
        raise NotImplementedError


class PixelCNNDecoder(_PixelDecoder):
    """Cached decoding of ``PixelCNN``: a ``ConvCache`` per spatial convolution."""

    def __init__(self, model: PixelCNN, batch_size: int, shape: tuple[int, int, int],
                 cond: torch.Tensor | None = None):
        super().__init__(model, batch_size, shape)
        self.cond = cond
        convs = [model.conv_in] + [b.conv for b in model.blocks]
        self.caches = [ConvCache(conv, batch_size, self.H, self.W, self.device, self.dtype) for conv in convs]

    def next_logits(self) -> torch.Tensor:
        i, j, c = self.position()
        for cache in self.caches:
            cache.i, cache.j = i, j
        x = self.pixel.to(self.dtype)[:, :, None, None]
        return self.logits_from(self.model.features(x, self.cond, self.caches), c)

    def pixel_done(self, i, j, pixel):
        self.caches[0].write(pixel, i, j)


class GatedPixelCNNDecoder(_PixelDecoder):
    """Cached decoding of ``GatedPixelCNN``: at the start of each row the vertical stacks compute
    that whole row (it depends only on rows above); then each step runs the horizontal stacks at
    one position from ``ConvCache``s of their inputs."""

    def __init__(self, model: GatedPixelCNN, batch_size: int, shape: tuple[int, int, int],
                 cond: torch.Tensor | None = None):
        super().__init__(model, batch_size, shape)
        self.biases = model.gate_biases(cond)
        self.v_inputs = []  # padded vertical input of each layer
        for layer in model.layers:
            left, right, top, _ = layer.v_conv.pad
            self.v_inputs.append(torch.zeros(batch_size, layer.v_conv.conv.in_channels, self.H + top,
                                             self.W + left + right, device=self.device, dtype=self.dtype))
        self.links: list[torch.Tensor] = []
        self.caches = [ConvCache(layer.h_conv, batch_size, self.H, self.W, self.device, self.dtype)
                       for layer in model.layers]

    def begin_row(self, i: int) -> None:
        """Compute every layer's vertical output and link for row ``i``."""
        self.links = []
        for l, (layer, (bv, _)) in enumerate(zip(self.model.layers, self.biases, strict=True)):
            v, link = layer.vertical(self.v_inputs[l], _at(bv, i), row=i)
            self.links.append(link)
            if l + 1 < len(self.model.layers):
                left, _, top, _ = self.model.layers[l + 1].v_conv.pad
                self.v_inputs[l + 1][:, :, i + top, left : left + self.W] = v[:, :, 0]

    def next_logits(self) -> torch.Tensor:
        i, j, c = self.position()
        if j == 0 and c == 0:
            self.begin_row(i)
        h = self.pixel.to(self.dtype)[:, :, None, None]
        skip = 0.0
        for layer, cache, link, (_, bh) in zip(self.model.layers, self.caches, self.links, self.biases,
                                               strict=True):
            cache.i, cache.j = i, j
            h, s = layer.horizontal(h, link[:, :, :, j : j + 1], _at(bh, i, j), cache)
            skip = skip + s
        return self.logits_from(self.model.output_features(skip), c)

    def pixel_done(self, i, j, pixel):
        self.caches[0].write(pixel, i, j)
        left, _, top, _ = self.model.layers[0].v_conv.pad
        self.v_inputs[0][:, :, i + top, j + left] = pixel
