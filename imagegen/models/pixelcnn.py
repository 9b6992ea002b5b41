"""Masked PixelCNN and gated PixelCNN.

* ``PixelCNN``: van den Oord et al. 2016, "Pixel Recurrent Neural Networks", section 3.4 and
  figure 5 (its h is ``hidden``): a 7x7 mask-A convolution, residual blocks (ReLU, 1x1 2h->h, ReLU,
  3x3 mask-B h->h, ReLU, 1x1 h->2h, added), then ReLU + 1x1 mask-B and ReLU + the 256-way head.
* ``GatedPixelCNN``: van den Oord et al. 2016, "Conditional Image Generation with PixelCNN
  Decoders", figure 2: a vertical stack (rows above, no blind spot) and a horizontal stack
  (current row, to the left), gated units ``tanh(W_f * x + V_f y) * sigmoid(W_g * x + V_g y)``,
  a 1x1 link from the vertical to the horizontal stack, a residual on the horizontal stack,
  and skip connections summed into the output layers.

Both condition on a class label ``cond (B,)`` with a learned bias (``V y``, ``y`` the one-hot label;
the paper's ``h``). Cached decoding (``RasterModel``) keeps every spatial convolution's input map, so a
step costs one kernel window per layer; the gated vertical stack runs once per row.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

from .base import RasterModel, check_groups, check_ints, check_kernels
from .conditioning import LowResolutionStack
from .decoding import DecodingState
from .head import CategoricalHead
from .masked import MaskedConv2d

Bias = torch.Tensor | float  # a gate bias: a tensor broadcastable to (B, 2*hidden, H, W), or 0


def gate(x: torch.Tensor, channels: int) -> torch.Tensor:
    """Gated unit ``tanh(a) * sigmoid(b)``: ``(B, 2F, H, W) -> (B, F, H, W)``.

    Each of the ``channels`` colour groups holds its own ``[a, b]`` halves, so the output keeps
    the group layout of the masked convolutions.
    """
    B, _, H, W = x.shape
    x = x.view(B, channels, 2, -1, H, W)
    return (torch.tanh(x[:, :, 0]) * torch.sigmoid(x[:, :, 1])).flatten(1, 2)


class ResidualBlock(nn.Module):
    """PixelCNN residual block: ``x + 1x1(ReLU(kxk_B(ReLU(1x1(ReLU(x))))))``, 2h -> h -> 2h features."""

    def __init__(self, hidden: int, kernel_size: int, channels: int):
        super().__init__()
        self.reduce = MaskedConv2d(2 * hidden, hidden, 1, "B", channels)
        self.conv = MaskedConv2d(hidden, hidden, kernel_size, "B", channels)
        self.expand = MaskedConv2d(hidden, 2 * hidden, 1, "B", channels)

    def forward(self, x: torch.Tensor, state: DecodingState | None = None) -> torch.Tensor:
        """``(B, 2h, H, W) -> (B, 2h, H, W)``; with a decoding state, one pixel ``(B, 2h, 1, 1)``."""
        u = F.relu(self.reduce(F.relu(x)))
        return x + self.expand(F.relu(self.conv(u, state)))


class PixelCNN(RasterModel):
    """Masked PixelCNN (``pixelcnn``). ``hidden`` is h (blocks carry 2h features); ``out_hidden`` is
    the per-colour width of the output layers."""

    name = "pixelcnn"

    def __init__(self, *, hidden: int = 12, num_layers: int = 3, kernel_size: int = 3,
                 first_kernel_size: int = 7, out_hidden: int = 16, **image):
        super().__init__(**image)
        check_ints(1, hidden=hidden, num_layers=num_layers, out_hidden=out_hidden)
        check_kernels(kernel_size=kernel_size, first_kernel_size=first_kernel_size)
        C = self.channels
        self.conv_in = MaskedConv2d(C, 2 * hidden, first_kernel_size, "A", C)
        self.label = nn.Embedding(self.num_classes, 2 * hidden) if self.num_classes else None
        self.blocks = nn.ModuleList(ResidualBlock(hidden, kernel_size, C) for _ in range(num_layers))
        self.out = MaskedConv2d(2 * hidden, C * out_hidden, 1, "B", C)
        self.head = CategoricalHead(out_hidden, C, self.levels)

    def features(self, x: torch.Tensor, cond: torch.Tensor | None = None,
                 state: DecodingState | None = None) -> torch.Tensor:
        """Scaled images ``(B, C, H, W)`` -> output features ``(B, C*out_hidden, H, W)``; with a
        decoding ``state``, one pixel (``RasterModel``)."""
        out = self.conv_in(x, state)
        if self.label is not None:
            out = out + self.label(cond)[:, :, None, None]
        for block in self.blocks:
            out = block(out, state)
        return F.relu(self.out(F.relu(out)))


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

    def forward(self, vertical: torch.Tensor, horizontal: torch.Tensor, bias_v: Bias, bias_h: Bias,
                state: DecodingState | None = None) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        """Both stacks' inputs ``(B, F, H, W)`` -> (vertical output ``(B, hidden, H, W)``, horizontal
        output, skip ``(B, S, H, W)``); with a decoding ``state``, one step (``step``)."""
        if state is not None:
            return self.step(vertical, horizontal, bias_v, bias_h, state)
        vertical, link = self.vertical(vertical, bias_v)
        horizontal, skip = self.horizontal(horizontal, link, bias_h)
        return vertical, horizontal, skip

    def step(self, vertical: torch.Tensor, horizontal: torch.Tensor, bias_v: Bias, bias_h: Bias,
             state: DecodingState) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        """One decoding step at pixel ``(i, j)``: the vertical stack's row ``i`` (``(B, F, 1, W)`` in, the
        previous layer's; it sees only rows above, so it runs on the row's first step and is kept) and
        the horizontal stack at ``(i, j)`` (``(B, F, 1, 1)`` in)."""
        i, j = state.i, state.j
        row = state.cache(self, list)  # the vertical stack's [output, link] on row i
        if state.new_row:
            row[:] = self.vertical(vertical, bias_at(bias_v, i), state)
        vertical, link = row
        horizontal, skip = self.horizontal(horizontal, link[:, :, :, j : j + 1], bias_at(bias_h, i, j), state)
        return vertical, horizontal, skip

    def vertical(self, vertical: torch.Tensor, bias: Bias, state: DecodingState | None = None
                 ) -> tuple[torch.Tensor, torch.Tensor]:
        """Vertical input ``(B, F, H, W)`` -> (gated output ``(B, hidden, H, W)``, link
        ``(B, 2*hidden, H, W)``); with a decoding ``state``, row ``state.i`` only."""
        pre = self.v_conv(vertical, state) + bias
        return gate(pre, 1), self.v_to_h(pre)

    def horizontal(self, horizontal: torch.Tensor, link: torch.Tensor, bias: Bias,
                   state: DecodingState | None = None) -> tuple[torch.Tensor, torch.Tensor]:
        """Horizontal input ``(B, F, H, W)`` and link -> (output ``(B, hidden, H, W)``, skip); with a
        decoding ``state``, pixel ``(state.i, state.j)`` only."""
        g = gate(self.h_conv(horizontal, state) + link + bias, self.channels)
        if self.h_out is None:
            return horizontal, self.skip(g)
        out = self.h_out(g)
        return (out if self.first else horizontal + out), self.skip(g)


class RowsAboveConv(nn.Module):
    """Unmasked ``(k//2 + 1) x k`` convolution whose output at row ``i`` sees input rows
    ``i - k//2 .. i`` (``strict``: a ``k//2 x k`` kernel over rows ``i - k//2 .. i - 1``; the first
    layer's, which reads the image)."""

    def __init__(self, in_features: int, out_features: int, kernel_size: int, strict: bool):
        super().__init__()
        rows = kernel_size // 2 + (0 if strict else 1)
        self.strict = strict
        self.conv = nn.Conv2d(in_features, out_features, (rows, kernel_size))
        self.pad = (kernel_size // 2, kernel_size // 2, kernel_size // 2, 0)  # left, right, top, bottom

    def forward(self, x: torch.Tensor, state: DecodingState | None = None) -> torch.Tensor:
        """``(B, F_in, H, W) -> (B, F_out, H, W)``. With a decoding ``state``, output row ``state.i``
        ``(B, F_out, 1, W)`` from input row ``i`` ``(B, F_in, 1, W)`` and the rows above, kept in a
        padded map (``strict``: the state's image map, which the model fills; ``x`` is not read)."""
        if state is None:
            return self.conv(F.pad(x, self.pad))[:, :, : x.shape[2]]
        padded = state.cache(self, lambda: state.padded(self.conv.in_channels, self.pad, image=self.strict))
        left, _, top, _ = self.pad
        if not self.strict:
            padded[:, :, state.i + top, left : left + x.shape[3]] = x[:, :, 0]
        return self.conv(padded[:, :, state.i : state.i + self.conv.kernel_size[0]])


class GatedPixelCNN(RasterModel):
    """Gated PixelCNN with no blind spot (``gated_pixelcnn``). ``hidden`` is the gated width p (a
    multiple of C)."""

    name = "gated_pixelcnn"

    def __init__(self, *, hidden: int = 12, num_layers: int = 3, kernel_size: int = 3,
                 first_kernel_size: int = 7, skip_features: int | None = None, out_hidden: int = 16, **image):
        super().__init__(**image)
        check_ints(1, hidden=hidden, num_layers=num_layers, skip_features=skip_features,
                   out_hidden=out_hidden)
        check_kernels(kernel_size=kernel_size, first_kernel_size=first_kernel_size)
        C = self.channels
        check_groups(hidden, C)
        skip_features = skip_features or 2 * hidden
        self.hidden = hidden
        self.layers = nn.ModuleList(
            GatedLayer(C if depth == 0 else hidden, hidden, first_kernel_size if depth == 0 else kernel_size,
                       C, skip_features, first=depth == 0, last=depth == num_layers - 1)
            for depth in range(num_layers))
        # V y: one class bias per layer, for the vertical and the horizontal gates.
        self.label = nn.Embedding(self.num_classes, num_layers * 4 * hidden) if self.num_classes else None
        self.out = MaskedConv2d(skip_features, C * out_hidden, 1, "B", C)
        self.head = CategoricalHead(out_hidden, C, self.levels)

    def gate_biases(self, cond: torch.Tensor | None) -> list[tuple[Bias, Bias]]:
        """Per layer, the (vertical, horizontal) conditional gate biases ``V y``: ``(B, 2*hidden, 1, 1)``
        for labels ``cond (B,)``, or ``(B, 2*hidden, H, W)`` maps in a location-dependent subclass."""
        if self.label is None:
            return [(0.0, 0.0)] * len(self.layers)
        return self.per_layer(self.label(cond)[:, :, None, None])

    def per_layer(self, biases: torch.Tensor) -> list[tuple[Bias, Bias]]:
        """Bias maps ``(B, L*4*hidden, H, W)`` -> per layer, (vertical, horizontal) ``(B, 2*hidden, H,
        W)``."""
        b = biases.unflatten(1, (len(self.layers), 2, 2 * self.hidden))
        return list(zip(b[:, :, 0].unbind(1), b[:, :, 1].unbind(1), strict=True))

    def features(self, x: torch.Tensor, cond: torch.Tensor | None = None,
                 state: DecodingState | None = None) -> torch.Tensor:
        """Scaled images ``(B, C, H, W)`` -> output features ``(B, C*out_hidden, H, W)``: both stacks of
        every layer, the skips summed. With a decoding ``state``, one pixel (``RasterModel``); the
        gate biases are computed once per decoding."""
        biases = state.cache(self, lambda: self.gate_biases(cond)) if state else self.gate_biases(cond)
        vertical = horizontal = x
        skip = 0.0
        for layer, (bias_v, bias_h) in zip(self.layers, biases, strict=True):
            vertical, horizontal, s = layer(vertical, horizontal, bias_v, bias_h, state)
            skip = skip + s
        return F.relu(self.out(F.relu(skip)))


class UpscalingGatedPixelCNN(GatedPixelCNN):
    """Gated PixelCNN conditioned on a low-resolution image (super-resolution, ``gated_pixelcnn_sr``).

    ``cond`` is the image area-downsampled by ``upscale_factor``: integers ``(B, C, H/f, W/f)``.
    The paper's location-dependent conditioning: ``s = m(y)`` (``LowResolutionStack``) and, in
    every gate of both stacks, the bias ``V * s`` (a 1x1 convolution), so each output pixel sees
    the whole low-resolution image and only the earlier high-resolution sub-pixels.
    """

    name = "gated_pixelcnn_sr"

    def __init__(self, *, upscale_factor: int = 4, cond_features: int = 32, cond_layers: int = 3,
                 num_classes: int | None = None, **gated):
        if num_classes:
            raise ValueError("gated_pixelcnn_sr conditions on a low-resolution image, not on class labels: "
                             "leave num_classes unset")
        super().__init__(**gated)
        check_ints(1, upscale_factor=upscale_factor, cond_features=cond_features, cond_layers=cond_layers)
        H, W = self.image_size
        if H % upscale_factor or W % upscale_factor:
            raise ValueError(f"image_size {H}x{W} is not a multiple of upscale_factor={upscale_factor}")
        self.upscale_factor = upscale_factor
        self.lowres_size = (H // upscale_factor, W // upscale_factor)
        C, K = self.channels, self.levels
        self.lowres = LowResolutionStack(C, K, upscale_factor, cond_features, cond_layers)
        self.lowres_bias = nn.Conv2d(cond_features, len(self.layers) * 4 * self.hidden, 1)

    def gate_biases(self, cond: torch.Tensor | None) -> list[tuple[Bias, Bias]]:
        """Per layer, (vertical, horizontal) bias maps ``(B, 2*hidden, H, W)`` of the low-resolution
        ``cond``."""
        if cond is None:
            raise ValueError("this super-resolution model needs cond, the low-resolution image")
        if tuple(cond.shape[-2:]) != self.lowres_size:
            raise ValueError(f"cond is {tuple(cond.shape[-2:])} but this model upscales {self.lowres_size}")
        return self.per_layer(self.lowres_bias(self.lowres(cond)))


def bias_at(bias: Bias, i: int, j: int | None = None) -> Bias:
    """Row ``i`` (and column ``j``) of a gate bias map ``(B, F, H, W)``; constant biases pass through."""
    if not isinstance(bias, torch.Tensor) or bias.shape[2] == 1:
        return bias
    return bias[:, :, i : i + 1] if j is None else bias[:, :, i : i + 1, j : j + 1]
